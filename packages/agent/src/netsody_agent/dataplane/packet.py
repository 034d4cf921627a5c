"""A small IPv4 header parser and the ICMP messages the data plane writes back to the TUN device.

Only the fields enforcement needs are read: source and destination address, protocol, the
destination port of TCP and UDP (the ICMP type for ICMP), the source port (the ICMP echo
identifier), the total length and the Don't Fragment flag. Addresses stay 4-byte `bytes` so that
lookups need no conversion per packet.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACHABLE = 3
ICMP_FRAG_NEEDED = 4
ICMP_ECHO_REQUEST = 8

IPV4_MIN_HEADER = 20
_DF_FLAG = 0x4000
_FRAGMENT_OFFSET_MASK = 0x1FFF

_unpack_header = struct.Struct("!BBHHHBBH4s4s").unpack_from
_unpack_ports = struct.Struct("!HH").unpack_from


class IPv4Header(NamedTuple):
    """The parsed fields of one IPv4 packet (ports are 0 where the protocol has none)."""

    src: bytes
    dst: bytes
    protocol: int
    src_port: int
    dst_port: int
    total_length: int
    dont_fragment: bool
    header_length: int


class PacketError(ValueError):
    """A packet is not a well-formed IPv4 packet."""


def parse_ipv4(packet: bytes | memoryview) -> IPv4Header:
    """Parse the IPv4 header and the first transport bytes of `packet`.

    Raises `PacketError` for a packet that is not IPv4, is shorter than its header claims, or has
    a total length larger than the buffer. Non-first fragments carry no ports, so they report 0.
    """
    if len(packet) < IPV4_MIN_HEADER:
        raise PacketError(f"packet of {len(packet)} bytes is shorter than an IPv4 header")
    (
        version_ihl,
        _tos,
        total_length,
        _ident,
        flags_fragment,
        _ttl,
        protocol,
        _checksum,
        src,
        dst,
    ) = _unpack_header(packet)
    if version_ihl >> 4 != 4:
        raise PacketError(f"IP version {version_ihl >> 4} is not 4")
    header_length = (version_ihl & 0x0F) * 4
    if header_length < IPV4_MIN_HEADER or total_length < header_length:
        raise PacketError(f"invalid IPv4 header length {header_length} or total {total_length}")
    if total_length > len(packet):
        raise PacketError(f"IPv4 total length {total_length} exceeds the {len(packet)} bytes read")
    src_port = dst_port = 0
    if flags_fragment & _FRAGMENT_OFFSET_MASK == 0 and total_length >= header_length + 4:
        if protocol in (PROTO_TCP, PROTO_UDP):
            src_port, dst_port = _unpack_ports(packet, header_length)
        elif protocol == PROTO_ICMP and total_length >= header_length + 8:
            # Type as the "port" for policy rules; the echo identifier keys the flow table.
            dst_port = packet[header_length]
            src_port = _unpack_ports(packet, header_length + 4)[0]
    return IPv4Header(
        src,
        dst,
        protocol,
        src_port,
        dst_port,
        total_length,
        bool(flags_fragment & _DF_FLAG),
        header_length,
    )


def split_packets(payload: bytes) -> list[bytes]:
    """Split a datagram of concatenated IPv4 packets by their total-length fields.

    Raises `PacketError` when a length field is inconsistent with the payload.
    """
    packets: list[bytes] = []
    offset = 0
    end = len(payload)
    while offset < end:
        if end - offset < IPV4_MIN_HEADER or payload[offset] >> 4 != 4:
            raise PacketError(f"truncated or non-IPv4 packet at offset {offset}")
        length = (payload[offset + 2] << 8) | payload[offset + 3]
        if length < IPV4_MIN_HEADER or offset + length > end:
            raise PacketError(f"IPv4 total length {length} at offset {offset} is invalid")
        packets.append(payload[offset : offset + length] if offset or length != end else payload)
        offset += length
    return packets


def internet_checksum(data: bytes) -> int:
    """The 16-bit ones' complement checksum of RFC 1071."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_frag_needed(original: bytes, *, source: bytes, next_hop_mtu: int) -> bytes:
    """Build ICMP "fragmentation needed" (type 3, code 4, RFC 1191) for `original`.

    The message goes from `source` to the original sender and quotes the original IP header
    plus 8 bytes of payload, as RFC 792 requires.
    """
    header_length = (original[0] & 0x0F) * 4
    quoted = bytes(original[: header_length + 8])
    icmp = struct.pack("!BBHHH", ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED, 0, 0, next_hop_mtu)
    icmp += quoted
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    return build_ipv4(source, bytes(original[12:16]), PROTO_ICMP, icmp)


def build_ipv4(src: bytes, dst: bytes, protocol: int, payload: bytes, *, ttl: int = 64) -> bytes:
    """Build an IPv4 packet (no options, DF clear) around `payload` with a valid checksum."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, IPV4_MIN_HEADER + len(payload), 0, 0, ttl, protocol, 0, src, dst
    )
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload
