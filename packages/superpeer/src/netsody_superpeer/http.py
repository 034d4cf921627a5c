"""Request routing shared by the HTTP/3 and HTTP/2 servers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from netsody_common.wire import (
    BIND_HEADER,
    CAPSULE_PROTOCOL_HEADER,
    CONNECT_UDP_PROTOCOL,
    ERROR_CODE_HEADER,
    PROXY_PUBLIC_ADDRESS_HEADER,
    RELAY_PATH,
    SIGNAL_PATH,
    SIGNAL_PROTOCOL,
    ErrorCode,
    format_proxy_public_addresses,
)
from netsody_superpeer.hub import Connection, Hub, SignalSession
from netsody_superpeer.logutil import warn_repeated
from netsody_superpeer.relay import Tunnel

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
_MASQUE_PREFIX = b"/.well-known/masque/udp/"


@dataclass
class Route:
    """The response to one request: headers, an optional body, and what the stream became.

    A `session` must be started (`session.start()`) after the headers are sent.
    """

    headers: Headers
    end_stream: bool
    body: bytes | None = None
    session: SignalSession | None = None
    tunnel: Tunnel | None = None


class RequestRouter:
    """Turns request headers into a `Route`, opening sessions and tunnels through the hub."""

    def __init__(self, hub: Hub, alt_svc_port: int) -> None:
        self.hub = hub
        self._common: Headers = [
            (b"alt-svc", f'h3=":{alt_svc_port}"; ma=86400'.encode()),
            (b"server", b"netsody-sp"),
        ]

    def _answer(
        self, status: int, body: bytes | None = None, *, code: ErrorCode | None = None
    ) -> Route:
        headers = [(b":status", str(status).encode()), *self._common]
        if code is not None:
            headers.append((ERROR_CODE_HEADER.encode(), str(int(code)).encode()))
        if body is not None:
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
            headers.append((b"content-length", str(len(body)).encode()))
        return Route(headers, end_stream=body is None and status != 200, body=body)

    def route(self, conn: Connection, stream_id: int, headers: dict[bytes, bytes]) -> Route:
        method = headers.get(b":method")
        path = headers.get(b":path", b"")
        if method == b"CONNECT":
            return self._connect(conn, stream_id, headers.get(b":protocol"), path, headers)
        if method in (b"GET", b"HEAD") and path == b"/":
            return self._answer(200, b"netsody super peer\n" if method == b"GET" else b"")
        self._log_rejected(conn, f"no route for {method!r} {path[:100]!r}")
        return self._answer(404, b"not found\n")

    def _log_rejected(self, conn: Connection, reason: str) -> None:
        warn_repeated(
            logger,
            f"route:{conn.remote_ip}",
            "rejected request from %s transport=%s: %s",
            conn.remote_ip,
            conn.transport_name,
            reason,
        )

    def _connect(
        self,
        conn: Connection,
        stream_id: int,
        protocol: bytes | None,
        path: bytes,
        headers: dict[bytes, bytes],
    ) -> Route:
        if protocol == SIGNAL_PROTOCOL.encode() and path == SIGNAL_PATH.encode():
            route = self._answer(200)
            route.session = self.hub.open_session(conn, stream_id)
            return route
        if protocol == CONNECT_UDP_PROTOCOL.encode() and path.startswith(_MASQUE_PREFIX):
            return self._relay(conn, stream_id, path, headers)
        self._log_rejected(conn, f"unknown CONNECT target {protocol!r} {path[:100]!r}")
        return self._answer(404, b"unknown CONNECT target\n", code=ErrorCode.MALFORMED)

    def _relay(
        self, conn: Connection, stream_id: int, path: bytes, headers: dict[bytes, bytes]
    ) -> Route:
        if path != RELAY_PATH.encode() or headers.get(BIND_HEADER.encode()) != b"?1":
            self._log_rejected(conn, "CONNECT-UDP without a wildcard target and connect-udp-bind")
            return self._answer(
                400,
                b"only bound tunnels are served: CONNECT-UDP to /.well-known/masque/udp/*/*/ "
                b"with connect-udp-bind: ?1\n",
                code=ErrorCode.MALFORMED,
            )
        status, code, tunnel = self.hub.open_tunnel(conn, stream_id)
        if tunnel is None:
            return self._answer(
                status, f"relay refused: {code.name.lower() if code else ''}\n".encode(), code=code
            )
        route = self._answer(200)
        route.headers.append((CAPSULE_PROTOCOL_HEADER.encode(), b"?1"))
        route.headers.append(
            (
                PROXY_PUBLIC_ADDRESS_HEADER.encode(),
                format_proxy_public_addresses(tunnel.public_addresses()).encode(),
            )
        )
        route.tunnel = tunnel
        return route
