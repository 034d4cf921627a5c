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

from aioquic.quic.connection import QuicConnection, QuicConnectionState
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
    # NOTE: reads aioquic's private crypto contexts; see `FastPath.seal`.
    cryptos = connection._cryptos
    return bool(cryptos) and cryptos[Epoch.ONE_RTT].send.is_valid()


def overhead(connection: QuicConnection) -> int:
    """Return the bytes a sealed packet of `connection` adds to its payload."""
    return PACKET_OVERHEAD_WITHOUT_CID + len(connection._peer_cid.cid)


def seal_datagram(connection: QuicConnection, payload: bytes) -> bytes:
    """Build one 1-RTT QUIC packet of `connection` with a DATAGRAM frame holding `payload`.

    A one-off form of `FastPath.seal`; a caller that seals many packets keeps a `FastPath`.
    """
    return FastPath(connection).seal(payload)


def open_datagram(connection: QuicConnection, data: bytes, replay: ReplayWindow) -> bytes | None:
    """Open one packet of `connection` as `FastPath.open` does, with the replay window `replay`."""
    return FastPath(connection, replay).open(data)


class FastPath:
    """Seals and opens the fast-path packets of one connection.

    It looks the connection's 1-RTT keys up once and again only when aioquic replaced them (a
    key update), so a packet costs two cryptographic calls and little else.
    """

    __slots__ = (
        "_connection",
        "_decrypt",
        "_encrypt",
        "_idle_refresh_at",
        "_open_aead",
        "_open_context",
        "_open_iv",
        "_open_mask",
        "_seal_aead",
        "_seal_context",
        "_seal_iv",
        "_seal_mask",
        "_space",
        "replay",
    )

    def __init__(self, connection: QuicConnection, replay: ReplayWindow | None = None) -> None:
        self._connection = connection
        self.replay = replay if replay is not None else ReplayWindow()
        self._seal_context: Any = None
        self._seal_aead: Any = None
        self._open_context: Any = None
        self._open_aead: Any = None
        self._space: Any = None
        self._idle_refresh_at = 0.0

    def seal(self, payload: bytes) -> bytes:
        """Build one complete 1-RTT QUIC packet with a DATAGRAM frame holding `payload`.

        It borrows the connection's packet number and 1-RTT keys, so the result is a packet of
        this connection that any QUIC receiver accepts, but aioquic neither tracks it for loss
        recovery nor counts it against congestion control. Call only once `can_seal` is True.
        """
        # NOTE: aioquic has no API to encrypt a packet of a connection, so this reads its
        # private packet number counter, peer connection ID and 1-RTT keys. It protects the
        # packet as RFC 9001 section 5 prescribes, with fewer copies than aioquic's own code.
        context = self._seal_context
        if context is None or context.aead is not self._seal_aead:
            context = self._load_seal()
        connection = self._connection
        number = connection._packet_number
        connection._packet_number = number + 1
        first = _SHORT_HEADER_BITS | (context.key_phase << 2)
        cid = connection._peer_cid.cid
        high, low = (number >> 8) & 0xFF, number & 0xFF
        # An empty DATAGRAM frame leaves too little ciphertext for the header protection sample:
        # a PADDING frame in front fills it (such a packet then takes aioquic's receive path).
        frames = _DATAGRAM_NO_LENGTH + payload if payload else b"\x00" + _DATAGRAM_NO_LENGTH
        sealed: bytes = self._encrypt(
            (self._seal_iv ^ number).to_bytes(12, "big"),
            frames,
            bytes((first,)) + cid + bytes((high, low)),
        )
        # Header protection (RFC 9001 section 5.4): the sample starts 4 bytes after the packet
        # number, which is 2 bytes into the ciphertext with a 2-byte packet number.
        mask: bytes = self._seal_mask(sealed[2:18])
        return (
            bytes((first ^ (mask[0] & 0x1F),))
            + cid
            + bytes((high ^ mask[1], low ^ mask[2]))
            + sealed
        )

    def _load_seal(self) -> Any:
        context: Any = self._connection._cryptos[Epoch.ONE_RTT].send
        aead = context.aead
        self._seal_context = context
        self._seal_aead = aead
        self._encrypt = aead._aead.encrypt
        self._seal_iv = aead._iv
        self._seal_mask = context.hp._mask
        return context

    def open(self, data: bytes, now: float | None = None) -> bytes | None:
        """Decrypt a 1-RTT packet that contains exactly one DATAGRAM frame and return its data.

        Returns None when the packet contains anything else (ACKs, streams, pings), uses another
        packet number length or key phase, or does not decrypt. The caller then hands the
        packet to aioquic unchanged. Returns b"" for a replayed packet (see `replay`). With
        `now` (aioquic's clock), an opened packet restarts the connection's idle timer.
        """
        context = self._open_context
        if context is None or context.aead is not self._open_aead:
            context = self._load_open()
            if context is None:
                return None
        offset = 1 + len(self._connection.host_cid)
        if len(data) < offset + 20 or data[0] & 0xC0 != 0x40:
            return None
        mask: bytes = self._open_mask(data[offset + 4 : offset + 20])
        first = data[0] ^ (mask[0] & 0x1F)
        if first & 0x03 != 1 or (first >> 2) & 1 != context.key_phase:
            return None
        space = self._space
        number = _decode_packet_number(
            ((data[offset] ^ mask[1]) << 8) | (data[offset + 1] ^ mask[2]),
            space.expected_packet_number,
        )
        try:
            plain: bytes = self._decrypt(
                (self._open_iv ^ number).to_bytes(12, "big"),
                memoryview(data)[offset + 2 :],
                bytes((first,)) + data[1:offset] + bytes((number >> 8 & 0xFF, number & 0xFF)),
            )
        except InvalidTag:
            return None
        if not plain or plain[0] != _DATAGRAM_NO_LENGTH[0]:
            return None
        # SECURITY: RFC 9000 section 12.3 requires discarding duplicate packets. aioquic never
        # processes these ones, so a sliding window rejects replays.
        if not self.replay.accept(number):
            return b""
        if number >= space.expected_packet_number:
            space.expected_packet_number = number + 1
        if now is not None and now >= self._idle_refresh_at:
            self._restart_idle_timer(now)
        return plain[1:]

    def _restart_idle_timer(self, now: float) -> None:
        """Restart aioquic's idle timer, as a packet it processed itself would.

        RFC 9000 section 10.1 restarts the timer on every packet received and processed. aioquic
        never sees the opened packets, so without this a connection that carries only fast-path
        packets in one direction dies of an idle timeout. Once a second is enough.
        """
        # NOTE: sets aioquic's private idle deadline; a connection that is closing keeps its
        # closing period.
        connection: Any = self._connection
        if connection._state is QuicConnectionState.CONNECTED and not connection._close_pending:
            connection._close_at = now + connection._idle_timeout()
            connection._ack_eliciting_sent_since_receipt = False
        self._idle_refresh_at = now + 1.0

    def _load_open(self) -> Any:
        """Look up the receive keys; None while the connection has no 1-RTT keys yet."""
        connection = self._connection
        space = connection._spaces.get(Epoch.ONE_RTT) if connection._spaces else None
        if space is None or not connection._cryptos:
            return None
        context: Any = connection._cryptos[Epoch.ONE_RTT].recv
        aead = context.aead
        if aead is None:
            return None
        self._space = space
        self._open_context = context
        self._open_aead = aead
        self._decrypt = aead._aead.decrypt
        self._open_iv = aead._iv
        self._open_mask = context.hp._mask
        return context


def _decode_packet_number(truncated: int, expected: int) -> int:
    """Recover a full packet number from its 2-byte form (RFC 9000 appendix A.3)."""
    candidate = (expected & ~0xFFFF) | truncated
    if candidate <= expected - 0x8000 and candidate < (1 << 62) - 0x10000:
        return candidate + 0x10000
    if candidate > expected + 0x8000 and candidate >= 0x10000:
        return candidate - 0x10000
    return candidate


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
