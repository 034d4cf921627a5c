"""One QUIC connection to one peer, on a virtual datagram transport.

aioquic only ever gets one fixed virtual address per link (`VIRTUAL_ADDRESS`); where the
datagrams really go is `PeerLink.remote` (a UDP address on the shared socket, or a relay), which
the data plane may change at any time. Because QUIC packets are authenticated end to end,
changing the underlying path keeps the connection, its keys and its congestion state, and no
QUIC-level migration is needed.

The link drives the authentication of `handshake` and reports what happened through its
`state`: `handshaking`, `up` (packets may flow) or `closed`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.tls import Epoch

from netsody_agent.dataplane import handshake
from netsody_agent.dataplane.logs import RepeatLimiter
from netsody_common import quicfast
from netsody_common.identity import Identity

logger = logging.getLogger(__name__)
# A peer that keeps failing authentication is logged once per minute, the repeats at DEBUG.
_rejections = RepeatLimiter(logger)

VIRTUAL_ADDRESS = ("0.0.0.0", 0)  # noqa: S104 - a placeholder that aioquic stores, never a bind

# Largest UDP payload of the packets aioquic builds (handshake, ACKs, pings). A client pads its
# Initial to this size, so it must pass the relay: see RELAY_UDP_PAYLOAD.
QUIC_UDP_PAYLOAD = 1280
# Largest UDP payload of a fast-path packet on a direct path: 1500-byte path MTU minus IPv4 and
# UDP headers, minus 20 bytes of margin for tunnels and PPPoE under the path (as WireGuard's
# 1420-byte default MTU leaves).
DIRECT_UDP_PAYLOAD = 1452
# Largest UDP payload a relay path carries: a full 1,280-byte overlay packet (the default TUN
# MTU) plus the datagram's flags byte plus FAST_PATH_OVERHEAD. The super peer seals relayed
# datagrams into QUIC packets of at most 1,350 bytes, which adds 28 bytes of packet overhead and
# 9 of HTTP datagram prefix (quarter stream ID and IPv4 address), so it carries up to 1,313 bytes.
RELAY_UDP_PAYLOAD = 1309
# Bytes a fast-path packet adds to its IP packets: 1-byte flags, 8-byte connection ID, 2-byte
# packet number, 1-byte DATAGRAM frame type and the 16-byte AEAD tag.
FAST_PATH_OVERHEAD = 28
MAX_DATAGRAM_PAYLOAD = DIRECT_UDP_PAYLOAD - FAST_PATH_OVERHEAD
RELAY_DATAGRAM_PAYLOAD = RELAY_UDP_PAYLOAD - FAST_PATH_OVERHEAD
IDLE_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 4.0
# Datagrams queued inside aioquic beyond this count are dropped instead of queued: a longer
# queue only adds latency once the congestion window is full.
MAX_PENDING_DATAGRAMS = 256


STATE_HANDSHAKING = "handshaking"
STATE_UP = "up"
STATE_CLOSED = "closed"


@dataclass
class LinkStats:
    """Counters of one link; bytes are IP packet bytes, not QUIC overhead."""

    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, count: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + count


def client_configuration() -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[handshake.ALPN],
        max_datagram_frame_size=65535,
        max_datagram_size=QUIC_UDP_PAYLOAD,
        idle_timeout=IDLE_TIMEOUT,
        connection_id_length=8,
    )
    # SECURITY: no CA can vouch for a peer; `handshake.check_acceptor_certificate` compares the
    # presented key with the configured pk once the handshake completes.
    config.verify_mode = ssl.CERT_NONE
    return config


def server_configuration(identity: Identity, certificate: Any) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[handshake.ALPN],
        max_datagram_frame_size=65535,
        max_datagram_size=QUIC_UDP_PAYLOAD,
        idle_timeout=IDLE_TIMEOUT,
        connection_id_length=8,
    )
    config.certificate = certificate
    config.private_key = identity.private_key
    return config


class PeerLink:
    """The QUIC connection to one peer, as dialer or acceptor.

    `on_packets(link, payload)` receives each authenticated DATAGRAM payload; `on_state(link)`
    is called when `state` changes; `is_permitted(pk)` decides on the acceptor side whether an
    authenticated dialer may connect at all.
    """

    def __init__(
        self,
        identity: Identity,
        connection: QuicConnection,
        *,
        peer_pk: str | None,
        pow_difficulty: int,
        is_permitted: Callable[[str], bool],
    ) -> None:
        self.identity = identity
        self.connection = connection
        self.peer_pk = peer_pk
        self.is_dialer = connection._is_client
        self.state = STATE_HANDSHAKING
        self.remote: Any = None
        self.path = "none"
        self.stats = LinkStats()
        self.created = time.monotonic()
        self.last_handshake: float | None = None
        self.last_received = time.monotonic()
        self.remote_seen = 0.0
        self.close_reason = ""
        self._pow_difficulty = pow_difficulty
        self._is_permitted = is_permitted
        self._nonce = b""
        self._hello_stream: int | None = None
        self._stream_buffers: dict[int, bytes] = {}
        self.timer_handle: Any = None
        self.host_cids: set[bytes] = {connection.host_cid}
        self._fast = quicfast.FastPath(connection)
        self._clock = float("-inf")

    def __repr__(self) -> str:
        role = "dialer" if self.is_dialer else "acceptor"
        return f"PeerLink(peer={self.peer_pk}, {role}, state={self.state}, path={self.path})"

    @classmethod
    def dial(
        cls,
        identity: Identity,
        peer_pk: str,
        *,
        now: float,
        pow_difficulty: int,
    ) -> PeerLink:
        connection = QuicConnection(configuration=client_configuration())
        link = cls(
            identity,
            connection,
            peer_pk=peer_pk,
            pow_difficulty=pow_difficulty,
            is_permitted=lambda _pk: True,
        )
        connection.connect(VIRTUAL_ADDRESS, now=link.clock(now))
        return link

    @classmethod
    def accept(
        cls,
        identity: Identity,
        configuration: QuicConfiguration,
        *,
        original_destination_connection_id: bytes,
        pow_difficulty: int,
        is_permitted: Callable[[str], bool],
    ) -> PeerLink:
        connection = QuicConnection(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
        )
        return cls(
            identity,
            connection,
            peer_pk=None,
            pow_difficulty=pow_difficulty,
            is_permitted=is_permitted,
        )

    def clock(self, now: float) -> float:
        """Return `now`, or the latest time this connection saw when `now` is earlier.

        Callers take `now` once per batch of packets, and a packet handled later in a batch
        may acknowledge one sent with a fresher time in between (a relayed packet is served at
        once). aioquic would take a negative RTT sample from it, which makes its probe timeout
        negative: the loss timer then fires at once, forever, until the backoff overflows.
        """
        if now > self._clock:
            self._clock = now
        return self._clock

    def receive(self, data: bytes, now: float) -> bool:
        """Feed one UDP payload; return True when it was an authentic packet of this connection."""
        now = self.clock(now)
        # NOTE: aioquic has no public signal for "this datagram decrypted", so a change of the
        # largest received 1-RTT packet number signals it. The data plane trusts a new remote
        # address only when this returns True.
        before = self._largest_received()
        self.connection.receive_datagram(data, VIRTUAL_ADDRESS, now)
        authentic = self._largest_received() != before
        if authentic:
            self.last_received = now
        return authentic

    def initial_received(self) -> bool:
        """Return True once a packet of the peer's Initial decrypted (or its space is gone)."""
        spaces = self.connection._spaces
        space = spaces.get(Epoch.INITIAL) if spaces else None
        return space is None or space.largest_received_packet >= 0

    def _largest_received(self) -> int:
        spaces = self.connection._spaces
        space = spaces.get(Epoch.ONE_RTT) if spaces else None
        return space.largest_received_packet if space is not None else -1

    def process_events(
        self,
        on_packets: Callable[[PeerLink, bytes], None],
        on_state: Callable[[PeerLink], None],
        on_cid: Callable[[PeerLink, bytes, bool], None],
    ) -> None:
        """Handle every queued QUIC event: datagrams, handshake steps, CIDs and termination."""
        connection = self.connection
        event = connection.next_event()
        while event is not None:
            if isinstance(event, events.DatagramFrameReceived):
                if self.state == STATE_UP:
                    on_packets(self, event.data)
                else:
                    self.stats.drop("unauthenticated")
            elif isinstance(event, events.StreamDataReceived):
                self._on_stream_data(event, on_state)
            elif isinstance(event, events.HandshakeCompleted):
                self._on_handshake_completed()
            elif isinstance(event, events.ConnectionIdIssued):
                self.host_cids.add(event.connection_id)
                on_cid(self, event.connection_id, True)
            elif isinstance(event, events.ConnectionIdRetired):
                self.host_cids.discard(event.connection_id)
                on_cid(self, event.connection_id, False)
            elif isinstance(event, events.ConnectionTerminated):
                self._set_closed(event.reason_phrase or f"error {event.error_code:#x}", on_state)
            event = connection.next_event()

    def _on_handshake_completed(self) -> None:
        if self.is_dialer:
            try:
                handshake.check_acceptor_certificate(
                    self.connection.tls._peer_certificate, self.peer_pk or ""
                )
            except handshake.HandshakeError as error:
                self.fail(error)
            return
        nonce, hello = handshake.new_hello()
        self._nonce = nonce
        self._hello_stream = self.connection.get_next_available_stream_id(is_unidirectional=True)
        self.connection.send_stream_data(self._hello_stream, hello)

    def _on_stream_data(self, event: events.StreamDataReceived, on_state: Callable) -> None:
        data = self._stream_buffers.get(event.stream_id, b"") + event.data
        if len(data) > handshake.PROOF_SIZE + handshake.HELLO_SIZE:
            self.fail(
                handshake.HandshakeError("handshake stream too long", handshake.ERROR_PROTOCOL)
            )
            return
        self._stream_buffers[event.stream_id] = data
        try:
            if self.is_dialer:
                self._dialer_stream(data, event.stream_id, on_state)
            else:
                self._acceptor_stream(data, event.end_stream, on_state)
        except handshake.HandshakeError as error:
            self.fail(error)

    def _dialer_stream(self, data: bytes, stream_id: int, on_state: Callable) -> None:
        if len(data) >= handshake.HELLO_SIZE and self._hello_stream is None:
            self._hello_stream = stream_id
            nonce = handshake.parse_hello(data)
            proof = handshake.build_proof(self.identity, acceptor_pk=self.peer_pk, nonce=nonce)
            proof_stream = self.connection.get_next_available_stream_id(is_unidirectional=True)
            self.connection.send_stream_data(proof_stream, proof, end_stream=True)
        if len(data) > handshake.HELLO_SIZE and self.state == STATE_HANDSHAKING:
            if data[handshake.HELLO_SIZE : handshake.HELLO_SIZE + 1] != handshake.ACCEPTED:
                raise handshake.HandshakeError("acceptor sent an unknown handshake message")
            self._set_up(on_state)

    def _acceptor_stream(self, data: bytes, end_stream: bool, on_state: Callable) -> None:
        if not end_stream or self.state != STATE_HANDSHAKING:
            return
        if not self._nonce:
            raise handshake.HandshakeError(
                "proof arrived before the hello", handshake.ERROR_PROTOCOL
            )
        pk = handshake.verify_proof(
            data,
            acceptor_pk=self.identity.pk,
            nonce=self._nonce,
            pow_difficulty=self._pow_difficulty,
        )
        # SECURITY: a valid key and proof of work are not enough: only a peer that a policy of a
        # shared network permits may connect.
        if not self._is_permitted(pk):
            raise handshake.HandshakeError(
                f"peer {pk} is not permitted by any policy", handshake.ERROR_NOT_PERMITTED
            )
        self.peer_pk = pk
        self.connection.send_stream_data(self._hello_stream, handshake.ACCEPTED, end_stream=True)
        self._set_up(on_state)

    def _set_up(self, on_state: Callable) -> None:
        self.state = STATE_UP
        self.last_handshake = time.time()
        self._stream_buffers.clear()
        on_state(self)

    def fail(self, error: handshake.HandshakeError) -> None:
        """Close the connection because authentication failed, with the error's QUIC code."""
        _rejections.log(
            logging.WARNING,
            f"rejected:{self.peer_pk}:{error.code}",
            "peer %s rejected: %s",
            self.peer_pk or "unknown",
            error,
        )
        self.close_reason = str(error)
        self.state = STATE_CLOSED
        self.connection.close(error_code=error.code, reason_phrase=str(error)[:100])

    def close(self, code: int, reason: str) -> None:
        if self.connection._state not in (
            QuicConnectionState.CLOSING,
            QuicConnectionState.DRAINING,
        ):
            self.connection.close(error_code=code, reason_phrase=reason)
        self.close_reason = reason

    def _set_closed(self, reason: str, on_state: Callable) -> None:
        if self.state == STATE_CLOSED:
            return
        self.state = STATE_CLOSED
        self.close_reason = self.close_reason or reason
        on_state(self)

    def send_payload(self, payload: bytes) -> bool:
        """Queue one DATAGRAM frame; return False (and count a drop) when the queue is full."""
        # NOTE: aioquic queues DATAGRAM frames without a limit; its private deque is read
        # to bound the queue.
        if len(self.connection._datagrams_pending) >= MAX_PENDING_DATAGRAMS:
            return False
        self.connection.send_datagram_frame(payload)
        return True

    @property
    def max_payload(self) -> int:
        """The largest IP packet (or packed packets) one datagram carries on the current path."""
        return MAX_DATAGRAM_PAYLOAD if self.path == "direct" else RELAY_DATAGRAM_PAYLOAD

    def seal_datagram(self, payload: bytes) -> bytes:
        """Build one complete 1-RTT QUIC packet with a DATAGRAM frame holding `payload`.

        This is the fast path for IP packets (`quicfast.FastPath`): aioquic neither tracks
        the packet for loss recovery nor counts it against congestion control (the tunneled TCP
        does its own congestion control, as over WireGuard). Call only in state `up`.
        """
        return self._fast.seal(payload)

    def open_datagram(self, data: bytes, now: float | None = None) -> bytes | None:
        """Decrypt a 1-RTT packet that contains exactly one DATAGRAM frame and return its data.

        Returns None when the packet contains anything else (ACKs, streams, pings), uses
        another packet number length or key phase, or does not decrypt; the caller then hands
        the packet to `receive` unchanged. Returns b"" for a replayed packet (counted as a
        "replay" drop; see `quicfast.FastPath.open`).
        """
        payload = self._fast.open(data, now)
        if payload == b"":
            self.stats.drop("replay")
        return payload

    def datagrams(self, now: float) -> list[bytes]:
        """Return the UDP payloads aioquic has queued for `remote`."""
        now = self.clock(now)
        return [data for data, _addr in self.connection.datagrams_to_send(now=now)]

    def handle_timer(self, now: float) -> None:
        """Run aioquic's timer; a terminated connection has none left to run."""
        if self.connection.get_timer() is not None:
            self.connection.handle_timer(self.clock(now))
