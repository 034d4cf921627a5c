"""The agent's HTTP/3 session with one super peer: signaling and the bound relay tunnel.

The session is one aioquic QUIC connection with HTTP/3 on the data plane's UDP socket, so the
reflexive address the super peer observes is the NAT mapping peers must target (see
docs/superpeer-protocol.md). It opens two extended CONNECT requests on that connection:

- the signaling stream (`netsody-signal`), driven by `wire.SignalingClient`: authentication,
  host candidates, `ConnectRequest` for peers and the `PeerCandidates` replies;
- the bound CONNECT-UDP relay tunnel: the super peer binds a public UDP port for this agent,
  and UDP payloads to and from peers travel as HTTP datagrams with an address prefix.

The data plane owns the socket and the timers: it feeds datagrams from the super peer's address
to `receive`, sends what `datagrams` returns, and arms a timer at `timer()` when `timer_due` says
aioquic ran.

Relayed datagrams take a fast path around aioquic (`netsody_common.quicfast`), as the direct
peer path does: `send_relayed` seals each HTTP datagram into its own 1-RTT packet, and
`receive` opens packets that hold exactly one DATAGRAM frame itself. Neither is acknowledged or
congestion-controlled by QUIC (the relayed QUIC connections to peers do their own congestion
control); everything else, with the pings that keep the connection alive, goes through aioquic.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted

from netsody_common import quicfast, wire
from netsody_common.identity import Identity

logger = logging.getLogger(__name__)

# A URL without a port means the standard HTTPS port: operators publish the super peer on
# TCP 443 (HTTP/2) and UDP 443 (HTTP/3) in front of its 8443 listener.
DEFAULT_PORT = 443
# The outer QUIC packets to the super peer carry relayed peer packets of up to
# link.RELAY_UDP_PAYLOAD bytes plus the HTTP datagram and address prefixes.
SUPER_PEER_UDP_PAYLOAD = 1472
# A ping every few seconds keeps the NAT mapping alive. A restarted super peer has none of the
# session's connection IDs and acknowledges nothing, so the session ends after IDLE_TIMEOUT and
# the agent reconnects and binds a new relay port.
PING_INTERVAL = 5.0
IDLE_TIMEOUT = 15.0


class SuperPeerError(ValueError):
    """A super peer URL is invalid."""


def parse_super_peer_url(url: str) -> tuple[str, int]:
    """Return (host, port) of a super peer URL such as `https://sp.example.com/` (port 443)."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https" or not parts.hostname:
        raise SuperPeerError(f"invalid super peer URL {url!r}: use https://HOST[:PORT]")
    return parts.hostname, parts.port or DEFAULT_PORT


def bound_relay_addresses(url: str, headers: dict[bytes, bytes]) -> list[tuple[str, int]] | None:
    """Return the IPv4 relay addresses a super peer bound for this agent, from its response.

    Logs and returns None when the proxy address header is invalid.
    """
    value = headers.get(wire.PROXY_PUBLIC_ADDRESS_HEADER.encode(), b"").decode()
    try:
        parsed = wire.parse_proxy_public_addresses(value)
    except wire.WireError as error:
        logger.warning("super peer %s sent an invalid relay address: %s", url, error)
        return None
    return [(str(ip), port) for ip, port in parsed if ip.version == 4]


class SuperPeerSession:
    """One HTTP/3 connection to one super peer, as a state machine driven by the data plane.

    Callbacks: `on_peer_candidates(pk, candidates)` for every `PeerCandidates` message, and
    `on_relayed(payload, (host, port), session)` for every UDP payload a peer sent to this
    agent's relay port. `connected`, `authenticated`, `relay_addresses` and `rtt` describe
    the session's state.
    """

    kind = "relay-h3"

    def __init__(
        self,
        url: str,
        address: tuple[str, int],
        identity: Identity,
        *,
        host_candidates: tuple[wire.Candidate, ...],
        on_peer_candidates: Callable[[str, tuple[wire.Candidate, ...]], None],
        on_relayed: Callable[[bytes, tuple[str, int], SuperPeerSession], None],
        cafile: str | None = None,
    ) -> None:
        self.url = url
        self.address = address
        self.host, _port = parse_super_peer_url(url)
        self.identity = identity
        self.authenticated = False
        self.closed = False
        self.relay_addresses: list[tuple[str, int]] = []
        self.reflexive: wire.Candidate | None = None
        self.error = ""
        self._on_peer_candidates = on_peer_candidates
        self._on_relayed = on_relayed
        self._signaling = wire.SignalingClient(
            identity.pk, identity.pow_nonce, identity.sign, host_candidates
        )
        self._signal_stream: int | None = None
        self._relay_stream: int | None = None
        self._last_ping = time.monotonic()
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            max_datagram_frame_size=65536,
            max_datagram_size=SUPER_PEER_UDP_PAYLOAD,
            idle_timeout=IDLE_TIMEOUT,
            server_name=self.host,
        )
        if cafile:
            config.load_verify_locations(cafile)
        else:
            config.verify_mode = ssl.CERT_REQUIRED
        self.quic = QuicConnection(configuration=config)
        self.created = time.monotonic()
        self.closed_at: float | None = None
        self._clock = float("-inf")
        self.h3: H3Connection | None = None
        self.timer_handle: Any = None
        # True when aioquic has work since the last `datagrams` call: only then does the data
        # plane ask aioquic for packets and re-arm the timer.
        self._quic_touched = True
        self.timer_due = True
        self._sealed: list[bytes] = []
        # The HTTP datagram prefix of the relay tunnel (its quarter stream ID) once the fast
        # path may run, else b"".
        self._fast_prefix = b""
        self._fast = quicfast.FastPath(self.quic)
        self.fast_drops: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"SuperPeerSession({self.url}, authenticated={self.authenticated})"

    @property
    def rtt(self) -> float:
        """The smoothed round-trip time to the super peer in seconds (aioquic's estimate)."""
        return float(self.quic._loss._rtt_smoothed)

    def _monotonic(self, now: float) -> float:
        # aioquic must never see time go backwards: see `link.PeerLink.clock`.
        self._clock = max(self._clock, now)
        return self._clock

    def connect(self, now: float) -> None:
        self.quic.connect(self.address, now=self._monotonic(now))
        self._quic_touched = True

    def receive(self, data: bytes, now: float) -> None:
        """Feed one UDP payload from the super peer and handle what it caused."""
        if self._fast_prefix and data and data[0] & 0x80 == 0:
            payload = self._fast.open(data, self._monotonic(now))
            if payload:
                self._on_fast_datagram(payload)
                return
            if payload is not None:
                self._fast_drop("replay")
                return
        now = self._monotonic(now)
        self.quic.receive_datagram(data, self.address, now)
        self._quic_touched = True
        self._process(now)

    def _on_fast_datagram(self, data: bytes) -> None:
        prefix = self._fast_prefix
        if data[: len(prefix)] == prefix:
            self._on_relay_datagram(data[len(prefix) :])
        else:
            self._fast_drop("unknown-stream")

    def _fast_drop(self, reason: str) -> None:
        self.fast_drops[reason] = self.fast_drops.get(reason, 0) + 1

    def handle_timer(self, now: float) -> None:
        now = self._monotonic(now)
        self._quic_touched = True
        if self.quic.get_timer() is not None:
            self.quic.handle_timer(now)
        self._process(now)
        self.keep_alive(now)

    def keep_alive(self, now: float) -> bool:
        """Send a signaling ping when the last one is PING_INTERVAL old; True when it did.

        aioquic's own timer runs only when it has work, so the data plane's housekeeping calls
        this too: an idle session would otherwise end at IDLE_TIMEOUT without one ping.
        """
        if not self.authenticated or now - self._last_ping <= PING_INTERVAL:
            return False
        self._last_ping = now
        self._signaling.ping()
        self._flush_signaling()
        return True

    def timer(self) -> float | None:
        return self.quic.get_timer()

    def datagrams(self, now: float) -> list[bytes]:
        """Return the sealed relay packets, then what aioquic queued (only when it ran).

        Sets `timer_due` when aioquic ran, so the caller re-arms the timer.
        """
        out, self._sealed = self._sealed, []
        self.timer_due = self._quic_touched
        if self._quic_touched:
            self._quic_touched = False
            now = self._monotonic(now)
            out += [data for data, _addr in self.quic.datagrams_to_send(now=now)]
            self._update_fast_path()
        return out

    def _update_fast_path(self) -> None:
        """Enable the fast path once the relay tunnel is bound; disable it when closing."""
        if (
            self._relay_stream is not None
            and self.relay_addresses
            and not self.closed
            and self.quic._state == QuicConnectionState.CONNECTED
            and quicfast.can_seal(self.quic)
        ):
            self._fast_prefix = wire.encode_varint(self._relay_stream >> 2)
        else:
            self._fast_prefix = b""

    def request_peer(self, pk: str) -> None:
        """Ask the super peer for the candidates of `pk` (and tell `pk` about this agent)."""
        if self.authenticated:
            self._signaling.request_peer(pk)
            self._flush_signaling()

    def send_relayed(self, payload: bytes, target: tuple[str, int]) -> bool:
        """Send a UDP payload to `target` from this agent's relay port; False when no tunnel."""
        prefix = self._fast_prefix
        if prefix:
            datagram = prefix + wire.encode_bound_datagram(target[0], target[1], payload)
            self._sealed.append(self._fast.seal(datagram))
            return True
        if self.h3 is None or self._relay_stream is None or not self.relay_addresses:
            return False
        datagram = wire.encode_bound_datagram(target[0], target[1], payload)
        self.h3.send_datagram(self._relay_stream, datagram)
        self._quic_touched = True
        return True

    def close(self) -> None:
        self.quic.close(error_code=0, reason_phrase="agent stopping")
        self._quic_touched = True
        self._set_closed()

    def _set_closed(self) -> None:
        self._fast_prefix = b""
        if not self.closed:
            self.closed = True
            self.closed_at = time.monotonic()
        self.authenticated = False

    def _process(self, now: float) -> None:
        event = self.quic.next_event()
        while event is not None:
            if isinstance(event, HandshakeCompleted):
                self.h3 = H3Connection(self.quic)
                self._open_signaling()
            elif isinstance(event, ConnectionTerminated):
                self._set_closed()
                self.error = event.reason_phrase or f"error {event.error_code:#x}"
                logger.warning("super peer %s connection closed: %s", self.url, self.error)
            if self.h3 is not None:
                for h3_event in self.h3.handle_event(event):
                    self._on_h3_event(h3_event)
            event = self.quic.next_event()

    def _open_signaling(self) -> None:
        assert self.h3 is not None
        self._signal_stream = self.quic.get_next_available_stream_id()
        self.h3.send_headers(self._signal_stream, wire.signal_request_headers(self.host))

    def _open_relay(self) -> None:
        assert self.h3 is not None
        self._relay_stream = self.quic.get_next_available_stream_id()
        self.h3.send_headers(self._relay_stream, wire.relay_request_headers(self.host))

    def _on_h3_event(self, event: Any) -> None:
        if isinstance(event, DatagramReceived):
            if event.stream_id == self._relay_stream:
                self._on_relay_datagram(event.data)
        elif isinstance(event, DataReceived):
            if event.stream_id == self._signal_stream and event.data:
                self._on_signaling_data(event.data)
        elif isinstance(event, HeadersReceived):
            self._on_headers(event)

    def _on_headers(self, event: HeadersReceived) -> None:
        headers = dict(event.headers)
        status = headers.get(b":status", b"")
        if event.stream_id == self._signal_stream and status != b"200":
            self.error = f"signaling refused with status {status.decode()}"
            logger.warning("super peer %s: %s", self.url, self.error)
        elif event.stream_id == self._relay_stream:
            if status != b"200":
                code = headers.get(wire.ERROR_CODE_HEADER.encode(), b"").decode()
                logger.warning(
                    "super peer %s rejected the relay tunnel request: status %s, code %s",
                    self.url,
                    status.decode(),
                    code or "none",
                )
                return
            addresses = bound_relay_addresses(self.url, headers)
            if addresses is None:
                return
            self.relay_addresses = addresses
            self._update_fast_path()
            logger.info("super peer %s relay tunnel bound to %s", self.url, self.relay_addresses)

    def _on_signaling_data(self, data: bytes) -> None:
        try:
            messages = self._signaling.receive_data(data)
        except wire.WireError as error:
            self.error = f"invalid signaling message: {error}"
            logger.warning("super peer %s: %s", self.url, self.error)
            return
        self._flush_signaling()
        for message in messages:
            if isinstance(message, wire.Authenticated):
                self.authenticated = True
                self.reflexive = message.reflexive
                logger.info(
                    "super peer %s session authenticated, reflexive address %s",
                    self.url,
                    message.reflexive,
                )
                self._open_relay()
            elif isinstance(message, wire.Rejected):
                self.error = f"rejected ({message.code.name}): {message.reason}"
                logger.warning("super peer %s %s", self.url, self.error)
            elif isinstance(message, wire.PeerCandidates):
                self._on_peer_candidates(message.peer_pk, message.candidates)
            elif isinstance(message, wire.PeerUnavailable):
                logger.debug(
                    "super peer %s: peer %s unavailable: %s",
                    self.url,
                    message.peer_pk,
                    message.reason,
                )

    def _on_relay_datagram(self, data: bytes) -> None:
        try:
            host, port, payload = wire.decode_bound_datagram(data)
        except wire.WireError as error:
            logger.debug("super peer %s sent a malformed relay datagram: %s", self.url, error)
            return
        self._on_relayed(payload, (host, port), self)

    def _flush_signaling(self) -> None:
        data = self._signaling.data_to_send()
        if data and self.h3 is not None and self._signal_stream is not None:
            self.h3.send_data(self._signal_stream, data, end_stream=False)
            self._quic_touched = True
