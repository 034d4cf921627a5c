"""TCP segments from a peer with header fields the coalescer must not trust.

A peer with a valid connection controls every byte of the packets it sends. The receiver joins
consecutive TCP segments into one frame for the TUN device (`offload.Coalescer`), and that frame
must stay a well-formed IPv4 packet: its total length equals its size, whatever the segments
claim in their TCP data offset.
"""

from __future__ import annotations

import socket
import struct

import pytest

from netsody_agent.dataplane.offload import VNET_HEADER_SIZE, Coalescer
from netsody_agent.dataplane.packet import PROTO_TCP, internet_checksum

SRC, DST = socket.inet_aton("10.9.0.3"), socket.inet_aton("10.9.0.1")
ACK = 0x10


def segment(sequence: int, payload: bytes, *, data_offset: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 41000, 9, sequence, 1, data_offset << 4, ACK, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, PROTO_TCP, 0, SRC, DST)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return ip + tcp + payload


@pytest.mark.parametrize("data_offset", [0, 1, 4])
def test_frames_keep_their_total_length(data_offset: int) -> None:
    """A data offset below 5 (shorter than a TCP header) must not produce a frame whose bytes
    disagree with its IPv4 total length."""
    coalescer = Coalescer()
    owner = object()
    first = segment(1000, b"a" * 40, data_offset=data_offset)
    # With the offset taken at face value, the next segment starts right after the IPv4 header.
    step = len(first) - 20 - data_offset * 4
    coalescer.add(first, True, owner)
    second = segment(1000 + step, b"b" * 40, data_offset=data_offset)
    if not coalescer.extend(second, owner):
        coalescer.add(second, True, owner)
    for frame in coalescer.frames():
        packet = frame[VNET_HEADER_SIZE:]
        total_length = struct.unpack_from("!H", packet, 2)[0]
        assert total_length == len(packet)
