"""Serve the development OpenID provider over HTTP, in a thread or as the main program."""

import ipaddress
import logging
import socket
import socketserver
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from netsody_controller.devidp.app import DevIdpApp
from netsody_controller.devidp.pages import DEV_ONLY_BANNER
from netsody_controller.devidp.provider import DevIdp, DevIdpSettings

logger = logging.getLogger(__name__)


class _QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("HTTP request from %s: %s", self.address_string(), format % args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # NOTE: HTTPServer.server_bind resolves the bound address with socket.getfqdn, which can
        # send a DNS query; the provider needs no host name, so only bind.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


def _server_class(host: str) -> type[_ThreadingWSGIServer]:
    if ":" not in host:
        return _ThreadingWSGIServer
    return type(
        "_ThreadingWSGIServer6", (_ThreadingWSGIServer,), {"address_family": socket.AF_INET6}
    )


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class RunningDevIdp:
    """A development provider serving HTTP in a background thread; stop it with `stop()`."""

    def __init__(self, idp: DevIdp, server: _ThreadingWSGIServer) -> None:
        self.idp = idp
        self.base_url = idp.issuer
        self.discovery_url = f"{idp.issuer}/.well-known/openid-configuration"
        host, port = server.server_address[:2]
        # The bound socket's URL; it differs from base_url only when an issuer was given.
        self.local_url = _base_url(str(host), int(port))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name="netsody-devidp",
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the server thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "RunningDevIdp":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def bind_dev_idp(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: DevIdpSettings | None = None,
    issuer: str | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[DevIdp, _ThreadingWSGIServer]:
    """Bind the HTTP server (port 0 picks a free port) and create the provider behind it.

    The issuer is the bound base URL unless `issuer` is given (for a proxy in front).
    """
    server = _server_class(host)((host, port), _QuietRequestHandler)
    bound_port = server.server_address[1]
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    idp = DevIdp(issuer or _base_url(host, bound_port), state_dir, settings, **options)
    server.set_app(DevIdpApp(idp))
    return idp, server


def start_dev_idp(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: DevIdpSettings | None = None,
    issuer: str | None = None,
    clock: Callable[[], float] | None = None,
    banner_stream: TextIO | None = None,
) -> RunningDevIdp:
    """Start the provider in a background thread and return it (use it as a context manager).

    The development-only warning is logged, and printed as a banner to `banner_stream` when
    given. Raises OSError when the address cannot be bound.
    """
    idp, server = bind_dev_idp(
        state_dir, host=host, port=port, settings=settings, issuer=issuer, clock=clock
    )
    warn_development_only(idp.issuer, host, stream=banner_stream)
    return RunningDevIdp(idp, server)


def warn_development_only(issuer: str, host: str, stream: TextIO | None = None) -> None:
    """Log and print the development-only warning banner."""
    logger.warning("Development-only OpenID provider running at %s", issuer)
    if stream is None:
        return
    width = 78
    lines = ["DEVELOPMENT-ONLY OPENID PROVIDER", f"issuer: {issuer}", DEV_ONLY_BANNER]
    if not _is_loopback(host):
        lines.append(f"WARNING: bound to {host}, which is not a loopback address.")
    print("!" * width, file=stream)
    for line in lines:
        for part in textwrap.wrap(line, width - 6, break_on_hyphens=False):
            print(f"!! {part:<{width - 6}} !!", file=stream)
    print("!" * width, file=stream, flush=True)


def serve_forever(idp: DevIdp, server: _ThreadingWSGIServer, host: str) -> None:
    """Serve in the calling thread until interrupted (Ctrl+C)."""
    warn_development_only(idp.issuer, host, stream=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        logger.info("Stopping the development OpenID provider")
    finally:
        server.server_close()
