"""Seal and open 1-RTT QUIC packets holding one DATAGRAM frame with a connection's own keys.

This is the fast path for bulk datagrams on an aioquic connection. Sealed packets bypass
aioquic's send loop, loss recovery and congestion control, because the tunneled traffic does
its own congestion control (as over WireGuard). Opened packets, which contain exactly one
DATAGRAM frame, bypass aioquic's receive path. Everything else (handshake, ACKs, pings,
streams) still flows through aioquic, which keeps the connection healthy.

A sealed packet is a regular 1-RTT packet of the connection: any QUIC receiver accepts it.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import decode_packet_number
from aioquic.tls import Epoch
from cryptography.exceptions import InvalidTag

# First byte of a short-header packet with a 2-byte packet number (RFC 9000 section 17.3.1).
_SHORT_HEADER_BITS = 0x40 | 0x01
# DATAGRAM frame without a length field: its data runs to the end of the packet (RFC 9221).
_DATAGRAM_NO_LENGTH = b"\x30"
# Bytes a sealed packet adds around its payload with an 8-byte connection ID: 1-byte flags,
# 2-byte packet number, 1-byte DATAGRAM frame type and the 16-byte AEAD tag.
PACKET_OVERHEAD_WITHOUT_CID = 20
REPLAY_WINDOW = 4096
_REPLAY_MASK = (1 << REPLAY_WINDOW) - 1


def can_seal(connection: QuicConnection) -> bool:
    """Return True once `connection` has 1-RTT send keys (handshake complete)."""
    # NOTE: reads aioquic's private crypto contexts; see `seal_datagram`.
    cryptos = connection._cryptos
    return bool(cryptos) and cryptos[Epoch.ONE_RTT].send.is_valid()


def overhead(connection: QuicConnection) -> int:
    """Return the bytes a sealed packet of `connection` adds to its payload."""
    return PACKET_OVERHEAD_WITHOUT_CID + len(connection._peer_cid.cid)


def seal_datagram(connection: QuicConnection, payload: bytes) -> bytes:
    """Build one complete 1-RTT QUIC packet with a DATAGRAM frame holding `payload`.

    It borrows the connection's packet number and 1-RTT keys, so the result is a packet of this
    connection that any QUIC receiver accepts, but aioquic neither tracks it for loss recovery
    nor counts it against congestion control. Call only once `can_seal` is True.
    """
    # NOTE: aioquic has no API to encrypt a packet of a connection, so this reads its
    # private packet number counter, peer connection ID and 1-RTT keys. It protects the
    # packet as RFC 9001 section 5 prescribes, with fewer copies than aioquic's own code.
    context: Any = connection._cryptos[Epoch.ONE_RTT].send
    number = connection._packet_number
    connection._packet_number = number + 1
    aead = context.aead
    first = _SHORT_HEADER_BITS | (context.key_phase << 2)
    cid = connection._peer_cid.cid
    high, low = (number >> 8) & 0xFF, number & 0xFF
    # An empty DATAGRAM frame leaves too little ciphertext for the header protection sample:
    # a PADDING frame in front fills it (such a packet then takes aioquic's receive path).
    frames = _DATAGRAM_NO_LENGTH + payload if payload else b"\x00" + _DATAGRAM_NO_LENGTH
    sealed: bytes = aead._aead.encrypt(
        (aead._iv ^ number).to_bytes(12, "big"),
        frames,
        bytes((first,)) + cid + bytes((high, low)),
    )
    # Header protection (RFC 9001 section 5.4): the sample starts 4 bytes after the packet
    # number, which is 2 bytes into the ciphertext with a 2-byte packet number.
    mask: bytes = context.hp._mask(sealed[2:18])
    return (
        bytes((first ^ (mask[0] & 0x1F),)) + cid + bytes((high ^ mask[1], low ^ mask[2])) + sealed
    )


def open_datagram(connection: QuicConnection, data: bytes, replay: ReplayWindow) -> bytes | None:
    """Decrypt a 1-RTT packet that contains exactly one DATAGRAM frame and return its data.

    Returns None when the packet contains anything else (ACKs, streams, pings), uses another
    packet number length or key phase, or does not decrypt. The caller then hands the packet
    to aioquic unchanged. Returns b"" for a replayed packet (see `replay`).
    """
    space: Any = connection._spaces.get(Epoch.ONE_RTT) if connection._spaces else None
    offset = 1 + len(connection.host_cid)
    if space is None or len(data) < offset + 20 or data[0] & 0xC0 != 0x40:
        return None
    context: Any = connection._cryptos[Epoch.ONE_RTT].recv
    if not context.is_valid():
        return None
    mask: bytes = context.hp._mask(data[offset + 4 : offset + 20])
    first = data[0] ^ (mask[0] & 0x1F)
    if first & 0x03 != 1 or (first >> 2) & 1 != context.key_phase:
        return None
    high, low = data[offset] ^ mask[1], data[offset + 1] ^ mask[2]
    number: int = decode_packet_number((high << 8) | low, 16, space.expected_packet_number)
    aead = context.aead
    try:
        plain: bytes = aead._aead.decrypt(
            (aead._iv ^ number).to_bytes(12, "big"),
            memoryview(data)[offset + 2 :],
            bytes((first,)) + data[1:offset] + bytes((high, low)),
        )
    except InvalidTag:
        return None
    if not plain or plain[0] != _DATAGRAM_NO_LENGTH[0]:
        return None
    # SECURITY: RFC 9000 section 12.3 requires discarding duplicate packets. aioquic never
    # processes these ones, so a sliding window rejects replays.
    if not replay.accept(number):
        return b""
    if number >= space.expected_packet_number:
        space.expected_packet_number = number + 1
    return plain[1:]


class ReplayWindow:
    """Sliding window of received packet numbers, `REPLAY_WINDOW` wide (as in RFC 4303 3.4.3)."""

    def __init__(self) -> None:
        self.highest = -1
        self._bits = 0

    def accept(self, number: int) -> bool:
        """Record `number`; return False for a duplicate or a number older than the window."""
        if number > self.highest:
            shift = number - self.highest
            if shift >= REPLAY_WINDOW:
                self._bits = 1
            else:
                self._bits = ((self._bits << shift) | 1) & _REPLAY_MASK
            self.highest = number
            return True
        offset = self.highest - number
        if offset >= REPLAY_WINDOW or (self._bits >> offset) & 1:
            return False
        self._bits |= 1 << offset
        return True
