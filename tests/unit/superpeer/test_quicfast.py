"""netsody_common.quicfast against real aioquic connections, handshaken in memory."""

from __future__ import annotations

import os

import pytest
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import DatagramFrameReceived, QuicEvent

from netsody_common import quicfast
from netsody_common.selfsigned import self_signed_certificate

CLIENT_ADDRESS = ("127.0.0.1", 40000)
SERVER_ADDRESS = ("127.0.0.1", 8443)


def pump(client: QuicConnection, server: QuicConnection, now: float) -> None:
    """Deliver every queued packet in both directions until neither side has more."""
    for _ in range(20):
        moved = False
        for data, _addr in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT_ADDRESS, now)
            moved = True
        for data, _addr in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER_ADDRESS, now)
            moved = True
        if not moved:
            return


def events(connection: QuicConnection) -> list[QuicEvent]:
    result = []
    while (event := connection.next_event()) is not None:
        result.append(event)
    return result


@pytest.fixture
def pair() -> tuple[QuicConnection, QuicConnection]:
    """A client and a server connection with the handshake complete (HTTP/3 ALPN)."""
    cert, key = self_signed_certificate("localhost", days=1)
    server_config = QuicConfiguration(
        is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    server_config.certificate = cert
    server_config.private_key = key
    client_config = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    client_config.verify_mode = 0  # ssl.CERT_NONE: the certificate is not under test
    client = QuicConnection(configuration=client_config)
    client.connect(SERVER_ADDRESS, now=1.0)
    initial = client.datagrams_to_send(1.0)
    server = QuicConnection(
        configuration=server_config,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    for data, _addr in initial:
        server.receive_datagram(data, CLIENT_ADDRESS, 1.0)
    pump(client, server, 1.0)
    assert quicfast.can_seal(client)
    assert quicfast.can_seal(server)
    events(client)
    events(server)
    return client, server


def test_cannot_seal_before_the_handshake() -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    assert not quicfast.can_seal(QuicConnection(configuration=config))


def test_sealed_packets_are_accepted_by_aioquic(pair: tuple) -> None:
    client, server = pair
    packets = [quicfast.seal_datagram(client, b"\x00relayed %d" % n) for n in range(3)]
    packets.append(quicfast.seal_datagram(server, b"toward the client"))
    for packet in packets[:3]:
        server.receive_datagram(packet, CLIENT_ADDRESS, 2.0)
    client.receive_datagram(packets[3], SERVER_ADDRESS, 2.0)

    assert len(packets[0]) == len(b"\x00relayed 0") + quicfast.overhead(client)
    assert [e.data for e in events(server) if isinstance(e, DatagramFrameReceived)] == [
        b"\x00relayed 0",
        b"\x00relayed 1",
        b"\x00relayed 2",
    ]
    assert [e.data for e in events(client) if isinstance(e, DatagramFrameReceived)] == [
        b"toward the client"
    ]


def test_empty_datagram_padded_for_aioquic(pair: tuple) -> None:
    client, server = pair
    packet = quicfast.seal_datagram(client, b"")

    assert quicfast.open_datagram(server, packet, quicfast.ReplayWindow()) is None
    server.receive_datagram(packet, CLIENT_ADDRESS, 2.0)
    assert [e.data for e in events(server) if isinstance(e, DatagramFrameReceived)] == [b""]


def test_open_returns_the_payload_once_and_rejects_replays(pair: tuple) -> None:
    client, server = pair
    window = quicfast.ReplayWindow()
    first = quicfast.seal_datagram(client, b"first")
    second = quicfast.seal_datagram(client, b"second")

    assert quicfast.open_datagram(server, second, window) == b"second"
    assert quicfast.open_datagram(server, first, window) == b"first"  # reordered, not replayed
    assert quicfast.open_datagram(server, first, window) == b""
    assert quicfast.open_datagram(server, second, window) == b""


def test_packets_aioquic_built_fall_back(pair: tuple) -> None:
    client, server = pair
    window = quicfast.ReplayWindow()
    client.send_datagram_frame(b"framed with a length by aioquic")
    client.send_stream_data(0, b"stream data")
    client.send_ping(1)
    packets = [data for data, _addr in client.datagrams_to_send(3.0)]

    assert packets
    assert [quicfast.open_datagram(server, packet, window) for packet in packets] == [None] * len(
        packets
    )
    for packet in packets:
        server.receive_datagram(packet, CLIENT_ADDRESS, 3.0)
    received = [e.data for e in events(server) if isinstance(e, DatagramFrameReceived)]
    assert received == [b"framed with a length by aioquic"]


def test_malformed_packets_open_to_none(pair: tuple) -> None:
    client, server = pair
    window = quicfast.ReplayWindow()
    sealed = quicfast.seal_datagram(client, b"payload")
    tampered = sealed[:-1] + bytes((sealed[-1] ^ 1,))
    long_header = bytes((sealed[0] | 0x80,)) + sealed[1:]
    inputs = [b"", b"\x40", sealed[:20], tampered, long_header, os.urandom(200)]

    assert [quicfast.open_datagram(server, data, window) for data in inputs] == [None] * len(inputs)
    assert quicfast.open_datagram(server, sealed, window) == b"payload"


def test_replay_window_slides() -> None:
    window = quicfast.ReplayWindow()
    assert window.accept(5)
    assert not window.accept(5)
    assert window.accept(3)
    assert window.accept(5 + quicfast.REPLAY_WINDOW)
    assert not window.accept(5)  # now older than the window
    assert not window.accept(5 + quicfast.REPLAY_WINDOW)


def test_fast_path_follows_a_key_update(pair: tuple) -> None:
    client, server = pair
    sender, receiver = quicfast.FastPath(client), quicfast.FastPath(server)
    assert receiver.open(sender.seal(b"before")) == b"before"

    client.request_key_update()
    client.send_ping(1)
    pump(client, server, 2.0)
    events(server)
    updated = sender.seal(b"after")

    assert receiver.open(updated) == b"after"
    assert server._cryptos[quicfast.Epoch.ONE_RTT].recv.key_phase == 1


def test_opened_packet_restarts_the_idle_timer(pair: tuple) -> None:
    client, server = pair
    receiver = quicfast.FastPath(server)

    assert receiver.open(quicfast.seal_datagram(client, b"data"), 50.0) == b"data"

    assert server._close_at == 50.0 + server._idle_timeout()
    assert server.get_timer() is not None


def test_closing_connection_keeps_its_closing_period(pair: tuple) -> None:
    client, server = pair
    receiver = quicfast.FastPath(server)
    packet = quicfast.seal_datagram(client, b"data")
    server.close(error_code=0, reason_phrase="test")
    server.datagrams_to_send(2.0)
    closing_at = server._close_at

    receiver.open(packet, 50.0)

    assert server._close_at == closing_at
