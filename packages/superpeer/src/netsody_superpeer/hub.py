"""Signaling sessions, peer coordination and relay tunnels, independent of the transport.

The HTTP/3 and HTTP/2 servers translate their events into calls on `Hub` and implement
`Connection` for the way back. The hub itself does no I/O apart from the relay sockets.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from ipaddress import ip_address
from typing import Protocol

from netsody_common.identity import verify_pow, verify_signature
from netsody_common.wire import (
    CAPSULE_DATAGRAM,
    CHALLENGE_SIZE,
    Authenticate,
    Authenticated,
    Candidate,
    CandidateKind,
    CapsuleReader,
    Challenge,
    ConnectRequest,
    ErrorCode,
    Message,
    MessageReader,
    PeerCandidates,
    PeerUnavailable,
    Ping,
    Pong,
    Rejected,
    UpdateCandidates,
    WireError,
    auth_payload,
    encode_message,
)
from netsody_superpeer.config import Settings
from netsody_superpeer.logutil import warn_repeated
from netsody_superpeer.metrics import Stats
from netsody_superpeer.relay import Relay, TokenBucket, Tunnel

logger = logging.getLogger(__name__)

CONNECT_REQUESTS_PER_SECOND = 20.0
CONNECT_REQUEST_BURST = 40.0
# Unsent signaling output beyond this closes the session: the agent does not read its stream.
MAX_PENDING_OUTPUT = 256 * 1024


class Connection(Protocol):
    """One HTTP/3 or HTTP/2 connection: the interface through which the hub sends."""

    transport_name: str  # "h3" or "h2"
    remote_ip: str
    session: SignalSession | None

    def reflexive_address(self) -> tuple[str, int] | None:
        """Return the UDP source address of the connection (HTTP/3 only)."""

    def send_stream(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send bytes on a request stream; `end` finishes the stream."""

    def reset_stream(self, stream_id: int) -> None:
        """Abort a request stream with an error code."""

    def send_http_datagram(self, stream_id: int, payload: bytes) -> bool:
        """Send an HTTP datagram on a stream; return False when it was dropped."""

    def pending_output(self, stream_id: int) -> int:
        """Return the bytes queued and not yet sent on a stream."""

    def close(self, reason: str) -> None:
        """Close the whole connection with an error code."""


class SignalSession:
    """The server side of one signaling stream.

    Driven by `receive_data`; sends through its `Connection`. It starts unauthenticated with a
    fresh challenge and becomes registered under its pk after a valid `Authenticate`.
    """

    def __init__(self, hub: Hub, conn: Connection, stream_id: int, now: float) -> None:
        self.hub = hub
        self.conn = conn
        self.stream_id = stream_id
        self.pk: str | None = None
        self.host_candidates: tuple[Candidate, ...] = ()
        self.tunnels: set[Tunnel] = set()
        self.opened = now
        self.last_seen = now
        self.closed = False
        self._challenge = secrets.token_bytes(CHALLENGE_SIZE)
        self._reader = MessageReader()
        self._requests = TokenBucket(CONNECT_REQUESTS_PER_SECOND, now, CONNECT_REQUEST_BURST)

    @property
    def node(self) -> str:
        return self.pk[:16] if self.pk else "unauthenticated"

    def start(self) -> None:
        self.send(Challenge(self._challenge, self.hub.pow_difficulty))

    def send(self, message: Message) -> None:
        if self.closed:
            return
        if self.conn.pending_output(self.stream_id) > MAX_PENDING_OUTPUT:
            self.hub.close_session(self, "agent does not read its signaling stream")
            self.conn.reset_stream(self.stream_id)
            return
        self.conn.send_stream(self.stream_id, encode_message(message))

    def reject(self, code: ErrorCode, reason: str) -> None:
        """Send `Rejected`, end the stream and forget the session."""
        if self.closed:
            return
        self.send(Rejected(code, reason))
        self.conn.send_stream(self.stream_id, b"", end=True)
        self.hub.close_session(self, f"rejected: {code.name.lower()}: {reason}")

    def receive_data(self, data: bytes, now: float) -> None:
        if self.closed:
            return
        self.last_seen = now
        try:
            messages = self._reader.feed(data)
        except WireError as exc:
            self.reject(ErrorCode.MALFORMED, f"malformed message: {exc}")
            return
        for message in messages:
            if self.closed:
                return
            self._handle(message, now)

    def _handle(self, message: Message, now: float) -> None:
        if self.pk is None:
            if isinstance(message, Authenticate):
                self._authenticate(message)
            else:
                self.reject(ErrorCode.NOT_AUTHENTICATED, "send Authenticate first")
            return
        if isinstance(message, ConnectRequest):
            self._connect(message, now)
        elif isinstance(message, UpdateCandidates):
            self.host_candidates = _host_only(message.candidates)
        elif isinstance(message, Ping):
            self.send(Pong(message.value))
        elif isinstance(message, Pong):
            pass
        else:
            self.reject(ErrorCode.UNEXPECTED_MESSAGE, f"{type(message).__name__} not expected")

    def _authenticate(self, message: Authenticate) -> None:
        hub = self.hub
        # SECURITY: the signature over our fresh challenge proves that the agent has the private
        # key, and the proof of work makes minting identities expensive.
        if not verify_signature(
            message.pk, auth_payload(self._challenge, message.pk), message.signature
        ):
            hub.stats.authentications["bad_signature"] += 1
            self.reject(ErrorCode.BAD_SIGNATURE, "signature over the challenge is invalid")
            return
        if not verify_pow(message.pk, message.pow_nonce, hub.pow_difficulty):
            hub.stats.authentications["weak_pow"] += 1
            self.reject(
                ErrorCode.WEAK_PROOF_OF_WORK,
                f"proof of work has fewer than {hub.pow_difficulty} leading zero bits: "
                "generate a new identity",
            )
            return
        hub.stats.authentications["ok"] += 1
        self.pk = message.pk
        self.host_candidates = _host_only(message.candidates)
        hub.register(self)
        self.send(Authenticated(self.reflexive()))

    def reflexive(self) -> Candidate | None:
        address = self.conn.reflexive_address()
        if address is None:
            return None
        return Candidate(CandidateKind.REFLEXIVE, ip_address(address[0]), address[1])

    def candidates(self) -> tuple[Candidate, ...]:
        result = list(self.host_candidates)
        reflexive = self.reflexive()
        if reflexive is not None:
            result.append(reflexive)
        for tunnel in self.tunnels:
            result.extend(
                Candidate(CandidateKind.RELAY, ip, tunnel.port)
                for ip in tunnel.relay.public_addresses
            )
        return tuple(result[-64:])

    def _connect(self, message: ConnectRequest, now: float) -> None:
        hub = self.hub
        if not self._requests.take(1, now):
            hub.stats.coordinations["rate_limited"] += 1
            self.send(
                PeerUnavailable(
                    message.request_id,
                    message.peer_pk,
                    ErrorCode.RATE_LIMITED,
                    "too many connect requests",
                )
            )
            return
        peer = hub.sessions.get(message.peer_pk)
        if peer is None or peer is self:
            hub.stats.coordinations["peer_offline"] += 1
            self.send(
                PeerUnavailable(
                    message.request_id,
                    message.peer_pk,
                    ErrorCode.PEER_OFFLINE,
                    "peer has no session on this super peer",
                )
            )
            return
        hub.stats.coordinations["ok"] += 1
        assert self.pk is not None
        # Both sides learn each other's candidates in the same event-loop step, so they probe
        # at the same time and both NAT mappings open (hole punching).
        self.send(PeerCandidates(message.request_id, peer.pk or "", peer.candidates()))
        peer.send(PeerCandidates(0, self.pk, self.candidates()))
        logger.debug("coordinated %s with %s", self.node, peer.node)


def _host_only(candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    # SECURITY: agents report host candidates only; reflexive and relay kinds come from us.
    return tuple(c for c in candidates if c.kind == CandidateKind.HOST)


class Hub:
    """All sessions and tunnels of one super peer process."""

    def __init__(self, settings: Settings, stats: Stats, relay: Relay, pow_difficulty: int) -> None:
        self.settings = settings
        self.stats = stats
        self.relay = relay
        self.pow_difficulty = pow_difficulty
        self.sessions: dict[str, SignalSession] = {}
        self.pending: set[SignalSession] = set()
        self._per_address: Counter[str] = Counter()
        self._connections = 0

    # Connections ---------------------------------------------------------------------------

    def admit_connection(self, conn: Connection) -> bool:
        """Count a new connection; return False when a limit forbids it."""
        if self._connections >= self.settings.max_sessions:
            self.stats.drops["too_many_connections"] += 1
            warn_repeated(
                logger,
                "max_sessions",
                "rejected connection from %s: the limit of %d connections is reached",
                conn.remote_ip,
                self.settings.max_sessions,
            )
            return False
        if self._per_address[conn.remote_ip] >= self.settings.max_sessions_per_address:
            self.stats.drops["too_many_connections_per_address"] += 1
            warn_repeated(
                logger,
                f"per_address:{conn.remote_ip}",
                "rejected connection from %s: the limit of %d connections per address is reached",
                conn.remote_ip,
                self.settings.max_sessions_per_address,
            )
            return False
        self._connections += 1
        self._per_address[conn.remote_ip] += 1
        self.stats.connections[conn.transport_name] += 1
        return True

    def release_connection(self, conn: Connection) -> None:
        """Forget a closed connection with its session and tunnels."""
        self._connections -= 1
        self.stats.connections[conn.transport_name] -= 1
        self._per_address[conn.remote_ip] -= 1
        if self._per_address[conn.remote_ip] <= 0:
            del self._per_address[conn.remote_ip]
        if conn.session is not None:
            self.close_session(conn.session, "connection closed")
        for tunnel in [t for t in self.relay.tunnels if t.conn is conn]:
            self.close_tunnel(tunnel, "connection closed", reset=False)

    # Signaling -----------------------------------------------------------------------------

    def open_session(self, conn: Connection, stream_id: int) -> SignalSession:
        session = SignalSession(self, conn, stream_id, time.monotonic())
        if conn.session is not None:
            conn.session.reject(ErrorCode.REPLACED, "a newer signaling stream opened")
        conn.session = session
        self.pending.add(session)
        return session

    def register(self, session: SignalSession) -> None:
        assert session.pk is not None
        self.pending.discard(session)
        old = self.sessions.get(session.pk)
        if old is not None:
            old.reject(ErrorCode.REPLACED, "the same node opened a newer session")
        self.sessions[session.pk] = session
        self.stats.sessions[session.conn.transport_name] += 1
        logger.info(
            "session opened node_id=%s transport=%s address=%s",
            session.pk,
            session.conn.transport_name,
            session.conn.remote_ip,
        )

    def close_session(self, session: SignalSession, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        self.pending.discard(session)
        if session.conn.session is session:
            session.conn.session = None
        if session.pk is not None and self.sessions.get(session.pk) is session:
            del self.sessions[session.pk]
            self.stats.sessions[session.conn.transport_name] -= 1
            logger.info(
                "session closed node_id=%s transport=%s reason=%s",
                session.pk,
                session.conn.transport_name,
                reason,
            )
        elif reason.startswith("rejected"):
            warn_repeated(
                logger,
                f"reject:{session.conn.remote_ip}:{reason}",
                "rejected session from %s transport=%s: %s",
                session.conn.remote_ip,
                session.conn.transport_name,
                reason,
            )
        for tunnel in list(session.tunnels):
            self.close_tunnel(tunnel, "signaling session ended")

    # Relay ---------------------------------------------------------------------------------

    def open_tunnel(
        self, conn: Connection, stream_id: int
    ) -> tuple[int, ErrorCode | None, Tunnel | None]:
        """Bind a relay port for an authenticated connection; return (status, error, tunnel)."""
        session = conn.session
        if session is None or session.pk is None:
            self._reject_request(conn, "relay request without an authenticated signaling stream")
            return 403, ErrorCode.NOT_AUTHENTICATED, None
        if not self.relay.enabled:
            self._reject_request(conn, "relay disabled: no --proxy-public-addresses")
            return 501, ErrorCode.PORT_POOL_EXHAUSTED, None
        if len(session.tunnels) >= self.settings.max_ports_per_agent:
            self._reject_request(conn, f"node {session.node} holds its maximum of relay ports")
            return 429, ErrorCode.RELAY_LIMIT, None
        tunnel = self.relay.open(conn, stream_id, session.pk)
        if tunnel is None:
            self.stats.drops["port_pool_exhausted"] += 1
            self._reject_request(conn, "relay port pool exhausted")
            return 503, ErrorCode.PORT_POOL_EXHAUSTED, None
        session.tunnels.add(tunnel)
        logger.info(
            "relay port %d bound node_id=%s transport=%s",
            tunnel.port,
            session.pk,
            conn.transport_name,
        )
        return 200, None, tunnel

    def close_tunnel(self, tunnel: Tunnel, reason: str, *, reset: bool = True) -> None:
        if tunnel.closed:
            return
        self.relay.close(tunnel)
        session = self.sessions.get(tunnel.pk)
        if session is not None:
            session.tunnels.discard(tunnel)
        if tunnel.conn.session is not None:
            tunnel.conn.session.tunnels.discard(tunnel)
        if reset:
            tunnel.conn.reset_stream(tunnel.stream_id)
        logger.info("relay port %d released node_id=%s reason=%s", tunnel.port, tunnel.pk, reason)

    def tunnel_capsules(self, tunnel: Tunnel, reader: CapsuleReader, data: bytes) -> None:
        """Feed CONNECT-UDP stream bytes to `reader` and relay the tunnel's DATAGRAM capsules.

        A malformed capsule counts as a drop and closes the tunnel; other capsule types are
        ignored.
        """
        try:
            capsules = reader.feed(data)
        except WireError as exc:
            self.stats.drops["malformed_capsule"] += 1
            remote_ip = tunnel.conn.remote_ip
            warn_repeated(
                logger, f"capsule:{remote_ip}", "malformed capsule from %s: %s", remote_ip, exc
            )
            self.close_tunnel(tunnel, f"malformed capsule: {exc}")
            return
        for capsule_type, value in capsules:
            if capsule_type == CAPSULE_DATAGRAM:
                tunnel.from_agent(value)

    def _reject_request(self, conn: Connection, reason: str) -> None:
        warn_repeated(
            logger,
            f"request:{conn.remote_ip}:{reason}",
            "rejected request from %s transport=%s: %s",
            conn.remote_ip,
            conn.transport_name,
            reason,
        )

    # Timers --------------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Close sessions that did not authenticate in time, idle sessions and idle tunnels."""
        deadline = now - self.settings.auth_timeout
        for session in [s for s in self.pending if s.opened < deadline]:
            session.reject(ErrorCode.AUTHENTICATION_TIMEOUT, "no Authenticate in time")
            session.conn.close("authentication timed out")
        idle = now - self.settings.session_idle_timeout
        for session in [s for s in self.sessions.values() if s.last_seen < idle]:
            session.reject(ErrorCode.IDLE_TIMEOUT, "no message for too long")
        idle = now - self.settings.relay_idle_timeout
        for tunnel in [t for t in self.relay.tunnels if t.last_activity < idle]:
            self.close_tunnel(tunnel, "idle timeout")

    def shutdown(self) -> None:
        for session in list(self.sessions.values()) + list(self.pending):
            session.reject(ErrorCode.SHUTTING_DOWN, "the super peer is stopping")
        for tunnel in list(self.relay.tunnels):
            self.close_tunnel(tunnel, "shutting down")
