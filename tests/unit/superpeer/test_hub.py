"""The transport-independent core of the super peer, driven through an in-memory connection."""

from __future__ import annotations

import argparse
import logging
from ipaddress import ip_address
from pathlib import Path

import pytest

from netsody_common.identity import Identity
from netsody_common.wire import (
    Authenticate,
    Authenticated,
    Candidate,
    CandidateKind,
    Challenge,
    ConnectRequest,
    ErrorCode,
    MessageReader,
    PeerCandidates,
    PeerUnavailable,
    Rejected,
    auth_payload,
    encode_message,
)
from netsody_superpeer.config import Settings, build_parser, parse_settings
from netsody_superpeer.errors import ConfigError
from netsody_superpeer.hub import Hub, SignalSession
from netsody_superpeer.logutil import RepeatLimiter
from netsody_superpeer.metrics import Stats
from netsody_superpeer.relay import Relay, TokenBucket

DIFFICULTY = 4


class FakeConnection:
    """Test double of an HTTP connection: records what the hub sends."""

    def __init__(self, transport: str = "h3", ip: str = "192.0.2.1") -> None:
        self.transport_name = transport
        self.remote_ip = ip
        self.session: SignalSession | None = None
        self.sent = bytearray()
        self.ended = False
        self.closed: str | None = None

    def reflexive_address(self) -> tuple[str, int] | None:
        return (self.remote_ip, 40000) if self.transport_name == "h3" else None

    def send_stream(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        self.sent += data
        self.ended = self.ended or end

    def reset_stream(self, stream_id: int) -> None:
        self.ended = True

    def send_http_datagram(self, stream_id: int, payload: bytes) -> bool:
        return True

    def pending_output(self, stream_id: int) -> int:
        return 0

    def close(self, reason: str) -> None:
        self.closed = reason


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "listen_host": "127.0.0.1",
        "listen_port": 8443,
        "cert": Path("c"),
        "key": Path("k"),
        "alt_svc_port": 8443,
        "proxy_public_addresses": (),
        "proxy_ports": range(1, 3),
        "prometheus_listen": None,
        "prometheus_token": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def hub() -> Hub:
    stats = Stats()
    relay = Relay((), range(1, 3), stats, pps=10, bps=1000, total_bps=1000)
    return Hub(make_settings(max_sessions_per_address=2), stats, relay, DIFFICULTY)


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate(DIFFICULTY, progress=False)


def messages(conn: FakeConnection) -> list[object]:
    found = MessageReader().feed(bytes(conn.sent))
    conn.sent.clear()
    return found


def authenticate(
    hub: Hub, conn: FakeConnection, identity: Identity, candidates: tuple[Candidate, ...] = ()
) -> SignalSession:
    assert hub.admit_connection(conn)
    session = hub.open_session(conn, 0)
    session.start()
    [challenge] = messages(conn)
    assert isinstance(challenge, Challenge)
    assert challenge.pow_difficulty == DIFFICULTY
    signature = identity.sign(auth_payload(challenge.nonce, identity.pk))
    session.receive_data(
        encode_message(Authenticate(identity.pk, identity.pow_nonce, signature, candidates)), 0.0
    )
    return session


def test_session_authenticates(hub: Hub, identity: Identity) -> None:
    conn = FakeConnection()

    authenticate(hub, conn, identity)

    [answer] = messages(conn)
    assert answer == Authenticated(
        Candidate(CandidateKind.REFLEXIVE, ip_address("192.0.2.1"), 40000)
    )
    assert hub.sessions[identity.pk].conn is conn
    assert hub.stats.sessions["h3"] == 1


def test_challenge_reused_by_other_session_fails(hub: Hub, identity: Identity) -> None:
    conn = FakeConnection()
    hub.admit_connection(conn)
    session = hub.open_session(conn, 0)
    session.start()
    messages(conn)
    signature = identity.sign(auth_payload(b"\x00" * 32, identity.pk))

    session.receive_data(
        encode_message(Authenticate(identity.pk, identity.pow_nonce, signature, ())), 0.0
    )

    [answer] = messages(conn)
    assert isinstance(answer, Rejected)
    assert answer.code == ErrorCode.BAD_SIGNATURE
    assert conn.ended
    assert identity.pk not in hub.sessions


def test_reported_reflexive_candidates_ignored(hub: Hub, identity: Identity) -> None:
    forged = Candidate(CandidateKind.REFLEXIVE, ip_address("203.0.113.1"), 1)
    host = Candidate(CandidateKind.HOST, ip_address("10.0.0.1"), 2)

    session = authenticate(hub, FakeConnection(), identity, (forged, host))

    assert session.host_candidates == (host,)


def test_connect_request_rate_limited(hub: Hub, identity: Identity) -> None:
    conn = FakeConnection()
    session = authenticate(hub, conn, identity)
    messages(conn)
    other = "cd" * 32

    for request_id in range(1, 60):
        session.receive_data(encode_message(ConnectRequest(request_id, other)), session.opened)

    answers = messages(conn)
    codes = [a.code for a in answers if isinstance(a, PeerUnavailable)]
    assert codes.count(ErrorCode.PEER_OFFLINE) == 40
    assert codes.count(ErrorCode.RATE_LIMITED) == 19


def test_coordination_reaches_both(hub: Hub, identity: Identity) -> None:
    other = Identity.generate(DIFFICULTY, progress=False)
    conn_a, conn_b = FakeConnection("h3", "192.0.2.1"), FakeConnection("h2", "192.0.2.2")
    session_a = authenticate(hub, conn_a, identity)
    authenticate(hub, conn_b, other)
    messages(conn_a)
    messages(conn_b)

    session_a.receive_data(encode_message(ConnectRequest(9, other.pk)), session_a.opened)

    [to_a] = messages(conn_a)
    [to_b] = messages(conn_b)
    assert isinstance(to_a, PeerCandidates)
    assert to_a.request_id == 9
    assert to_a.candidates == ()
    assert isinstance(to_b, PeerCandidates)
    assert to_b.peer_pk == identity.pk
    assert [c.kind for c in to_b.candidates] == [CandidateKind.REFLEXIVE]


def test_connections_per_address_limited(hub: Hub) -> None:
    assert hub.admit_connection(FakeConnection())
    assert hub.admit_connection(FakeConnection())
    third = FakeConnection()

    assert not hub.admit_connection(third)
    assert hub.stats.drops["too_many_connections_per_address"] == 1


def test_sweep_closes_unauthenticated_and_idle(hub: Hub, identity: Identity) -> None:
    pending = FakeConnection(ip="192.0.2.9")
    hub.admit_connection(pending)
    hub.open_session(pending, 0)
    active = FakeConnection(ip="192.0.2.10")
    session = authenticate(hub, active, identity)
    session.last_seen = 0.0

    hub.sweep(session.opened + 1000.0)

    assert pending.closed == "authentication timed out"
    assert identity.pk not in hub.sessions
    assert isinstance(messages(active)[-1], Rejected)


def test_relay_disabled_without_addresses(hub: Hub, identity: Identity) -> None:
    conn = FakeConnection()
    authenticate(hub, conn, identity)

    status, code, tunnel = hub.open_tunnel(conn, 4)

    assert (status, code, tunnel) == (501, ErrorCode.PORT_POOL_EXHAUSTED, None)


def test_token_bucket_refills() -> None:
    bucket = TokenBucket(100.0, now=0.0)

    taken = sum(bucket.take(1, 0.0) for _ in range(100))

    assert taken == 25  # a quarter second of burst
    assert bucket.take(10, 0.1)
    assert not bucket.take(10, 0.1)


def test_repeat_limiter_demotes_repeats() -> None:
    limiter = RepeatLimiter(window=60.0)

    assert limiter.level("x", now=0.0) == logging.WARNING
    assert limiter.level("x", now=30.0) == logging.DEBUG
    assert limiter.level("y", now=30.0) == logging.WARNING
    assert limiter.level("x", now=61.0) == logging.WARNING


def parse(argv: list[str], env: dict[str, str]) -> Settings:
    args: argparse.Namespace = build_parser().parse_args(argv)
    return parse_settings(args, env)


def test_settings_from_environment() -> None:
    settings = parse(
        [],
        {
            "NETSODY_SP_DOMAIN": "sp.example.com",
            "NETSODY_SP_ALT_SVC_PORT": "443",
            "NETSODY_SP_PROXY_PUBLIC_ADDRESSES": "203.0.113.10, 2001:db8::10",
            "NETSODY_PROMETHEUS_LISTEN": "[::]:9898",
            "PROMETHEUS_TOKEN": "s3cret-token",
        },
    )

    assert settings.cert == Path("/etc/letsencrypt/live/sp.example.com/fullchain.pem")
    assert settings.key == Path("/etc/letsencrypt/live/sp.example.com/privkey.pem")
    assert (settings.listen_host, settings.listen_port) == ("::", 8443)
    assert settings.alt_svc_port == 443
    assert [str(a) for a in settings.proxy_public_addresses] == ["203.0.113.10", "2001:db8::10"]
    assert settings.proxy_ports == range(49152, 49408)
    assert settings.prometheus_listen == ("::", 9898)
    assert "s3cret-token" not in repr(settings)


def test_flags_win_over_environment() -> None:
    settings = parse(
        [
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--alt-svc-port",
            "8443",
            "--proxy-ports",
            "1000-1001",
        ],
        {"NETSODY_SP_ALT_SVC_PORT": "443", "NETSODY_SP_PROXY_PORT_RANGE": "5-6"},
    )

    assert settings.alt_svc_port == 8443
    assert settings.proxy_ports == range(1000, 1002)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no certificate configured"),
        (["--cert", "c", "--key", "k", "--listen", "8443"], "--listen: '8443' is not HOST:PORT"),
        (
            ["--cert", "c", "--key", "k", "--proxy-public-addresses", "sp.example.com"],
            "'sp.example.com' is not an IPv4 or IPv6 address",
        ),
        (["--cert", "c", "--key", "k", "--relay-pps", "0"], "--relay-pps: 0 must be greater"),
    ],
)
def test_invalid_settings_rejected(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(argv, {})
