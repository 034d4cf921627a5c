"""TCP segmentation and coalescing for a TUN device with virtio-net headers (IFF_VNET_HDR).

With offloads on, the kernel hands the TUN reader TCP segments of up to 64 KiB ("super-packets",
`GSO_TCPV4`) whose TCP or UDP checksum is only the pseudo-header sum (`NEEDS_CSUM`), and accepts
such packets on writes. Moving one super-packet through the kernel costs about what one
segment costs, so both ends of the tunnel save most of their system call and stack work:

- the sender cuts a super-packet into path-sized segments (`segment_tcp`) without touching the
  payload bytes: each segment keeps a partial checksum, and the datagram carrying it is marked so;
- the receiver joins consecutive segments of one TCP flow back into a super-packet
  (`Coalescer`) and writes it with one system call.

Checksums are never computed over payload bytes in Python. Packets with a partial checksum are
handed to the receiving kernel as partial (`NEEDS_CSUM`). It completes them only where they leave
the host (a gateway forwarding them) and skips them on local delivery. The datagrams are
authenticated end to end, so no corruption goes unnoticed.

Header layout, struct virtio_net_hdr (linux/virtio_net.h), little-endian on the hosts we run on:
flags (u8), gso_type (u8), hdr_len, gso_size, csum_start, csum_offset (u16 each).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable

from netsody_agent.dataplane.packet import PROTO_TCP, PROTO_UDP, PacketError

VNET_HEADER_SIZE = 10
NEEDS_CSUM = 0x01
GSO_NONE = 0
GSO_TCPV4 = 1
ZERO_HEADER = bytes(VNET_HEADER_SIZE)

# Offset of the checksum field inside the transport header.
TCP_CHECKSUM_OFFSET = 16
UDP_CHECKSUM_OFFSET = 6
# TCP flags a segment of a super-packet may carry; FIN and PSH only on the last one, CWR only on
# the first (as the kernel's own segmentation does).
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80
_LAST_ONLY = _FIN | _PSH
# Maximum number of segments in one coalesced write (the kernel's TCP GRO stops at 64 too).
MAX_COALESCED_SEGMENTS = 64
_MAX_IPV4_LENGTH = 65535

_vnet_header = struct.Struct("<BBHHHH")
# (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) of a frame's header.
unpack_vnet = _vnet_header.unpack_from
_pack_vnet = _vnet_header.pack
_pack_u16 = struct.Struct("!H").pack
_unpack_u32 = struct.Struct("!I").unpack_from
_unpack_words = struct.Struct("!10H").unpack_from


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _header_sum(header: bytes | memoryview, length: int = 20) -> int:
    """Return the sum of the 16-bit words of an IPv4 header of `length` bytes, without its
    checksum field."""
    words = (
        _unpack_words(header) if length == 20 else struct.unpack_from(f"!{length // 2}H", header)
    )
    return sum(words) - words[5]


def _pseudo_sum(packet: bytes | memoryview, protocol: int) -> int:
    """Sum of the pseudo-header words without the transport length (RFC 793, RFC 768)."""
    src_dst = _unpack_words(packet)[6:10]
    return sum(src_dst) + protocol


def _with_ip_fields(header: bytes, base: int, total_length: int, ident: int) -> bytes:
    """Return the 20-byte IPv4 header `header` with a new total length, ID and checksum.

    `base` is `_header_sum(header)` minus its total length and ID words.
    """
    checksum = ~_fold(base + total_length + ident) & 0xFFFF
    return (
        header[:2]
        + _pack_u16(total_length)
        + _pack_u16(ident)
        + header[6:10]
        + _pack_u16(checksum)
        + header[12:20]
    )


def headers_length(packet: bytes) -> int:
    """Return the IPv4 plus TCP header length of a TCP packet (the size of a bare segment)."""
    ip_length = (packet[0] & 0x0F) * 4
    return ip_length + (packet[ip_length + 12] >> 4) * 4 if len(packet) > ip_length + 12 else 0


def checksum_field(packet: bytes | memoryview) -> tuple[int, int] | None:
    """Return (start, offset) of the TCP or UDP checksum of a partial-checksum packet.

    Returns None when the packet cannot carry a partial checksum: not TCP or UDP, a fragment,
    or too short for its transport header.
    """
    header_length = (packet[0] & 0x0F) * 4
    protocol = packet[9]
    if protocol == PROTO_TCP:
        offset = TCP_CHECKSUM_OFFSET
    elif protocol == PROTO_UDP:
        offset = UDP_CHECKSUM_OFFSET
    else:
        return None
    fragment = ((packet[6] & 0x3F) << 8) | packet[7]
    total = (packet[2] << 8) | packet[3]
    if fragment or total < header_length + offset + 2 or total > len(packet):
        return None
    return header_length, offset


def complete_checksum(packet: bytes) -> bytes:
    """Return `packet` with its partial TCP or UDP checksum completed (the slow, portable path).

    For a TUN device without virtio-net headers; raises `PacketError` when the packet cannot
    carry a partial checksum.
    """
    field = checksum_field(packet)
    if field is None:
        raise PacketError("a partial checksum needs an unfragmented TCP or UDP packet")
    start, offset = field
    position = start + offset
    data = packet[start:]
    if len(data) % 2:
        data += b"\0"
    # The field contains the pseudo-header sum already, so summing over it completes the checksum.
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    checksum = ~_fold(total) & 0xFFFF
    if checksum == 0 and packet[9] == PROTO_UDP:
        checksum = 0xFFFF  # RFC 768: zero means "no checksum"
    return packet[:position] + _pack_u16(checksum) + packet[position + 2 :]


def segment_tcp(packet: bytes, segment_size: int) -> list[bytes]:
    """Cut an IPv4 TCP super-packet into segments of `segment_size` payload bytes.

    Every segment gets its own IPv4 total length, ID and header checksum and its own sequence
    number; its TCP checksum field contains the partial (pseudo-header) sum for its length.
    Raises `PacketError` for a packet that is not a plain IPv4 TCP packet (IP options are
    accepted, as are TCP options).
    """
    if len(packet) < 40 or packet[9] != PROTO_TCP or packet[0] >> 4 != 4 or segment_size <= 0:
        raise PacketError("segmentation needs an IPv4 TCP packet and a positive segment size")
    ip_length = (packet[0] & 0x0F) * 4
    tcp_length = (packet[ip_length + 12] >> 4) * 4
    headers = ip_length + tcp_length
    total = (packet[2] << 8) | packet[3]
    if tcp_length < 20 or headers > total or total > len(packet):
        raise PacketError(f"TCP super-packet with invalid lengths {ip_length}/{tcp_length}/{total}")
    ident = (packet[4] << 8) | packet[5]
    ip_base = _header_sum(packet, ip_length) - total - ident
    pseudo = _pseudo_sum(packet, PROTO_TCP)
    sequence = _unpack_u32(packet, ip_length + 4)[0]
    flags = packet[ip_length + 13]
    pack = _segment_headers(ip_length, tcp_length).pack
    # The fields that stay the same in every segment.
    tos, fields, addresses, options = packet[:2], packet[6:10], packet[12:20], packet[20:ip_length]
    tcp = ip_length
    ports, middle = packet[tcp : tcp + 4], packet[tcp + 8 : tcp + 13]
    window, rest = packet[tcp + 14 : tcp + 16], packet[tcp + 18 : headers]
    segments: list[bytes] = []
    count = -(-(total - headers) // segment_size)
    last = count - 1
    for index in range(count):
        begin = headers + index * segment_size
        end = begin + segment_size if index < last else total
        segment_flags = flags if index == last else flags & ~_LAST_ONLY
        if index:
            segment_flags &= ~_CWR
        tcp_total = tcp_length + end - begin
        length = ip_length + tcp_total
        segment_ident = (ident + index) & 0xFFFF
        checksum = ~_fold(ip_base + length + segment_ident) & 0xFFFF
        header = pack(
            tos,
            length,
            segment_ident,
            fields,
            checksum,
            addresses,
            options,
            ports,
            (sequence + index * segment_size) & 0xFFFFFFFF,
            middle,
            segment_flags,
            window,
            _fold(pseudo + tcp_total),
            rest,
        )
        segments.append(header + packet[begin:end])
    return segments


@functools.cache
def _segment_headers(ip_length: int, tcp_length: int) -> struct.Struct:
    """Return the layout of a segment's IPv4 and TCP headers, options included."""
    return struct.Struct(f"!2sHH4sH8s{ip_length - 20}s4sI5sB2sH{tcp_length - 18}s")


class Coalescer:
    """Joins consecutive segments of one TCP flow into virtio-net frames for one TUN write.

    `add(packet, partial, owner)` takes the packets of one receive batch in order; `frames()`
    returns the frames to write, each with its virtio-net header, and empties the coalescer. A
    packet that cannot join (not TCP, other flow, a gap in sequence numbers, flags other than
    ACK and PSH, a short segment before it) starts a new frame. A packet written alone keeps its
    own checksum state: `NEEDS_CSUM` when partial, none when complete.

    `extend(packet, owner)` joins a packet to the open run without the caller validating it
    first: it only succeeds for the next segment of the run's flow (same addresses, ports and
    header fields) from the same `owner`, which the caller already validated with the run's first
    packet.
    """

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._run: list[bytes] = []
        self._run_owner: object = None
        self._candidate: tuple[bytes, bytes | None, int, int] = (b"", None, 0, 0)
        self._run_key = b""
        self._run_size = 0
        self._run_next = 0
        self._run_length = 0
        self._run_partial = False
        self._run_closed = True

    def extend(self, packet: bytes, owner: object) -> bool:
        """Append `packet` to the open run of `owner` when it is that flow's next segment."""
        key, sequence, payload = candidate = _coalescing_key(packet)
        self._candidate = (packet, *candidate)
        if key is None or owner is not self._run_owner or not self._joins(key, sequence, payload):
            return False
        self._append(packet, sequence, payload)
        return True

    def add(self, packet: bytes, partial: bool, owner: object = None) -> None:
        """Queue one validated IPv4 packet; `partial` marks a pseudo-header-only L4 checksum.

        `owner` names where the packet came from (the peer link); see `extend`.
        """
        if self._candidate[0] is packet:
            _packet, key, sequence, payload = self._candidate
        else:
            key, sequence, payload = _coalescing_key(packet)
        if key is not None and owner is self._run_owner and self._joins(key, sequence, payload):
            self._append(packet, sequence, payload)
            return
        self._close_run()
        self._run_owner = owner
        if key is None:
            self._frames.append(self._single(packet, partial))
            return
        self._run = [packet]
        self._run_key = key
        self._run_size = payload
        self._run_next = (sequence + payload) & 0xFFFFFFFF
        self._run_length = len(packet)
        self._run_partial = partial
        self._run_closed = bool(packet[33] & _PSH)

    def _append(self, packet: bytes, sequence: int, payload: int) -> None:
        self._run.append(packet)
        self._run_next = (sequence + payload) & 0xFFFFFFFF
        self._run_length += payload
        # A short segment or PSH ends the super-packet, as in the kernel's GRO.
        self._run_closed = payload < self._run_size or bool(packet[33] & _PSH)

    def _joins(self, key: bytes, sequence: int, payload: int) -> bool:
        return (
            not self._run_closed
            and key == self._run_key
            and sequence == self._run_next
            and 0 < payload <= self._run_size
            and self._run_length + payload <= _MAX_IPV4_LENGTH
            and len(self._run) < MAX_COALESCED_SEGMENTS
        )

    def frames(self) -> list[bytes]:
        """Return the queued frames, ready for `TunDevice.write_frames`, and start over."""
        self._close_run()
        frames = self._frames
        self._frames = []
        return frames

    def _close_run(self) -> None:
        run = self._run
        if not run:
            return
        if len(run) == 1:
            self._frames.append(self._single(run[0], self._run_partial))
        else:
            self._frames.append(_join(run, self._run_size, self._run_length))
        self._run = []
        self._run_owner = None
        self._run_closed = True

    @staticmethod
    def _single(packet: bytes, partial: bool) -> bytes:
        if partial:
            field = checksum_field(packet)
            if field is not None:
                return _pack_vnet(NEEDS_CSUM, GSO_NONE, 0, 0, field[0], field[1]) + packet
        return ZERO_HEADER + packet


def _coalescing_key(packet: bytes) -> tuple[bytes | None, int, int]:
    """Return (flow key, sequence number, payload length) of a joinable TCP segment.

    The key contains everything that must match between the segments of one super-packet: the
    IPv4 header without length, ID and checksum, and the TCP header without sequence number,
    PSH and checksum. Returns a None key for a packet that cannot join any other.
    """
    if packet[9] != PROTO_TCP or packet[0] != 0x45 or len(packet) < 40:
        return None, 0, 0
    flags = packet[33]
    if flags & ~_PSH != _ACK or packet[6] & 0x3F or packet[7]:
        return None, 0, 0
    data_offset = packet[32] >> 4
    headers = 20 + data_offset * 4
    total = (packet[2] << 8) | packet[3]
    # SECURITY: a peer controls every field; a data offset below 5 would cut TCP headers short.
    if data_offset < 5 or total <= headers or total != len(packet):
        return None, 0, 0
    key = packet[1:2] + packet[6:10] + packet[12:24] + packet[28:33] + packet[34:36]
    key += packet[38:headers]
    return key, _unpack_u32(packet, 24)[0], total - headers


def _join(run: list[bytes], segment_size: int, length: int) -> bytes:
    """Build one GSO frame from a run of joinable segments (see `_coalescing_key`)."""
    first = run[0]
    headers = 20 + (first[32] >> 4) * 4
    ip_header = first[:20]
    base = _header_sum(ip_header) - ((first[2] << 8) | first[3])
    ident = (first[4] << 8) | first[5]
    base -= ident
    tcp_total = length - 20
    flags = first[33] | (run[-1][33] & _PSH)
    frame = _pack_vnet(
        NEEDS_CSUM, GSO_TCPV4, headers, segment_size, 20, TCP_CHECKSUM_OFFSET
    ) + _with_ip_fields(ip_header, base, length, ident)
    frame += (
        first[20:33]
        + bytes((flags,))
        + first[34:36]
        + _pack_u16(_fold(_pseudo_sum(first, PROTO_TCP) + tcp_total))
        + first[38:headers]
    )
    return frame + b"".join(_payloads(run, headers))


def _payloads(run: Iterable[bytes], headers: int) -> Iterable[bytes]:
    for packet in run:
        yield packet[headers:]
