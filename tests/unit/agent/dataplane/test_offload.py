"""TCP segmentation and coalescing of TUN frames with virtio-net headers, checked field by field."""

import os
import socket
import struct

import pytest

from netsody_agent.dataplane import offload
from netsody_agent.dataplane.packet import PROTO_TCP, PROTO_UDP, PacketError, internet_checksum

A = socket.inet_aton("10.1.0.1")
B = socket.inet_aton("10.1.0.2")
MSS = 1000
TIMESTAMPS = b"\x01\x01\x08\x0a" + struct.pack("!II", 1234, 5678)


def pseudo_sum(src, dst, protocol, length):
    words = struct.unpack("!4H", src + dst)
    total = sum(words) + protocol + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def tcp_packet(payload, *, seq=1000, flags=0x10, ident=7, options=TIMESTAMPS, partial=True):
    """An IPv4 TCP packet; with `partial` its checksum contains the pseudo-header sum only."""
    data_offset = (20 + len(options)) // 4
    tcp_length = 20 + len(options) + len(payload)
    check = pseudo_sum(A, B, PROTO_TCP, tcp_length) if partial else 0
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 77, data_offset << 4, flags, 512, check, 0)
    tcp += options + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ident, 0x4000, 64, PROTO_TCP, 0, A, B)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    packet = ip + tcp
    return packet if partial else offload.complete_checksum(packet_with_pseudo(packet))


def packet_with_pseudo(packet):
    length = len(packet) - 20
    return packet[:36] + struct.pack("!H", pseudo_sum(A, B, PROTO_TCP, length)) + packet[38:]


def tcp_checksum_valid(packet):
    """Verify a complete TCP checksum the way a receiving host does."""
    tcp = packet[20:]
    data = A + B + struct.pack("!BBH", 0, PROTO_TCP, len(tcp)) + tcp
    return internet_checksum(data) == 0


def test_segment_cuts_payload_and_renumbers_headers():
    payload = os.urandom(2 * MSS + 345)
    super_packet = tcp_packet(payload, flags=0x18 | 0x01, ident=65535)

    segments = offload.segment_tcp(super_packet, MSS)

    assert [len(segment) - 52 for segment in segments] == [MSS, MSS, 345]
    assert b"".join(segment[52:] for segment in segments) == payload
    for index, segment in enumerate(segments):
        assert struct.unpack("!H", segment[2:4])[0] == len(segment)
        assert struct.unpack("!H", segment[4:6])[0] == (65535 + index) & 0xFFFF
        assert internet_checksum(segment[:20]) == 0
        assert struct.unpack("!I", segment[24:28])[0] == 1000 + index * MSS
        assert segment[40:52] == TIMESTAMPS
        assert tcp_checksum_valid(offload.complete_checksum(segment))
    # FIN and PSH belong to the last segment only.
    assert [segment[33] for segment in segments] == [0x10, 0x10, 0x19]


def test_segment_with_ip_options_recomputes_each_header():
    payload = os.urandom(3 * MSS)
    plain = tcp_packet(payload)
    options = b"\x01\x01\x01\x00"  # three NOPs and an end of options list
    header = bytes([0x46]) + plain[1:2] + struct.pack("!H", len(plain) + 4) + plain[4:20]
    header = header[:10] + b"\0\0" + header[12:] + options
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    with_options = header + plain[20:]

    segments = offload.segment_tcp(with_options, MSS)

    assert len(segments) == 3
    for segment in segments:
        assert segment[:1] == b"\x46"
        assert internet_checksum(segment[:24]) == 0
        assert segment[24:28] == plain[20:24]


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(b"\x45" + bytes(30), id="too-short"),
        pytest.param(tcp_packet(b"x")[:9] + bytes([PROTO_UDP]) + tcp_packet(b"x")[10:], id="udp"),
        pytest.param(tcp_packet(b"x" * 10)[:2] + b"\xff\xff" + tcp_packet(b"x" * 10)[4:], id="len"),
    ],
)
def test_segment_rejects_what_is_no_tcp_super_packet(packet):
    with pytest.raises(PacketError):
        offload.segment_tcp(packet, MSS)


def parse_frame(frame):
    return offload.unpack_vnet(frame), frame[offload.VNET_HEADER_SIZE :]


def test_coalescer_joins_segments_into_one_gso_frame():
    payload = os.urandom(3 * MSS + 10)
    segments = offload.segment_tcp(tcp_packet(payload, flags=0x18), MSS)
    coalescer = offload.Coalescer()
    owner = object()

    coalescer.add(segments[0], True, owner)
    joined = [coalescer.extend(segment, owner) for segment in segments[1:]]
    frames = coalescer.frames()

    assert joined == [True, True, True]
    assert len(frames) == 1
    (flags, gso_type, hdr_len, gso_size, start, offset), packet = parse_frame(frames[0])
    assert (flags, gso_type, hdr_len, gso_size) == (offload.NEEDS_CSUM, offload.GSO_TCPV4, 52, MSS)
    assert (start, offset) == (20, offload.TCP_CHECKSUM_OFFSET)
    assert packet[52:] == payload
    assert struct.unpack("!H", packet[2:4])[0] == len(packet)
    assert internet_checksum(packet[:20]) == 0
    assert packet[33] == 0x18  # the last segment's PSH carried over
    # The kernel completes the checksum from the pseudo-header sum over the full length.
    assert tcp_checksum_valid(offload.complete_checksum(packet))
    assert offload.segment_tcp(packet, MSS)[1][20:] == segments[1][20:]
    assert coalescer.frames() == []


def test_coalescer_joins_segments_with_complete_checksums():
    segments = [
        offload.complete_checksum(segment)
        for segment in offload.segment_tcp(tcp_packet(os.urandom(2 * MSS)), MSS)
    ]
    coalescer = offload.Coalescer()
    for segment in segments:
        coalescer.add(segment, False)

    ((header, packet),) = map(parse_frame, coalescer.frames())

    assert header[1] == offload.GSO_TCPV4
    assert tcp_checksum_valid(offload.complete_checksum(packet))


def test_extend_refuses_another_owner_and_a_gap():
    segments = offload.segment_tcp(tcp_packet(os.urandom(4 * MSS)), MSS)
    coalescer = offload.Coalescer()
    owner = object()
    coalescer.add(segments[0], True, owner)

    assert not coalescer.extend(segments[1], object())
    assert not coalescer.extend(segments[2], owner)
    assert coalescer.extend(segments[1], owner)


def test_coalescer_run_ends_at_psh():
    first = offload.segment_tcp(tcp_packet(os.urandom(MSS + 10), flags=0x18), MSS)
    following = tcp_packet(os.urandom(MSS), seq=1000 + MSS + 10)
    coalescer = offload.Coalescer()

    for packet in [*first, following]:
        coalescer.add(packet, True)

    frames = [parse_frame(frame) for frame in coalescer.frames()]
    assert [(header[1], len(packet)) for header, packet in frames] == [
        (offload.GSO_TCPV4, 52 + MSS + 10),
        (offload.GSO_NONE, 52 + MSS),
    ]


def test_single_packets_keep_their_checksum_state():
    udp_payload = b"hello"
    udp = struct.pack("!HHHH", 5353, 53, 8 + len(udp_payload), 0) + udp_payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, PROTO_UDP, 0, A, B)
    udp_packet = ip + udp
    coalescer = offload.Coalescer()

    coalescer.add(udp_packet, True)
    coalescer.add(tcp_packet(b"x" * 10, partial=False), False)
    (udp_header, _), (tcp_header, _) = map(parse_frame, coalescer.frames())

    assert udp_header == (offload.NEEDS_CSUM, offload.GSO_NONE, 0, 0, 20, 6)
    assert tcp_header == (0, 0, 0, 0, 0, 0)


def test_complete_checksum_refuses_a_fragment():
    fragment = bytearray(tcp_packet(b"x" * 40))
    fragment[6:8] = b"\x20\x05"  # more fragments, offset 40 bytes

    with pytest.raises(PacketError):
        offload.complete_checksum(bytes(fragment))
    assert offload.checksum_field(bytes(fragment)) is None
