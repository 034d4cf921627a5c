"""The local API between the `netsody` command and the daemon: JSON lines over a Unix socket.

A request is one line `{"method": str, "params": object, "token": str | null}`; the response is
one line `{"ok": true, "result": object}` or `{"ok": false, "detail": str, "code": str}`.
Only root (checked with SO_PEERCRED) or a client that presents the contents of the local token
file (`<state>/local-token`, mode 0600) may call it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from netsody_agent.errors import AgentError, LocalApiError
from netsody_agent.settings import LOCAL_TOKEN_FILE, SOCKET_FILE, write_private_file

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST_BYTES = 1 << 20
CLIENT_TIMEOUT_SECONDS = 60.0
# SECURITY: anyone may connect, so a connection must send its request line soon, and only so
# many connections are open at once; idle connections cannot exhaust the daemon's descriptors.
REQUEST_READ_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 64
_UCRED = struct.Struct("3i")


def is_authorized(peer_uid: int | None, presented: str | None, expected: str) -> bool:
    """Decide whether a local API client may call the daemon.

    SECURITY: root (uid 0, as reported by the kernel through SO_PEERCRED) is always allowed;
    anyone else must present the local token, compared in constant time. An empty expected
    token never matches.
    """
    if peer_uid == 0:
        return True
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def ensure_local_token(state_dir: Path) -> str:
    """Return the local token, creating `<state>/local-token` (mode 0600) on first use."""
    path = state_dir / LOCAL_TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if not token:
        token = secrets.token_urlsafe(32)
        write_private_file(path, token + "\n")
    return token


def peer_uid(sock: socket.socket | None) -> int | None:
    """Return the uid of the process at the other end of a Unix socket, or None."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    _, uid, _ = _UCRED.unpack(raw)
    return int(uid)


class LocalApiServer:
    """Serves `handlers` on the Unix socket `<state>/netsody.sock`."""

    def __init__(self, state_dir: Path, handlers: dict[str, Handler]) -> None:
        self.path = state_dir / SOCKET_FILE
        self.handlers = handlers
        self.token = ensure_local_token(state_dir)
        self._server: asyncio.AbstractServer | None = None
        self._connections = 0

    async def start(self) -> None:
        """Bind the socket (replacing a stale one) and start serving."""
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
        )
        # Anyone may connect; the handler checks root or the token on every request.
        # SECURITY: the socket is world-connectable on purpose; authorization is per request.
        os.chmod(self.path, 0o666)  # noqa: S103
        logger.info("local API listening on %s", self.path)

    async def stop(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_uid(writer.get_extra_info("socket"))
        self._connections += 1
        try:
            if self._connections > MAX_CONNECTIONS:
                logger.warning(
                    "local API rejected a connection: %d are already open", MAX_CONNECTIONS
                )
                response = _error(
                    f"the agent already serves {MAX_CONNECTIONS} local API connections; try again",
                    "busy",
                )
            else:
                line = await asyncio.wait_for(reader.readline(), REQUEST_READ_TIMEOUT_SECONDS)
                response = await self._respond(line, uid)
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except TimeoutError:
            logger.warning(
                "local API connection closed: no request within %s s", REQUEST_READ_TIMEOUT_SECONDS
            )
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            logger.warning("local API connection failed: %s", exc)
        finally:
            self._connections -= 1
            writer.close()

    async def _respond(self, line: bytes, uid: int | None) -> dict[str, Any]:
        try:
            request = json.loads(line)
            method = str(request["method"])
            params = request.get("params") or {}
            token = request.get("token")
        except (ValueError, KeyError, TypeError):
            return _error("request is not a JSON object with a method", "bad_request")
        if not isinstance(params, dict):
            return _error(f"params of {method!r} must be a JSON object", "bad_request")
        if not is_authorized(uid, token if isinstance(token, str) else None, self.token):
            logger.warning(
                "local API request %s from uid %s rejected: not root, no token", method, uid
            )
            return _error(
                "permission denied: run as root or make the local token readable", "forbidden"
            )
        handler = self.handlers.get(method)
        if handler is None:
            return _error(f"unknown method {method!r}", "unknown_method")
        try:
            return {"ok": True, "result": await handler(params)}
        except LocalApiError as exc:
            return _error(exc.detail, exc.code)
        except AgentError as exc:
            logger.error("local API method %s failed: %s", method, exc)
            return _error(str(exc), "failed")
        except Exception:
            # A bug or a parameter of the wrong type: the client gets an error, others are served.
            logger.exception("local API method %s failed unexpectedly", method)
            return _error(f"the agent failed on {method}; its log has the details", "internal")


def _error(detail: str, code: str) -> dict[str, Any]:
    return {"ok": False, "detail": detail, "code": code}


class LocalApiClient:
    """Calls the daemon of the state directory `state_dir`."""

    def __init__(self, state_dir: Path, *, timeout: float = CLIENT_TIMEOUT_SECONDS) -> None:
        self.state_dir = state_dir
        self.timeout = timeout

    def _token(self) -> str | None:
        try:
            return (self.state_dir / LOCAL_TOKEN_FILE).read_text(encoding="ascii").strip()
        except OSError:
            return None

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; raise `LocalApiError` when the daemon is unreachable or fails."""
        path = self.state_dir / SOCKET_FILE
        request = {"method": method, "params": params or {}, "token": self._token()}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(path))
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = _read_line(sock)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise LocalApiError(
                f"the netsody daemon is not running (no socket at {path}): start `netsody run`",
                "not_running",
            ) from exc
        except PermissionError as exc:
            raise LocalApiError(f"cannot open {path}: run as root", "forbidden") from exc
        except OSError as exc:
            raise LocalApiError(f"local API request {method} failed: {exc}", "io") from exc
        try:
            response = json.loads(data)
        except ValueError:
            response = None
        if not isinstance(response, dict):
            raise LocalApiError(
                f"local API request {method} received no valid response from the daemon. "
                "Check the daemon's log.",
                "io",
            )
        if not response.get("ok"):
            raise LocalApiError(str(response.get("detail")), str(response.get("code")))
        return dict(response.get("result") or {})


def _read_line(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)
