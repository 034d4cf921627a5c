"""The IPv4 header parser, datagram splitting and the ICMP "fragmentation needed" builder."""

import socket
import struct

import pytest

from netsody_agent.dataplane.packet import (
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    PacketError,
    build_frag_needed,
    build_ipv4,
    internet_checksum,
    parse_ipv4,
    split_packets,
)

A = socket.inet_aton("10.1.0.1")
B = socket.inet_aton("10.1.0.2")


def ipv4(protocol, payload, *, flags=0x4000, src=A, dst=B):
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, flags, 64, protocol, 0, src, dst
    )
    return header + payload


@pytest.mark.parametrize(
    ("protocol", "payload", "ports"),
    [
        pytest.param(PROTO_TCP, struct.pack("!HH", 40000, 22) + bytes(16), (40000, 22), id="tcp"),
        pytest.param(PROTO_UDP, struct.pack("!HHHH", 5353, 53, 8, 0), (5353, 53), id="udp"),
        pytest.param(PROTO_ICMP, struct.pack("!BBHHH", 8, 0, 0, 77, 1), (77, 8), id="icmp-echo"),
    ],
)
def test_parse_reads_addresses_and_ports(protocol, payload, ports):
    header = parse_ipv4(ipv4(protocol, payload))

    assert header.src == A
    assert header.dst == B
    assert header.protocol == protocol
    assert (header.src_port, header.dst_port) == ports
    assert header.total_length == 20 + len(payload)
    assert header.dont_fragment


def test_parse_non_first_fragment_has_no_ports():
    header = parse_ipv4(ipv4(PROTO_TCP, struct.pack("!HH", 1, 2) + bytes(16), flags=0x0010))

    assert (header.src_port, header.dst_port) == (0, 0)
    assert not header.dont_fragment


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        pytest.param(b"\x45" * 10, "packet of 10 bytes is shorter than an IPv4 header", id="short"),
        pytest.param(b"\x60" + bytes(39), "IP version 6 is not 4", id="ipv6"),
        pytest.param(
            ipv4(PROTO_UDP, bytes(8))[:24],
            "IPv4 total length 28 exceeds the 24 bytes read",
            id="truncated",
        ),
    ],
)
def test_parse_rejects_malformed(packet, message):
    with pytest.raises(PacketError) as raised:
        parse_ipv4(packet)

    assert str(raised.value) == message


def test_split_concatenated_packets():
    first = ipv4(PROTO_UDP, bytes(8))
    second = ipv4(PROTO_TCP, bytes(40))

    assert split_packets(first + second) == [first, second]
    assert split_packets(first) == [first]


def test_split_rejects_inconsistent_length():
    with pytest.raises(PacketError):
        split_packets(ipv4(PROTO_UDP, bytes(8)) + b"\x45\x00\x00")


def test_build_ipv4_checksum_verifies():
    packet = build_ipv4(A, B, PROTO_UDP, bytes(8))

    assert internet_checksum(packet[:20]) == 0
    assert parse_ipv4(packet).total_length == 28


def test_frag_needed_quotes_original_and_names_mtu():
    original = ipv4(PROTO_TCP, struct.pack("!HH", 40000, 22) + bytes(1500))

    reply = build_frag_needed(original, source=B, next_hop_mtu=1368)
    header = parse_ipv4(reply)
    icmp = reply[20:]

    assert (header.src, header.dst, header.protocol) == (B, A, PROTO_ICMP)
    assert icmp[0:2] == b"\x03\x04"
    assert struct.unpack("!H", icmp[6:8])[0] == 1368
    assert icmp[8:] == original[:28]
    assert internet_checksum(icmp) == 0
