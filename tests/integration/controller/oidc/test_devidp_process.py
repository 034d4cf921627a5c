"""`python -m netsody_controller.devidp` as a real process: serving, persistence, binding."""

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from netsody_controller.devidp.browser import approve_device_code

pytestmark = pytest.mark.timeout(300)


def test_keys_and_users_survive_restart(
    tmp_path: Path, run_process: Callable, free_port_factory: Callable[[], int]
) -> None:
    port = free_port_factory()
    state_dir = tmp_path / "state"
    base_url = f"http://127.0.0.1:{port}"
    args = ("--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state_dir))

    first = run_process("netsody_controller.devidp", *args)
    first.wait_for_url(f"{base_url}/.well-known/openid-configuration")
    kids_before = [key["kid"] for key in httpx.get(f"{base_url}/jwks").json()["keys"]]
    subject_before = _sign_in_subject(base_url, "ada@example.com")
    assert first.stop() == 0
    assert "DEVELOPMENT-ONLY OPENID PROVIDER" in first.output()

    second = run_process("netsody_controller.devidp", *args)
    second.wait_for_url(f"{base_url}/.well-known/openid-configuration")
    kids_after = [key["kid"] for key in httpx.get(f"{base_url}/jwks").json()["keys"]]

    assert kids_after == kids_before
    assert _sign_in_subject(base_url, "ada@example.com") == subject_before
    assert (state_dir / "signing-keys.json").stat().st_mode & 0o077 == 0


def _sign_in_subject(base_url: str, email: str) -> str:
    """Complete a device flow as `email` and return the subject the userinfo endpoint reports."""
    with httpx.Client(timeout=5) as http:
        grant = http.post(
            f"{base_url}/device_authorization", data={"client_id": "netsody-agent"}
        ).json()
        approve_device_code(grant["verification_uri"], grant["user_code"], email)
        tokens = http.post(
            f"{base_url}/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": grant["device_code"],
                "client_id": "netsody-agent",
            },
        ).json()
        userinfo = http.get(
            f"{base_url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    return str(userinfo.json()["sub"])


def test_port_in_use_reported(
    tmp_path: Path, run_process: Callable, free_port_factory: Callable[[], int]
) -> None:
    port = free_port_factory()
    args = ("--port", str(port), "--state-dir", str(tmp_path / "state"))
    running = run_process("netsody_controller.devidp", *args)
    running.wait_for_url(f"http://127.0.0.1:{port}/.well-known/openid-configuration")

    clash = run_process("netsody_controller.devidp", *args)

    assert clash.popen.wait(timeout=60) == 1
    assert f"Cannot bind 127.0.0.1:{port}" in clash.output()


@pytest.mark.root
def test_binds_namespace_address(
    tmp_path: Path, run_process: Callable, free_port_factory: Callable[[], int]
) -> None:
    """The provider serves on an address inside a network namespace the test creates."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    namespace = f"nsidp{free_port_factory()}"
    address = "10.213.0.1"
    try:
        subprocess.run(["ip", "netns", "add", namespace], check=True)
        _run_in(namespace, "ip", "link", "set", "lo", "up")
        _run_in(namespace, "ip", "addr", "add", f"{address}/32", "dev", "lo")
        process = run_process(
            "netsody_controller.devidp",
            "--host",
            address,
            "--port",
            "9001",
            "--state-dir",
            str(tmp_path / "state"),
            wrapper=["ip", "netns", "exec", namespace],
        )
        url = f"http://{address}:9001/.well-known/openid-configuration"
        document = _fetch_in(namespace, url, process)

        assert f'"issuer": "http://{address}:9001"' in document
        assert "not a loopback address" in process.output()
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def _run_in(namespace: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, *argv], check=True)


def _fetch_in(namespace: str, url: str, process: Any) -> str:
    """Fetch `url` from inside the namespace, retrying while the provider starts."""
    script = f"import httpx; print(httpx.get({url!r}, timeout=2).text)"
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"{url} unreachable: {result.stderr}\n{process.output()}")
        time.sleep(0.5)
