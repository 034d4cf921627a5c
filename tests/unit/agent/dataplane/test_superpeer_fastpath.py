"""The relay fast path of the agent's HTTP/3 session, against an aioquic server in memory.

The server side is a plain aioquic QuicConnection. The session's relay tunnel is marked as
bound directly (stream 4, quarter stream ID 1), because binding it through the signaling
protocol needs a super peer (tests/integration/superpeer/test_fast_path.py does that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import DatagramFrameReceived

from netsody_agent.dataplane.superpeer import PING_INTERVAL, SuperPeerSession
from netsody_common import quicfast, wire
from netsody_common.identity import Identity
from netsody_common.selfsigned import self_signed_certificate, write_pem

SERVER = ("127.0.0.1", 8443)
CLIENT = ("127.0.0.1", 41641)
PEER = ("127.0.0.1", 50001)
RELAY_STREAM = 4


def write_certificate(directory: Path) -> tuple[Path, Any, Any]:
    cert, key = self_signed_certificate(
        "localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], days=1
    )
    path = directory / "cert.pem"
    write_pem(cert, key, cert_path=path, key_path=directory / "key.pem")
    return path, cert, key


class Pair:
    """A SuperPeerSession and the aioquic server connection it talks to."""

    def __init__(self, tmp_path: Path) -> None:
        cafile, cert, key = write_certificate(tmp_path)
        self.relayed: list[tuple[bytes, tuple[str, int]]] = []
        self.session = SuperPeerSession(
            f"https://localhost:{SERVER[1]}",
            SERVER,
            Identity.generate(8, progress=False),
            host_candidates=(),
            on_peer_candidates=lambda _pk, _candidates: None,
            on_relayed=lambda payload, source, _session: self.relayed.append((payload, source)),
            cafile=str(cafile),
        )
        config = QuicConfiguration(
            is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
        )
        config.certificate = cert
        config.private_key = key
        self.session.connect(1.0)
        first = self.session.datagrams(1.0)
        self.server = QuicConnection(
            configuration=config,
            original_destination_connection_id=self.session.quic.original_destination_connection_id,
        )
        for data in first:
            self.server.receive_datagram(data, CLIENT, 1.0)
        self.pump()

    def pump(self, now: float = 1.0) -> None:
        for _ in range(20):
            moved = False
            for data in self.session.datagrams(now):
                self.server.receive_datagram(data, CLIENT, now)
                moved = True
            for data, _addr in self.server.datagrams_to_send(now):
                self.session.receive(data, now)
                moved = True
            if not moved:
                return

    def bind_tunnel(self) -> None:
        self.session._relay_stream = RELAY_STREAM
        self.session.relay_addresses = [("127.0.0.1", 50000)]
        self.session._update_fast_path()  # as when the super peer's response binds it

    def server_datagrams(self) -> list[bytes]:
        result = []
        while (event := self.server.next_event()) is not None:
            if isinstance(event, DatagramFrameReceived):
                result.append(event.data)
        return result


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    pair = Pair(tmp_path)
    assert pair.session.h3 is not None, pair.session.error
    pair.bind_tunnel()
    pair.server_datagrams()
    return pair


def http_datagram(quarter: int, payload: bytes) -> bytes:
    return wire.encode_varint(quarter) + wire.encode_bound_datagram(*PEER, payload)


def test_relayed_datagrams_are_sealed_outside_aioquic(pair: Pair) -> None:
    session = pair.session
    assert session.send_relayed(b"to the peer", PEER)
    assert session.send_relayed(b"and more", PEER)
    packets = session.datagrams(2.0)

    assert len(packets) == 2
    assert not session.timer_due  # aioquic did not run, so its timer stays as armed
    assert not session.quic._datagrams_pending
    for packet in packets:
        pair.server.receive_datagram(packet, CLIENT, 2.0)
    assert pair.server_datagrams() == [
        http_datagram(RELAY_STREAM >> 2, b"to the peer"),
        http_datagram(RELAY_STREAM >> 2, b"and more"),
    ]


def test_sealed_datagram_opened_once(pair: Pair) -> None:
    packet = quicfast.seal_datagram(pair.server, http_datagram(1, b"from the peer"))
    pair.session.receive(packet, 2.0)
    pair.session.receive(packet, 2.0)

    assert pair.relayed == [(b"from the peer", PEER)]
    assert pair.session.fast_drops == {"replay": 1}


def test_datagrams_aioquic_built_fall_back_to_http3(pair: Pair) -> None:
    pair.server.send_datagram_frame(http_datagram(1, b"framed by aioquic"))
    for data, _addr in pair.server.datagrams_to_send(2.0):
        pair.session.receive(data, 2.0)

    assert pair.relayed == [(b"framed by aioquic", PEER)]
    assert pair.session.fast_drops == {}


def test_malformed_and_foreign_datagrams_are_counted_not_relayed(pair: Pair) -> None:
    cid = pair.server._peer_cid.cid
    for payload in (
        http_datagram(7, b"another stream"),
        b"\x01\x09 not an address",
        b"",
    ):
        pair.session.receive(quicfast.seal_datagram(pair.server, payload), 2.0)
    pair.session.receive(b"\x40" + cid + b"\x00" * 40, 2.0)  # does not decrypt
    pair.session.receive(b"\x40", 2.0)

    assert pair.relayed == []
    assert pair.session.fast_drops["unknown-stream"] == 1
    assert not pair.session.closed


def test_no_fast_path_after_close(pair: Pair) -> None:
    pair.session.close()
    pair.session.send_relayed(b"too late", PEER)
    packets = pair.session.datagrams(2.0)
    for packet in packets:
        pair.server.receive_datagram(packet, CLIENT, 2.0)

    assert pair.server_datagrams() == []


def test_keep_alive_pings_an_idle_session(pair: Pair) -> None:
    session = pair.session
    session.authenticated = True
    session._last_ping = 1.0

    assert not session.keep_alive(1.0 + PING_INTERVAL / 2)
    assert session.keep_alive(2.0 + PING_INTERVAL)
    sent = session.datagrams(2.0 + PING_INTERVAL)

    # The ping rides aioquic's signaling stream, which the super peer acknowledges: that
    # acknowledgement restarts the session's idle timer.
    assert sent
    assert session.timer_due
