"""Local API authorization: root by SO_PEERCRED, everyone else only with the local token."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netsody_agent import localapi
from netsody_agent.errors import LocalApiError
from netsody_agent.localapi import (
    LocalApiClient,
    LocalApiServer,
    ensure_local_token,
    is_authorized,
)

TOKEN = "s3cr3t-token"

AUTH_CASES = [
    pytest.param(0, None, TOKEN, True, id="root-without-token"),
    pytest.param(0, "wrong", TOKEN, True, id="root-with-wrong-token"),
    pytest.param(1000, TOKEN, TOKEN, True, id="user-with-token"),
    pytest.param(1000, None, TOKEN, False, id="user-without-token"),
    pytest.param(1000, "", TOKEN, False, id="user-with-empty-token"),
    pytest.param(1000, "s3cr3t-tokeN", TOKEN, False, id="user-with-wrong-token"),
    pytest.param(1000, TOKEN[:-1], TOKEN, False, id="user-with-token-prefix"),
    pytest.param(None, TOKEN, TOKEN, True, id="unknown-uid-with-token"),
    pytest.param(None, None, TOKEN, False, id="unknown-uid-without-token"),
    pytest.param(1000, "", "", False, id="empty-expected-token-never-matches"),
]


@pytest.mark.parametrize(("uid", "presented", "expected", "allowed"), AUTH_CASES)
def test_is_authorized(uid, presented, expected, allowed) -> None:
    assert is_authorized(uid, presented, expected) is allowed


def test_local_token_created_private(tmp_path: Path) -> None:
    token = ensure_local_token(tmp_path)
    path = tmp_path / "local-token"
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_local_token(tmp_path) == token


async def _echo(params: dict) -> dict:
    return {"echo": params.get("value")}


async def _fails(params: dict) -> dict:
    raise LocalApiError("network URL is invalid", "invalid_url")


async def test_server_round_trip(tmp_path: Path) -> None:
    server = LocalApiServer(tmp_path, {"echo": _echo, "fails": _fails})
    await server.start()
    try:
        client = LocalApiClient(tmp_path, timeout=5)
        result = await asyncio.to_thread(client.call, "echo", {"value": 42})
        assert result == {"echo": 42}
        with pytest.raises(LocalApiError) as error:
            await asyncio.to_thread(client.call, "fails")
        assert error.value.code == "invalid_url"
        assert error.value.detail == "network URL is invalid"
        with pytest.raises(LocalApiError) as unknown:
            await asyncio.to_thread(client.call, "nope")
        assert unknown.value.code == "unknown_method"
    finally:
        await server.stop()
    assert not (tmp_path / "netsody.sock").exists()


CALL_AS_NOBODY = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
sock.connect(sys.argv[1])
token = sys.argv[2] or None
request = {"method": "echo", "params": {"value": 1}, "token": token}
sock.sendall(json.dumps(request).encode() + b"\\n")
print(sock.recv(4096).decode())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
@pytest.mark.parametrize(
    ("use_token", "expected"),
    [pytest.param(False, '"ok": false', id="without-token"),
     pytest.param(True, '"ok": true', id="with-token")],
)  # fmt: skip
async def test_server_checks_peer_uid(use_token: bool, expected: str) -> None:
    # The unprivileged client needs search permission on every directory up to the socket,
    # which pytest's private tmp_path does not give, and a Python it may execute.
    state_dir = Path(tempfile.mkdtemp(prefix="netsody-localapi-"))
    state_dir.chmod(0o755)  # noqa: ASYNC240
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    server = LocalApiServer(state_dir, {"echo": _echo})
    await server.start()
    try:
        token = server.token if use_token else ""
        proc = await asyncio.create_subprocess_exec(
            python, "-c", CALL_AS_NOBODY, str(server.path), token,
            user=65534, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        await server.stop()
        shutil.rmtree(state_dir)
    assert proc.returncode == 0, err.decode()
    assert expected in out.decode()
    if not use_token:
        assert '"code": "forbidden"' in out.decode()


async def _raw_call(path: Path, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()


async def _buggy(params: dict) -> dict:
    raise RuntimeError("handler bug")


@pytest.mark.parametrize("params", [[1], "text", 5], ids=["list", "string", "number"])
async def test_non_object_params_rejected(tmp_path: Path, params) -> None:
    server = LocalApiServer(tmp_path, {"echo": _echo})
    await server.start()
    try:
        payload = json.dumps({"method": "echo", "params": params}).encode() + b"\n"
        answer = json.loads(await _raw_call(tmp_path / "netsody.sock", payload))
    finally:
        await server.stop()
    assert answer["ok"] is False
    assert answer["code"] == "bad_request"
    assert "params" in answer["detail"]


async def test_handler_crash_keeps_serving(tmp_path: Path) -> None:
    server = LocalApiServer(tmp_path, {"buggy": _buggy, "echo": _echo})
    await server.start()
    try:
        sock = tmp_path / "netsody.sock"
        response = json.loads(await _raw_call(sock, b'{"method": "buggy"}\n'))
        assert response == {
            "ok": False,
            "detail": "the agent failed on buggy; its log has the details",
            "code": "internal",
        }
        echoed = json.loads(await _raw_call(sock, b'{"method": "echo", "params": {"value": 1}}\n'))
        assert echoed == {"ok": True, "result": {"echo": 1}}
    finally:
        await server.stop()


async def test_idle_connection_closed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(localapi, "REQUEST_READ_TIMEOUT_SECONDS", 0.05)
    server = LocalApiServer(tmp_path, {"echo": _echo})
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "netsody.sock"))
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
    finally:
        await server.stop()


async def test_connection_limit_rejects_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(localapi, "MAX_CONNECTIONS", 2)
    server = LocalApiServer(tmp_path, {"echo": _echo})
    await server.start()
    sock = str(tmp_path / "netsody.sock")
    idle = [await asyncio.open_unix_connection(sock) for _ in range(2)]
    try:
        # The two idle connections are counted before this one, so the server rejects it.
        rejected = json.loads(await _raw_call(tmp_path / "netsody.sock", b'{"method": "echo"}\n'))
        assert rejected["code"] == "busy"
        for _, writer in idle:
            writer.close()
            await writer.wait_closed()
        payload = b'{"method": "echo", "params": {"value": 2}}\n'
        for _ in range(100):
            answer = json.loads(await _raw_call(tmp_path / "netsody.sock", payload))
            if answer.get("ok"):
                break
            await asyncio.sleep(0.01)
        assert answer == {"ok": True, "result": {"echo": 2}}
    finally:
        await server.stop()


async def _close_without_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.close()


async def test_client_reports_missing_answer(tmp_path: Path) -> None:
    server = await asyncio.start_unix_server(
        _close_without_answer, path=str(tmp_path / "netsody.sock")
    )
    try:
        client = LocalApiClient(tmp_path, timeout=5)
        with pytest.raises(LocalApiError) as raised:
            await asyncio.to_thread(client.call, "status")
    finally:
        server.close()
        await server.wait_closed()
    assert raised.value.code == "io"
    assert "no valid response" in raised.value.detail
