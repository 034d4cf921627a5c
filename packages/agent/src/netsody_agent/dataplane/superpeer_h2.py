"""The agent's HTTP/2 session with a super peer, for networks that block UDP.

It opens the same two extended CONNECT requests as over HTTP/3 (`superpeer.SuperPeerSession`),
on a TLS connection over TCP (RFC 8441): the signaling stream and the bound CONNECT-UDP relay
tunnel. The tunnel's HTTP datagrams travel as DATAGRAM capsules (RFC 9297 section 3.5) in DATA
frames. The
super peer observes no reflexive UDP address over TCP, so this session only ever relays.

Unlike the HTTP/3 session it does its own I/O: an asyncio task reads the TLS stream.
`send_relayed` collects DATAGRAM capsules, and `datagrams` (called when the data plane flushes
its super peer sessions after a batch of packets) or at the latest the next event loop turn
writes them in few DATA frames with one TLS write: per capsule frames and writes cost more
than the encryption.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from netsody_agent.dataplane.superpeer import bound_relay_addresses, parse_super_peer_url
from netsody_common import wire
from netsody_common.identity import Identity

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
PING_INTERVAL = 25.0
RECEIVE_WINDOW = 4 << 20


class H2SuperPeerSession:
    """One HTTP/2 connection to one super peer; the interface of `SuperPeerSession`.

    `start()` connects and runs until `close()` or until the connection fails (`closed`,
    `error`). Callbacks as for `SuperPeerSession`.
    """

    kind = "relay-h2"

    def __init__(
        self,
        url: str,
        identity: Identity,
        *,
        host_candidates: tuple[wire.Candidate, ...],
        on_peer_candidates: Callable[[str, tuple[wire.Candidate, ...]], None],
        on_relayed: Callable[[bytes, tuple[str, int], Any], None],
        cafile: str | None = None,
    ) -> None:
        self.url = url
        self.host, self.port = parse_super_peer_url(url)
        self.address = (self.host, self.port)
        self.identity = identity
        self.authenticated = False
        self.closed = False
        self.error = ""
        self.relay_addresses: list[tuple[str, int]] = []
        self.reflexive: wire.Candidate | None = None
        self.rtt = 0.0
        self.created = time.monotonic()
        self.timer_handle: Any = None
        self._on_peer_candidates = on_peer_candidates
        self._on_relayed = on_relayed
        self._cafile = cafile
        self._signaling = wire.SignalingClient(
            identity.pk, identity.pow_nonce, identity.sign, host_candidates
        )
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._signal_stream: int | None = None
        self._relay_stream: int | None = None
        self._capsules = wire.CapsuleReader()
        self._task: asyncio.Task[None] | None = None
        self._sent_authenticate = 0.0

    def __repr__(self) -> str:
        return f"H2SuperPeerSession({self.url}, authenticated={self.authenticated})"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._connect_and_read()
        except (OSError, TimeoutError, ssl.SSLError, h2.exceptions.ProtocolError) as error:
            self.error = f"HTTP/2 connection failed: {error}"
            logger.warning("super peer %s: %s", self.url, self.error)
        finally:
            self.closed = True
            self.authenticated = False

    async def _connect_and_read(self) -> None:
        context = ssl.create_default_context(cafile=self._cafile)
        context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=context, server_hostname=self.host),
            CONNECT_TIMEOUT,
        )
        self._writer = writer
        self._conn.initiate_connection()
        self._conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW})
        self._conn.increment_flow_control_window(RECEIVE_WINDOW)
        self._signal_stream = self._conn.get_next_available_stream_id()
        self._conn.send_headers(self._signal_stream, wire.signal_request_headers(self.host))
        self._flush()
        last_ping = time.monotonic()
        while True:
            data = await asyncio.wait_for(reader.read(65536), PING_INTERVAL)
            if not data:
                self.error = "the super peer closed the connection"
                logger.warning("super peer %s (HTTP/2): %s", self.url, self.error)
                return
            for event in self._conn.receive_data(data):
                self._on_event(event)
            if self.authenticated and time.monotonic() - last_ping > PING_INTERVAL:
                last_ping = time.monotonic()
                self._signaling.ping()
                self._flush_signaling()
            self._flush()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_id == self._signal_stream:
                self._on_signaling_data(event.data)
            elif event.stream_id == self._relay_stream:
                self._on_relay_data(event.data)
        elif isinstance(event, h2.events.ResponseReceived):
            self._on_response(event.stream_id, dict(event.headers))
        elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
            self.error = f"stream or connection reset by the super peer: {event}"
            logger.warning("super peer %s (HTTP/2): %s", self.url, self.error)

    def _on_response(self, stream_id: int, headers: dict[bytes, bytes]) -> None:
        status = headers.get(b":status", b"").decode()
        if stream_id == self._relay_stream:
            if status != "200":
                logger.warning(
                    "super peer %s rejected the HTTP/2 relay tunnel request: status %s",
                    self.url,
                    status,
                )
                return
            addresses = bound_relay_addresses(self.url, headers)
            if addresses is None:
                return
            self.relay_addresses = addresses
            logger.info(
                "super peer %s HTTP/2 relay tunnel bound to %s", self.url, self.relay_addresses
            )
        elif stream_id == self._signal_stream and status != "200":
            self.error = f"signaling refused with status {status}"
            logger.warning("super peer %s (HTTP/2): %s", self.url, self.error)

    def _on_signaling_data(self, data: bytes) -> None:
        try:
            messages = self._signaling.receive_data(data)
        except wire.WireError as error:
            self.error = f"invalid signaling message: {error}"
            logger.warning("super peer %s (HTTP/2): %s", self.url, self.error)
            return
        if not self._sent_authenticate:
            self._sent_authenticate = time.monotonic()
        self._flush_signaling()
        for message in messages:
            if isinstance(message, wire.Authenticated):
                self.authenticated = True
                self.rtt = time.monotonic() - self._sent_authenticate
                logger.info("super peer %s session authenticated over HTTP/2", self.url)
                self._relay_stream = self._conn.get_next_available_stream_id()
                self._conn.send_headers(self._relay_stream, wire.relay_request_headers(self.host))
            elif isinstance(message, wire.Rejected):
                self.error = f"rejected ({message.code.name}): {message.reason}"
                logger.warning("super peer %s (HTTP/2) %s", self.url, self.error)
            elif isinstance(message, wire.PeerCandidates):
                self._on_peer_candidates(message.peer_pk, message.candidates)

    def _on_relay_data(self, data: bytes) -> None:
        try:
            capsules = self._capsules.feed(data)
        except wire.WireError as error:
            logger.warning("super peer %s sent an invalid capsule: %s", self.url, error)
            return
        for capsule_type, value in capsules:
            if capsule_type != wire.CAPSULE_DATAGRAM:
                continue
            try:
                host, port, payload = wire.decode_bound_datagram(value)
            except wire.WireError as error:
                logger.debug("super peer %s sent a malformed relay datagram: %s", self.url, error)
                continue
            self._on_relayed(payload, (host, port), self)

    def request_peer(self, pk: str) -> None:
        if self.authenticated:
            self._signaling.request_peer(pk)
            self._flush_signaling()
            self._flush()

    def send_relayed(self, payload: bytes, target: tuple[str, int]) -> bool:
        """Queue a UDP payload to `target` from the relay port; False when it cannot go now."""
        stream = self._relay_stream
        if stream is None or not self.relay_addresses or self.closed:
            return False
        capsule = wire.encode_datagram_capsule(
            wire.encode_bound_datagram(target[0], target[1], payload)
        )
        # A DATAGRAM capsule is unreliable by contract, so one that exceeds the flow control
        # window is dropped rather than queued.
        size = self._pending_size + len(capsule)
        if self._conn.local_flow_control_window(stream) < size:
            return False
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._send_pending)
        self._pending.append(capsule)
        self._pending_size = size
        return True

    def datagrams(self, now: float) -> list[bytes]:
        """Write the queued capsules; the session writes its own stream, so nothing to return."""
        self._send_pending()
        return []

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_size = 0
        stream = self._relay_stream
        if not pending or stream is None or self.closed:
            return
        data = b"".join(pending)
        step = self._conn.max_outbound_frame_size
        try:
            for offset in range(0, len(data), step):
                self._conn.send_data(stream, data[offset : offset + step])
        except h2.exceptions.ProtocolError as error:
            logger.debug("super peer %s: relay stream closed: %s", self.url, error)
            return
        self._flush()

    def timer(self) -> float | None:
        return None

    def close(self) -> None:
        self.closed = True
        if self._writer is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._conn.close_connection()
                self._flush()
            self._writer.close()
        if self._task is not None:
            self._task.cancel()

    def _flush_signaling(self) -> None:
        data = self._signaling.data_to_send()
        if data and self._signal_stream is not None:
            self._conn.send_data(self._signal_stream, data)

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)
