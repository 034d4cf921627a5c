"""DataPlane decisions that need no socket: oversize packets, drop counters, replay window."""

import importlib.util
import os
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from netsody_agent.dataplane import PARTIAL_CHECKSUMS, PAYLOAD_FLAGS_SIZE, DataPlane, enforce
from netsody_agent.dataplane.link import MAX_DATAGRAM_PAYLOAD, LinkStats
from netsody_agent.dataplane.packet import PROTO_ICMP, PROTO_TCP, internet_checksum, parse_ipv4
from netsody_agent.dataplane.superpeer import SuperPeerError, parse_super_peer_url
from netsody_common.document import parse_document
from netsody_common.policy import compile_for_node
from netsody_common.quicfast import ReplayWindow


class MemoryTun:
    """Test double of `TunDevice`: records written packets (a real TUN device needs root)."""

    vnet_header = False

    def __init__(self):
        self.written = []

    def fileno(self):
        return -1

    def write(self, packet):
        self.written.append(bytes(packet))


def document(alpha, beta):
    return parse_document(f"""
name = "office"
network = "10.1.0.0/24"

[[node]]
hostname = "alpha"
ip = "10.1.0.1"
pk = "{alpha}"

[[node]]
hostname = "beta"
ip = "10.1.0.2"
pk = "{beta}"

[[policy]]
source_groups = ["ALL"]
destination_groups = ["ALL"]
""")


def tcp_packet(size, *, dont_fragment=True):
    payload = struct.pack("!HH", 40000, 22) + bytes(size - 24)
    flags = 0x4000 if dont_fragment else 0
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        size,
        0,
        flags,
        64,
        PROTO_TCP,
        0,
        socket.inet_aton("10.1.0.1"),
        socket.inet_aton("10.1.0.2"),
    )
    return header + payload


async def plane_with_peer_up(identities):
    alpha, beta = identities[0], identities[1]
    tun = MemoryTun()
    plane = DataPlane(alpha, tun, super_peers=[])
    await plane.apply([compile_for_node(document(alpha.pk, beta.pk), alpha.pk)])
    link = SimpleNamespace(
        state="up", stats=LinkStats(), peer_pk=beta.pk, max_payload=MAX_DATAGRAM_PAYLOAD
    )
    plane._links[beta.pk] = link
    return plane, tun, link


async def test_oversize_df_packet_gets_frag_needed(identities):
    plane, tun, link = await plane_with_peer_up(identities)
    original = tcp_packet(MAX_DATAGRAM_PAYLOAD + 100)

    routed = plane._route_outgoing(original)

    assert routed is None
    assert link.stats.drops == {enforce.DROP_TOO_LARGE: 1}
    assert len(tun.written) == 1
    reply = parse_ipv4(tun.written[0])
    assert reply.protocol == PROTO_ICMP
    assert reply.src == socket.inet_aton("10.1.0.2")
    assert reply.dst == socket.inet_aton("10.1.0.1")
    assert tun.written[0][20:22] == b"\x03\x04"
    assert (
        struct.unpack("!H", tun.written[0][26:28])[0] == MAX_DATAGRAM_PAYLOAD - PAYLOAD_FLAGS_SIZE
    )


async def test_oversize_packet_without_df_dropped_silently(identities):
    plane, tun, link = await plane_with_peer_up(identities)

    assert (
        plane._route_outgoing(tcp_packet(MAX_DATAGRAM_PAYLOAD + 100, dont_fragment=False)) is None
    )
    assert tun.written == []
    assert link.stats.drops == {enforce.DROP_TOO_LARGE: 1}


async def test_fitting_packet_routed_to_link(identities):
    plane, _tun, link = await plane_with_peer_up(identities)

    largest = MAX_DATAGRAM_PAYLOAD - PAYLOAD_FLAGS_SIZE
    assert plane._route_outgoing(tcp_packet(largest)) is link
    assert plane._route_outgoing(tcp_packet(largest + 1)) is None


async def test_packet_to_down_peer_counted(identities):
    plane, _tun, _link = await plane_with_peer_up(identities)
    plane._links.clear()

    plane._route_outgoing(tcp_packet(100))

    assert plane.drops == {enforce.DROP_PEER_DOWN: 1}


async def test_status_lists_permitted_peer(identities):
    plane, _tun, _link = await plane_with_peer_up(identities)
    plane._links.clear()

    peers = plane.status()["peers"]

    assert [(peer["pk"], peer["ip"], peer["path"]) for peer in peers] == [
        (identities[1].pk, "10.1.0.2", "none")
    ]


def test_replay_window_rejects_duplicates_and_old():
    window = ReplayWindow()

    assert window.accept(10)
    assert window.accept(12)
    assert window.accept(11)
    assert not window.accept(11)
    assert window.accept(10_000)
    assert not window.accept(10)


DIRECT = ("192.0.2.10", 7000)
RELAY = ("198.51.100.1", 40000)


def path_link(peer_pk, *, remote, path, seen):
    return SimpleNamespace(state="up", peer_pk=peer_pk, remote=remote, path=path, remote_seen=seen)


async def plane_with_relay_candidate(identities):
    plane, _tun, _link = await plane_with_peer_up(identities)
    plane._relay_candidates[identities[1].pk] = {RELAY}
    return plane


@pytest.mark.parametrize(
    ("start", "arrival", "authentic", "now", "expected"),
    [
        pytest.param((RELAY, "relay-h3"), DIRECT, True, 100.0, (DIRECT, "direct"), id="upgrade"),
        pytest.param((RELAY, "relay-h3"), DIRECT, False, 100.0, (RELAY, "relay-h3"), id="forged"),
        pytest.param((DIRECT, "direct"), RELAY, True, 100.5, (DIRECT, "direct"), id="keep-live"),
        pytest.param((DIRECT, "direct"), RELAY, True, 110.0, (RELAY, "relay-h3"), id="stale"),
    ],
)
async def test_path_selection(identities, start, arrival, authentic, now, expected):
    plane = await plane_with_relay_candidate(identities)
    link = path_link(identities[1].pk, remote=start[0], path=start[1], seen=100.0)

    plane._note_path(link, arrival, None, now, authentic=authentic)

    assert (link.remote, link.path) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://sp.example.com/", ("sp.example.com", 443), id="default-port"),
        pytest.param("https://sp.example.com:8443", ("sp.example.com", 8443), id="explicit-port"),
        pytest.param("sp.example.com", ("sp.example.com", 443), id="no-scheme"),
    ],
)
def test_super_peer_url_parsed(url, expected):
    assert parse_super_peer_url(url) == expected


def test_super_peer_url_with_other_scheme_rejected():
    with pytest.raises(SuperPeerError) as raised:
        parse_super_peer_url("http://sp.example.com")

    assert str(raised.value) == (
        "invalid super peer URL 'http://sp.example.com': use https://HOST[:PORT]"
    )


async def test_replayed_packet_does_not_move_path(identities):
    # Regression: a replay from another address used to count as an authenticated packet.
    spec = importlib.util.spec_from_file_location(
        "handshake_tests", Path(__file__).with_name("test_handshake.py")
    )
    handshake_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handshake_tests)
    dialer, acceptor = handshake_tests.connect(identities[0], identities[1])
    plane = DataPlane(identities[1], MemoryTun(), super_peers=[])
    link = acceptor.link
    link.remote, link.path = DIRECT, "direct"
    plane._by_cid.update(dict.fromkeys(link.host_cids, link))
    sealed = dialer.link.seal_datagram(tcp_packet(60))

    plane._demultiplex(sealed, DIRECT, 100.0)
    plane._demultiplex(sealed, RELAY, 100.0)

    assert link.remote == DIRECT
    assert link.stats.drops.get("replay") == 1


def tcp_with_pseudo_checksum(size):
    """A TCP packet from beta to alpha as a TUN device with checksum offload hands it out."""
    packet = tcp_packet(size)
    packet = packet[:12] + packet[16:20] + packet[12:16] + packet[20:]
    words = struct.unpack("!4H", packet[12:20])
    total = sum(words) + PROTO_TCP + size - 20
    total = (total & 0xFFFF) + (total >> 16)
    return packet[:36] + struct.pack("!H", total) + packet[38:]


async def test_partial_checksums_completed_for_a_tun_without_offloads(identities):
    plane, tun, link = await plane_with_peer_up(identities)
    packet = tcp_with_pseudo_checksum(200)

    plane._on_peer_payload(link, PARTIAL_CHECKSUMS + packet)
    plane._flush_tun()

    (written,) = tun.written
    tcp = written[20:]
    pseudo = written[12:20] + struct.pack("!BBH", 0, PROTO_TCP, len(tcp))
    assert internet_checksum(pseudo + tcp) == 0
    assert written[:36] == packet[:36]
    assert link.stats.packets_in == 1


@pytest.mark.parametrize("flags", [b"\x00", b"\x02", b"\x3f"])
async def test_unknown_payload_flags_drop_the_datagram(identities, flags):
    plane, tun, link = await plane_with_peer_up(identities)

    plane._on_peer_payload(link, flags + tcp_packet(100))
    plane._flush_tun()

    assert tun.written == []
    assert link.stats.drops == {enforce.DROP_MALFORMED: 1}


async def test_undecryptable_initial_holds_no_handshake_slot(identities):
    plane, _tun, _link = await plane_with_peer_up(identities)
    payload_length = 1200 - 26
    initial = (
        b"\xc3\x00\x00\x00\x01"  # long header, Initial, QUIC version 1
        + b"\x08" + os.urandom(8)  # destination connection ID
        + b"\x08" + os.urandom(8)  # source connection ID
        + b"\x00"  # no token
        + struct.pack("!H", 0x4000 | payload_length)
        + os.urandom(payload_length)
    )  # fmt: skip

    assert plane._demultiplex(initial, ("192.0.2.7", 4433), 1.0) is None

    assert plane._pending == set()
    assert plane._by_cid == {}
    assert plane.drops == {"undecryptable-initial": 1}
