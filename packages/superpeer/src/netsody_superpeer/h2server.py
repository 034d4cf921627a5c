"""HTTP/2 over TLS (the `h2` package): the fallback for networks that block UDP.

The same routes as HTTP/3; relay datagrams travel as DATAGRAM capsules (RFC 9297 section 3.5)
on the CONNECT-UDP stream.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import ssl
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from netsody_common.wire import (
    CapsuleReader,
    encode_datagram_capsule,
)
from netsody_superpeer.h3server import unmap
from netsody_superpeer.http import RequestRouter
from netsody_superpeer.hub import Hub, SignalSession
from netsody_superpeer.logutil import warn_repeated
from netsody_superpeer.relay import Tunnel

logger = logging.getLogger(__name__)

# Receive windows: several megabytes, so a relay tunnel is not throttled by flow control between
# two WINDOW_UPDATE frames (one is sent for every DATA frame received).
_STREAM_WINDOW = 4 << 20
_CONNECTION_WINDOW = 16 << 20
_TLS_READ_SIZE = 32 * 1024
# Unsent TLS output beyond this drops relay datagrams instead of queueing them.
_MAX_WRITE_BUFFER = 2 << 20


class H2ServerProtocol(asyncio.Protocol):
    """One TLS connection speaking HTTP/2."""

    transport_name = "h2"

    def __init__(self, hub: Hub, router: RequestRouter) -> None:
        self.hub = hub
        self.session: SignalSession | None = None
        self.remote_ip = ""
        self._router = router
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self._streams: dict[int, SignalSession | Tunnel] = {}
        self._capsules: dict[int, CapsuleReader] = {}
        self._request_count = 0
        self._flush_scheduled = False
        self._datagrams: dict[int, list[bytes]] = {}  # capsules not yet in DATA frames
        self._datagram_bytes: dict[int, int] = {}

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.remote_ip = unmap(peer[0]) if peer else "unknown"
        self._admitted = self.hub.admit_connection(self)
        conn = self._conn
        conn.initiate_connection()
        if not self._admitted:
            conn.close_connection(
                error_code=ErrorCodes.ENHANCE_YOUR_CALM, additional_data=b"too many connections"
            )
            self._flush()
            transport.close()
            return
        conn.update_settings(
            {
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
                SettingCodes.MAX_CONCURRENT_STREAMS: self.hub.settings.max_streams_per_connection,
                SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: 16384,
            }
        )
        conn.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self._flush()
        self._loop.call_later(self.hub.settings.auth_timeout + 1.0, self._check_authenticated)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self.hub.release_connection(self)
        self._streams.clear()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.hub.stats.drops["malformed_http2"] += 1
            warn_repeated(
                logger,
                f"h2:{self.remote_ip}",
                "HTTP/2 protocol error from %s: %s",
                self.remote_ip,
                exc,
            )
            self._abort(ErrorCodes.PROTOCOL_ERROR, str(exc))
            return
        for event in events:
            self._event(event)
        self._flush()

    # Connection interface of the hub --------------------------------------------------------

    def reflexive_address(self) -> tuple[str, int] | None:
        return None  # a TCP source port reveals nothing about the agent's UDP mapping

    def send_stream(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        try:
            self._conn.send_data(stream_id, data, end_stream=end)
        except h2.exceptions.FlowControlError:
            self.hub.stats.drops["flow_control"] += 1
            self._stream_finished(stream_id, "flow control window exhausted")
            self.reset_stream(stream_id)
        except h2.exceptions.H2Error as exc:
            logger.debug("send on stream %d failed: %s", stream_id, exc)
        self._schedule_flush()

    def reset_stream(self, stream_id: int) -> None:
        self._forget_stream(stream_id)
        try:
            self._conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        except h2.exceptions.H2Error as exc:
            logger.debug("reset of stream %d failed: %s", stream_id, exc)
        self._schedule_flush()

    def send_http_datagram(self, stream_id: int, payload: bytes) -> bool:
        capsule = encode_datagram_capsule(payload)
        conn = self._conn
        transport = self._transport
        if (
            transport is None
            or transport.get_write_buffer_size() > _MAX_WRITE_BUFFER
            or len(capsule) > conn.max_outbound_frame_size
        ):
            return False
        pending = self._datagrams.setdefault(stream_id, [])
        size = self._datagram_bytes.get(stream_id, 0) + len(capsule)
        if conn.local_flow_control_window(stream_id) < size:
            return False
        # Capsules of one event loop turn leave in as few DATA frames as fit: a frame per
        # capsule costs more than the capsule itself.
        pending.append(capsule)
        self._datagram_bytes[stream_id] = size
        self._schedule_flush()
        return True

    def pending_output(self, stream_id: int) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def close(self, reason: str) -> None:
        self._abort(ErrorCodes.NO_ERROR, reason)

    # HTTP/2 events --------------------------------------------------------------------------

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self._data(event.stream_id, event.data or b"")
        elif isinstance(event, h2.events.StreamEnded):
            self._stream_finished(event.stream_id, "request stream ended")
        elif isinstance(event, h2.events.StreamReset):
            self._stream_finished(event.stream_id, "stream reset by the client")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._abort(ErrorCodes.NO_ERROR, "client sent GOAWAY")

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        self._request_count += 1
        if self._request_count > self.hub.settings.max_streams_per_connection * 4:
            self.hub.stats.drops["too_many_streams"] += 1
            self._abort(ErrorCodes.ENHANCE_YOUR_CALM, "too many requests on one connection")
            return
        headers: dict[bytes, bytes] = {}
        for name, value in event.headers or []:
            headers[bytes(name)] = bytes(value)
        route = self._router.route(self, stream_id, headers)
        self._conn.send_headers(stream_id, route.headers, end_stream=route.end_stream)
        if route.session is not None:
            self._streams[stream_id] = route.session
            route.session.start()
        elif route.tunnel is not None:
            self._streams[stream_id] = route.tunnel
        elif route.body is not None:
            self._conn.send_data(stream_id, route.body, end_stream=True)

    def _data(self, stream_id: int, data: bytes) -> None:
        target = self._streams.get(stream_id)
        if isinstance(target, SignalSession):
            target.receive_data(data, self._loop.time())
        elif isinstance(target, Tunnel):
            reader = self._capsules.setdefault(stream_id, CapsuleReader())
            self.hub.tunnel_capsules(target, reader, data)

    def _stream_finished(self, stream_id: int, reason: str) -> None:
        target = self._forget_stream(stream_id)
        if isinstance(target, SignalSession):
            self.hub.close_session(target, reason)
        elif isinstance(target, Tunnel):
            self.hub.close_tunnel(target, reason, reset=False)

    def _forget_stream(self, stream_id: int) -> SignalSession | Tunnel | None:
        self._capsules.pop(stream_id, None)
        self._datagrams.pop(stream_id, None)
        self._datagram_bytes.pop(stream_id, None)
        return self._streams.pop(stream_id, None)

    # Output ---------------------------------------------------------------------------------

    def _check_authenticated(self) -> None:
        session = self.session
        if self._admitted and (session is None or session.pk is None):
            self._abort(ErrorCodes.NO_ERROR, "no authenticated signaling stream")

    def _abort(self, code: ErrorCodes, reason: str) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self._conn.close_connection(error_code=code, additional_data=reason.encode()[:200])
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _send_datagrams(self) -> None:
        pending, self._datagrams = self._datagrams, {}
        self._datagram_bytes.clear()
        step = self._conn.max_outbound_frame_size
        for stream_id, capsules in pending.items():
            data = b"".join(capsules)
            try:
                for offset in range(0, len(data), step):
                    self._conn.send_data(stream_id, data[offset : offset + step])
            except h2.exceptions.H2Error as exc:
                logger.debug("datagrams on stream %d not sent: %s", stream_id, exc)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._datagrams:
            self._send_datagrams()
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


async def start_h2(
    host: str, port: int, context: ssl.SSLContext, *, hub: Hub, router: RequestRouter
) -> asyncio.Server:
    """Listen for HTTP/2 over TLS on `host:port`; `::` listens on IPv4 and IPv6."""
    loop = asyncio.get_running_loop()
    # HACK: asyncio's SSLProtocol (CPython 3.11 asyncio/sslproto.py) allocates a 256 KiB read
    # buffer per connection, which made an idle HTTP/2 session cost about 300 KiB. TLS records
    # are at most 16 KiB, so 32 KiB reads lose nothing. A TLS layer of our own over
    # ssl.MemoryBIO would remove this class-wide setting.
    asyncio.sslproto.SSLProtocol.max_size = _TLS_READ_SIZE
    hosts: Any = ["0.0.0.0", "::"] if host == "::" else host  # noqa: S104 - explicit wildcard
    return await loop.create_server(
        lambda: H2ServerProtocol(hub, router),
        hosts,
        port,
        ssl=context,
        ssl_handshake_timeout=hub.settings.handshake_timeout,
        reuse_address=True,
    )
