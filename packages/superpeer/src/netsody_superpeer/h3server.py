"""HTTP/3 over QUIC (aioquic): one `H3ServerProtocol` per connection, translated to `Hub` calls.

Relayed datagrams take a fast path around aioquic once the handshake is complete
(`netsody_common.quicfast`): a 1-RTT packet holding exactly one DATAGRAM frame is opened with
the connection's keys and its HTTP datagram goes straight to the tunnel, and datagrams toward
the agent are sealed into their own packets and sent at once. They are neither acknowledged nor
congestion-controlled by QUIC; the tunneled traffic does its own congestion control. Every other
packet (handshake, ACKs, pings, streams, DATAGRAM frames that aioquic built) goes through
aioquic, which keeps the connection, its timers and its idle timeout running.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from functools import partial
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StreamReset,
)

from netsody_common import quicfast
from netsody_common.udpsend import SegmentedSender
from netsody_common.wire import (
    CapsuleReader,
    WireError,
    decode_varint,
    encode_varint,
)
from netsody_superpeer.http import RequestRouter
from netsody_superpeer.hub import Hub, SignalSession
from netsody_superpeer.logutil import warn_repeated
from netsody_superpeer.relay import Tunnel

logger = logging.getLogger(__name__)

H3_NO_ERROR = 0x100
H3_GENERAL_PROTOCOL_ERROR = 0x101
H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E
# QUIC transport error CONNECTION_REFUSED (RFC 9000 section 20.1).
CONNECTION_REFUSED = 0x2
# Largest UDP payload the server sends. A sealed relay packet adds 28 bytes (flags, 8-byte
# connection ID, packet number, frame type, AEAD tag) to a relayed UDP payload, and the HTTP
# datagram adds 9 (quarter stream ID and IPv4 address prefix). So payloads of up to 1,313 bytes
# fit, and agents relay full 1,280-byte overlay packets in 1,309-byte payloads.
MAX_UDP_PAYLOAD = 1350
# Bytes of a short-header packet around one DATAGRAM frame that aioquic builds: flags, 8-byte
# connection id, packet number, AEAD tag, frame type and length, with a margin.
_PACKET_OVERHEAD = 48
# TLS output buffer per epoch once the handshake is complete (see `_shrink_crypto_buffers`).
_POST_HANDSHAKE_CRYPTO_BUFFER = 1024
# Datagrams queued in aioquic beyond this are dropped: the queue has no bound of its own.
_MAX_QUEUED_DATAGRAMS = 1024
# Datagrams read from the QUIC socket per readiness callback.
_READ_BATCH = 64


def quic_configuration() -> QuicConfiguration:
    """Return the server's QUIC configuration, still without a certificate."""
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=65536,
        max_datagram_size=MAX_UDP_PAYLOAD,
        idle_timeout=60.0,
    )


def unmap(host: str) -> str:
    """Return the IPv4 form of an IPv4-mapped IPv6 address, else `host` unchanged."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


class H3ServerProtocol(QuicConnectionProtocol):
    """One QUIC connection of the super peer."""

    transport_name = "h3"

    def __init__(
        self,
        quic: Any,
        stream_handler: Any = None,
        *,
        hub: Hub,
        router: RequestRouter,
        handshake_timeout: float,
        outbox: Outbox | None = None,
    ) -> None:
        super().__init__(quic, stream_handler)
        self.hub = hub
        self._outbox = outbox
        self.session: SignalSession | None = None
        self.remote_ip = ""
        self._router = router
        self._http: H3Connection | None = None
        self._addr: tuple[str, int] | None = None
        self._admitted: bool | None = None
        self._handshake_done = False
        self._streams: dict[int, SignalSession | Tunnel] = {}
        self._tunnels: dict[int, Tunnel] = {}  # by quarter stream id
        self._capsules: dict[int, CapsuleReader] = {}
        self._request_count = 0
        self._flush_scheduled = False
        self._datagram_limit = MAX_UDP_PAYLOAD - _PACKET_OVERHEAD
        # The fast path (see the module docstring) runs while `_fast_addr` is set: the address
        # of the connection's validated path once the handshake is complete.
        self._fast_addr: tuple[str, int] | None = None
        self._fast = quicfast.FastPath(self._quic)
        self._loop.call_later(handshake_timeout, self._check_handshake)
        self._loop.call_later(
            handshake_timeout + hub.settings.auth_timeout + 1.0, self._check_authenticated
        )

    # Connection interface of the hub --------------------------------------------------------

    def reflexive_address(self) -> tuple[str, int] | None:
        if self._addr is None:
            return None
        return unmap(self._addr[0]), self._addr[1]

    def send_stream(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        if self._http is None:
            return
        try:
            self._http.send_data(stream_id, data, end)
        except Exception as exc:
            logger.debug("send on stream %d failed: %s", stream_id, exc)
        self._schedule_flush()

    def reset_stream(self, stream_id: int) -> None:
        self._forget_stream(stream_id)
        try:
            self._quic.reset_stream(stream_id, H3_REQUEST_CANCELLED)
        except Exception as exc:
            logger.debug("reset of stream %d failed: %s", stream_id, exc)
        self._schedule_flush()

    def send_http_datagram(self, stream_id: int, payload: bytes) -> bool:
        quic = self._quic
        addr = self._fast_addr
        if addr is not None:
            quarter = stream_id >> 2
            datagram = (bytes((quarter,)) if quarter < 0x40 else encode_varint(quarter)) + payload
            if len(datagram) + quicfast.overhead(quic) > MAX_UDP_PAYLOAD:
                return False
            if self._outbox is not None:
                self._outbox.add(self._fast.seal(datagram), addr)
            else:
                self._transport.sendto(self._fast.seal(datagram), addr)
            return True
        # NOTE: aioquic keeps queued DATAGRAM frames in an unbounded private deque and never
        # sends one that does not fit a packet, so both are checked before queueing.
        if len(payload) > self._datagram_limit or (
            len(quic._datagrams_pending) > _MAX_QUEUED_DATAGRAMS
        ):
            return False
        quic.send_datagram_frame(encode_varint(stream_id >> 2) + payload)
        self._schedule_flush()
        return True

    def pending_output(self, stream_id: int) -> int:
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        return len(stream.sender._buffer)

    def close(self, reason: str | None = None, code: int = H3_GENERAL_PROTOCOL_ERROR) -> None:
        """Close the connection with an HTTP/3 error code and a reason.

        aioquic's server calls it without arguments when the super peer stops, which closes the
        connection with H3_NO_ERROR.
        """
        if reason is None:
            reason, code = "super peer stopping", H3_NO_ERROR
        self._fast_addr = None
        self._quic.close(error_code=code, reason_phrase=reason)
        self._schedule_flush()

    # QUIC events ----------------------------------------------------------------------------

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if addr == self._fast_addr and data and data[0] & 0x80 == 0:
            payload = self._fast.open(data, self._loop.time())  # type: ignore[arg-type]
            if payload:
                self._datagram_frame(payload)
                return
            if payload is not None:
                self.hub.stats.drops["replayed_packet"] += 1
                return
        self._addr = addr
        if self._admitted is None:
            self._first_datagram(data, addr)
            return
        super().datagram_received(data, addr)
        if self._handshake_done:
            self._update_fast_path()

    def _first_datagram(self, data: bytes | str, addr: Any) -> None:
        self.remote_ip = unmap(addr[0])
        self._admitted = self.hub.admit_connection(self)
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        if not self._admitted:
            # Closing before the first transmit sends CONNECTION_CLOSE instead of a handshake.
            self._quic.close(
                error_code=CONNECTION_REFUSED, frame_type=0, reason_phrase="too many connections"
            )
        self._process_events()
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if type(event) is DatagramFrameReceived:
            self._datagram_frame(event.data)
            return
        if isinstance(event, ProtocolNegotiated):
            self._http = H3Connection(self._quic, enable_webtransport=True)
        elif isinstance(event, HandshakeCompleted):
            self._handshake_done = True
            self._shrink_crypto_buffers()
            self._update_fast_path()
        elif isinstance(event, StreamReset):
            self._stream_finished(event.stream_id, "stream reset by the client")
        elif isinstance(event, ConnectionTerminated):
            self._terminated()
            return
        if self._http is not None and self._admitted:
            for http_event in self._http.handle_event(event):
                self._http_event(http_event)

    def _update_fast_path(self) -> None:
        """Enable the fast path on the connection's current path, or disable it when closing."""
        quic = self._quic
        if (
            self._handshake_done
            and self._admitted
            and quic._state == QuicConnectionState.CONNECTED
            and quicfast.can_seal(quic)
        ):
            # NOTE: the first entry of aioquic's private network path list is the validated path.
            self._fast_addr = quic._network_paths[0].addr
        else:
            self._fast_addr = None

    def _shrink_crypto_buffers(self) -> None:
        # NOTE: aioquic keeps three 16 KiB TLS output buffers for a connection's lifetime. After
        # the handshake a server that issues no session tickets writes no more TLS messages, so
        # small buffers save about 45 KiB, close to half of an idle connection's memory.
        quic = self._quic
        quic._crypto_buffers = {
            epoch: Buffer(capacity=_POST_HANDSHAKE_CRYPTO_BUFFER) for epoch in quic._crypto_buffers
        }

    def _datagram_frame(self, data: bytes) -> None:
        first = data[0] if data else 0xFF
        if first < 0x40:  # one-byte quarter stream id: the common case
            quarter, payload = first, data[1:]
        else:
            try:
                quarter, offset = decode_varint(data)
            except WireError:
                self.hub.stats.drops["malformed_datagram"] += 1
                return
            payload = data[offset:]
        tunnel = self._tunnels.get(quarter)
        if tunnel is None:
            self.hub.stats.drops["datagram_without_tunnel"] += 1
            return
        tunnel.from_agent(payload)

    def _terminated(self) -> None:
        self._fast_addr = None
        if self._admitted:
            self._admitted = False
            self.hub.release_connection(self)
        self._streams.clear()
        self._tunnels.clear()

    def _check_handshake(self) -> None:
        if not self._handshake_done and self._admitted is not False:
            warn_repeated(
                logger,
                f"handshake:{self.remote_ip}",
                "QUIC handshake from %s timed out",
                self.remote_ip or "unknown address",
            )
            self.close("handshake timed out")

    def _check_authenticated(self) -> None:
        session = self.session
        if self._admitted and (session is None or session.pk is None):
            self.close("no authenticated signaling stream", H3_REQUEST_CANCELLED)

    # HTTP/3 events --------------------------------------------------------------------------

    def _http_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self._request(event)
        elif isinstance(event, DataReceived):
            self._data(event.stream_id, event.data, event.stream_ended)

    def _request(self, event: HeadersReceived) -> None:
        assert self._http is not None
        self._request_count += 1
        if self._request_count > self.hub.settings.max_streams_per_connection:
            self.hub.stats.drops["too_many_streams"] += 1
            self.close("too many requests on one connection", H3_EXCESSIVE_LOAD)
            return
        stream_id = event.stream_id
        route = self._router.route(self, stream_id, dict(event.headers))
        self._http.send_headers(stream_id, route.headers, end_stream=route.end_stream)
        if route.session is not None:
            self._streams[stream_id] = route.session
            route.session.start()
        elif route.tunnel is not None:
            self._streams[stream_id] = route.tunnel
            self._tunnels[stream_id >> 2] = route.tunnel
        elif route.body is not None:
            self._http.send_data(stream_id, route.body, end_stream=True)
        if event.stream_ended:
            self._stream_finished(stream_id, "request stream ended")
        self._schedule_flush()

    def _data(self, stream_id: int, data: bytes, ended: bool) -> None:
        target = self._streams.get(stream_id)
        if isinstance(target, SignalSession):
            target.receive_data(data, self._loop.time())
        elif isinstance(target, Tunnel) and data:
            reader = self._capsules.setdefault(stream_id, CapsuleReader())
            self.hub.tunnel_capsules(target, reader, data)
        if ended:
            self._stream_finished(stream_id, "request stream ended")

    def _stream_finished(self, stream_id: int, reason: str) -> None:
        target = self._forget_stream(stream_id)
        if isinstance(target, SignalSession):
            self.hub.close_session(target, reason)
        elif isinstance(target, Tunnel):
            self.hub.close_tunnel(target, reason)

    def _forget_stream(self, stream_id: int) -> SignalSession | Tunnel | None:
        self._tunnels.pop(stream_id >> 2, None)
        self._capsules.pop(stream_id, None)
        return self._streams.pop(stream_id, None)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.transmit()


class Outbox(SegmentedSender):
    """Sealed relay datagrams of one event loop turn, sent per agent in few system calls.

    A datagram waits at most until the end of the current loop turn (`flush` is scheduled with
    `call_soon` when the first one arrives), and the reader flushes at the end of each batch.
    """

    def __init__(self, sock: socket.socket, hub: Hub) -> None:
        super().__init__(sock)
        self._hub = hub
        self._queued: dict[Any, list[bytes]] = {}
        self._scheduled = False

    def add(self, data: bytes, addr: Any) -> None:
        queued = self._queued.get(addr)
        if queued is None:
            self._queued[addr] = [data]
        else:
            queued.append(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        queued, self._queued = self._queued, {}
        for addr, datagrams in queued.items():
            try:
                dropped = self.send_many(datagrams, addr)
            except OSError as exc:
                dropped = len(datagrams)
                warn_repeated(logger, f"send:{exc.errno}", "QUIC send to %s failed: %s", addr, exc)
            if dropped:
                self._hub.stats.drops["send_buffer_full"] += dropped


class H3Server(QuicServer):
    """aioquic's server, reading its socket in batches and routing short-header packets of
    known connections by their connection ID without parsing the header first."""

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if data and type(data) is bytes and data[0] & 0x80 == 0:
            protocol = self._protocols.get(data[1 : 1 + self._cid_length])
            if protocol is not None:
                protocol.datagram_received(data, addr)
                return
        super().datagram_received(data, addr)

    @property
    def _cid_length(self) -> int:
        return int(self._configuration.connection_id_length)

    outbox: Outbox | None = None

    def read_ready(self, sock: socket.socket) -> None:
        """Read up to `_READ_BATCH` datagrams; asyncio's transport reads one per loop turn."""
        receive = sock.recvfrom
        handle = self.datagram_received
        for _ in range(_READ_BATCH):
            try:
                data, addr = receive(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                logger.debug("QUIC socket receive failed: %s", exc)
                break
            handle(data, addr)
        if self.outbox is not None:
            self.outbox.flush()


async def start_h3(
    host: str, port: int, configuration: QuicConfiguration, *, hub: Hub, router: RequestRouter
) -> tuple[asyncio.DatagramTransport, QuicServer]:
    """Listen for QUIC on `host:port` (dual-stack when `host` is `::`)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((host, port))
    outbox = Outbox(sock, hub)
    create = partial(
        H3ServerProtocol,
        hub=hub,
        router=router,
        handshake_timeout=hub.settings.handshake_timeout,
        outbox=outbox,
    )
    transport, server = await loop.create_datagram_endpoint(
        lambda: H3Server(configuration=configuration, create_protocol=create), sock=sock
    )
    server.outbox = outbox
    # NOTE: the transport keeps sending, and buffering when the socket is full. Only its reader
    # (one datagram per loop turn) is replaced, through the selector loop's private methods,
    # because the public ones reject a socket that a transport owns. Closing the transport
    # removes this reader. Another loop implementation keeps asyncio's reader.
    if hasattr(loop, "_remove_reader") and hasattr(loop, "_add_reader"):
        loop._remove_reader(sock.fileno())
        loop._add_reader(sock.fileno(), server.read_ready, sock)
    return transport, server
