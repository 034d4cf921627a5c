"""Wire formats of the super peer protocol, shared by the super peer and the agent.

Everything here is sans-I/O: functions and small state machines that take bytes and return bytes
and messages. `docs/superpeer-protocol.md` describes the protocol around these formats.

- Variable-length integers as in QUIC (RFC 9000 section 16).
- Signaling messages: each one is a varint length followed by that many bytes of body, and the
  body is a varint message type followed by the fields of that type.
- Capsules (RFC 9297 section 3.2) for the HTTP/2 relay: varint type, varint length, value.
- HTTP datagram payloads of a bound CONNECT-UDP relay: context ID 0, then the peer address
  (IP version byte, 4 or 16 address bytes, 2-byte port), then the UDP payload.
- `SignalingClient`: the agent's side of a signaling stream as a state machine.

Every parser raises only `WireError` on malformed input.
"""

from __future__ import annotations

import enum
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from netsody_common.errors import NetsodyError

# Extended CONNECT (RFC 8441 for HTTP/2, RFC 9220 for HTTP/3) of the signaling stream.
SIGNAL_PROTOCOL = "netsody-signal"
SIGNAL_PATH = "/.well-known/netsody/signal/v1"
# CONNECT-UDP (RFC 9298) with a wildcard target: the tunnel is bound to a public port and every
# datagram names its peer, in the manner of the "connect-udp-bind" extension draft.
CONNECT_UDP_PROTOCOL = "connect-udp"
RELAY_PATH = "/.well-known/masque/udp/*/*/"
BIND_HEADER = "connect-udp-bind"
PROXY_PUBLIC_ADDRESS_HEADER = "proxy-public-address"
CAPSULE_PROTOCOL_HEADER = "capsule-protocol"
# Response header that names a rejection reason code (see `ErrorCode`) on 4xx/5xx responses.
ERROR_CODE_HEADER = "netsody-error-code"

# Largest signaling message body. A message with 64 candidates of IPv6 fits many times over.
MAX_MESSAGE_SIZE = 8192
# Largest capsule value accepted: one HTTP datagram of a 64 KiB UDP payload plus its prefix.
MAX_CAPSULE_SIZE = 65536 + 32
MAX_CANDIDATES = 64
MAX_REASON_LENGTH = 512
CHALLENGE_SIZE = 32
PK_SIZE = 32
SIGNATURE_SIZE = 64
# Byte string signed by the agent: AUTH_CONTEXT + challenge + raw public key.
AUTH_CONTEXT = b"netsody-sp-auth-v1:"

CAPSULE_DATAGRAM = 0x00
# Context ID of the UDP payloads with an address prefix in a bound CONNECT-UDP tunnel.
BOUND_CONTEXT_ID = 0

_VARINT_MAX = (1 << 62) - 1
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class WireError(NetsodyError):
    """Bytes received from the network do not follow the super peer protocol."""


class ErrorCode(enum.IntEnum):
    """Reason codes of `Rejected`, `PeerUnavailable` and the `netsody-error-code` header."""

    MALFORMED = 1
    UNEXPECTED_MESSAGE = 2
    INVALID_PUBLIC_KEY = 3
    BAD_SIGNATURE = 4
    WEAK_PROOF_OF_WORK = 5
    NOT_AUTHENTICATED = 6
    TOO_MANY_SESSIONS = 7
    AUTHENTICATION_TIMEOUT = 8
    REPLACED = 9
    PEER_OFFLINE = 10
    RATE_LIMITED = 11
    PORT_POOL_EXHAUSTED = 12
    RELAY_LIMIT = 13
    SHUTTING_DOWN = 14
    IDLE_TIMEOUT = 15


class CandidateKind(enum.IntEnum):
    """The source of a candidate address."""

    HOST = 0  # an address of a local interface, reported by the agent
    REFLEXIVE = 1  # the source address the super peer observed
    RELAY = 2  # a public port of the super peer bound to the agent's relay tunnel


@dataclass(frozen=True, slots=True)
class Candidate:
    """An address at which a peer may be reachable over UDP."""

    kind: CandidateKind
    ip: IPv4Address | IPv6Address
    port: int


# Signaling messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Server to agent, first message: random bytes to sign and the required difficulty."""

    nonce: bytes
    pow_difficulty: int


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Agent to server: identity, proof of work, signature and local candidates."""

    pk: str
    pow_nonce: int
    signature: bytes
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Server to agent: the session is open; the address the server observed for the agent."""

    reflexive: Candidate | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Server to agent: the session is refused or closed, with a reason. The stream ends."""

    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True)
class UpdateCandidates:
    """Agent to server: replace the agent's host candidates."""

    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Agent to server: ask for the candidates of a peer and tell the peer about us."""

    request_id: int
    peer_pk: str


@dataclass(frozen=True, slots=True)
class PeerCandidates:
    """Server to agent: the candidates of a peer.

    `request_id` is the id of the agent's `ConnectRequest`, or 0 when another agent requested
    this one and the server pushes that agent's candidates, so that both sides probe at once.
    """

    request_id: int
    peer_pk: str
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class PeerUnavailable:
    """Server to agent: a `ConnectRequest` cannot be served (the peer is offline or unknown)."""

    request_id: int
    peer_pk: str
    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Either side: a keepalive; the receiver replies with `Pong` of the same value."""

    value: int


@dataclass(frozen=True, slots=True)
class Pong:
    """Either side: the reply to `Ping`."""

    value: int


Message = (
    Challenge
    | Authenticate
    | Authenticated
    | Rejected
    | UpdateCandidates
    | ConnectRequest
    | PeerCandidates
    | PeerUnavailable
    | Ping
    | Pong
)


class MessageType(enum.IntEnum):
    """Varint type at the start of each signaling message body."""

    CHALLENGE = 0x01
    AUTHENTICATE = 0x02
    AUTHENTICATED = 0x03
    REJECTED = 0x04
    UPDATE_CANDIDATES = 0x05
    CONNECT_REQUEST = 0x06
    PEER_CANDIDATES = 0x07
    PEER_UNAVAILABLE = 0x08
    PING = 0x09
    PONG = 0x0A


# Varints ------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Encode a QUIC variable-length integer (RFC 9000 section 16)."""
    if value < 0 or value > _VARINT_MAX:
        raise ValueError(f"varint {value} is out of range 0..{_VARINT_MAX}")
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return _U16.pack(value | 0x4000)
    if value < 0x40000000:
        return struct.pack("!I", value | 0x80000000)
    return _U64.pack(value | 0xC000000000000000)


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode a varint at `offset`; return the value and the offset after it.

    Raises `WireError` when `data` ends inside the varint.
    """
    if offset >= len(data):
        raise WireError("truncated varint: no bytes left")
    first = data[offset]
    length = 1 << (first >> 6)
    if offset + length > len(data):
        raise WireError(f"truncated varint: {length} bytes expected")
    value = first & 0x3F
    for index in range(offset + 1, offset + length):
        value = (value << 8) | data[index]
    return value, offset + length


# Field readers and writers ------------------------------------------------------------------


class _Reader:
    """Cursor over one message body; every read raises `WireError` past the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def varint(self) -> int:
        value, self._offset = decode_varint(self._data, self._offset)
        return value

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise WireError(f"truncated field: {size} bytes expected")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def text(self, max_length: int) -> str:
        size = self.varint()
        if size > max_length:
            raise WireError(f"text field of {size} bytes is longer than {max_length}")
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError("text field is not valid UTF-8") from exc

    def pk(self) -> str:
        return self.take(PK_SIZE).hex()

    def candidate(self) -> Candidate:
        try:
            kind = CandidateKind(self.take(1)[0])
        except ValueError as exc:
            raise WireError(f"unknown candidate kind: {exc}") from exc
        ip, port = self.address()
        return Candidate(kind, ip, port)

    def address(self) -> tuple[IPv4Address | IPv6Address, int]:
        version = self.take(1)[0]
        if version == 4:
            ip: IPv4Address | IPv6Address = IPv4Address(self.take(4))
        elif version == 6:
            ip = IPv6Address(self.take(16))
        else:
            raise WireError(f"unknown IP version {version}: expected 4 or 6")
        return ip, self.u16()

    def candidates(self) -> tuple[Candidate, ...]:
        count = self.varint()
        if count > MAX_CANDIDATES:
            raise WireError(f"{count} candidates exceed the maximum of {MAX_CANDIDATES}")
        return tuple(self.candidate() for _ in range(count))

    def end(self) -> None:
        if self._offset != len(self._data):
            raise WireError(f"{len(self._data) - self._offset} trailing bytes after the message")


def _pk_bytes(pk: str) -> bytes:
    try:
        raw = bytes.fromhex(pk)
    except ValueError:
        raw = b""
    if len(raw) != PK_SIZE or raw.hex() != pk:
        raise ValueError(f"public key {pk!r} is not 64 lowercase hex characters")
    return raw


def _text(value: str, max_length: int) -> bytes:
    raw = value.encode("utf-8")[:max_length]
    # Cut at a character boundary so the receiver can decode the truncated text.
    raw = raw.decode("utf-8", errors="ignore").encode("utf-8")
    return encode_varint(len(raw)) + raw


def encode_address(ip: IPv4Address | IPv6Address, port: int) -> bytes:
    """Encode an address as IP version byte, address bytes and 2-byte port."""
    return bytes((ip.version,)) + ip.packed + _U16.pack(port)


def _candidates(candidates: tuple[Candidate, ...]) -> bytes:
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"{len(candidates)} candidates exceed the maximum of {MAX_CANDIDATES}")
    parts = [encode_varint(len(candidates))]
    parts.extend(bytes((c.kind,)) + encode_address(c.ip, c.port) for c in candidates)
    return b"".join(parts)


# Message codec ------------------------------------------------------------------------------


def _encode_body(message: Message) -> bytes:
    match message:
        case Challenge(nonce, difficulty):
            return bytes(nonce) + encode_varint(difficulty)
        case Authenticate(pk, nonce, signature, candidates):
            return _pk_bytes(pk) + _U64.pack(nonce) + bytes(signature) + _candidates(candidates)
        case Authenticated(reflexive):
            if reflexive is None:
                return b"\x00"
            return b"\x01" + encode_address(reflexive.ip, reflexive.port)
        case Rejected(code, reason):
            return _U16.pack(code) + _text(reason, MAX_REASON_LENGTH)
        case UpdateCandidates(candidates):
            return _candidates(candidates)
        case ConnectRequest(request_id, peer_pk):
            return encode_varint(request_id) + _pk_bytes(peer_pk)
        case PeerCandidates(request_id, peer_pk, candidates):
            return encode_varint(request_id) + _pk_bytes(peer_pk) + _candidates(candidates)
        case PeerUnavailable(request_id, peer_pk, code, reason):
            return (
                encode_varint(request_id)
                + _pk_bytes(peer_pk)
                + _U16.pack(code)
                + _text(reason, MAX_REASON_LENGTH)
            )
        case Ping(value) | Pong(value):
            return _U64.pack(value)
    raise TypeError(f"not a signaling message: {message!r}")


_TYPE_OF: dict[type, MessageType] = {
    Challenge: MessageType.CHALLENGE,
    Authenticate: MessageType.AUTHENTICATE,
    Authenticated: MessageType.AUTHENTICATED,
    Rejected: MessageType.REJECTED,
    UpdateCandidates: MessageType.UPDATE_CANDIDATES,
    ConnectRequest: MessageType.CONNECT_REQUEST,
    PeerCandidates: MessageType.PEER_CANDIDATES,
    PeerUnavailable: MessageType.PEER_UNAVAILABLE,
    Ping: MessageType.PING,
    Pong: MessageType.PONG,
}


def encode_message(message: Message) -> bytes:
    """Encode one signaling message with its length prefix.

    Raises `ValueError` on fields that cannot be encoded (a malformed pk, too many candidates).
    """
    body = encode_varint(_TYPE_OF[type(message)]) + _encode_body(message)
    if len(body) > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return encode_varint(len(body)) + body


def _error_code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError as exc:
        raise WireError(f"unknown error code {value}") from exc


def _decode_fields(kind: int, reader: _Reader) -> Message:
    if kind == MessageType.CHALLENGE:
        return Challenge(reader.take(CHALLENGE_SIZE), reader.varint())
    if kind == MessageType.AUTHENTICATE:
        return Authenticate(
            reader.pk(), reader.u64(), reader.take(SIGNATURE_SIZE), reader.candidates()
        )
    if kind == MessageType.AUTHENTICATED:
        if reader.take(1)[0] == 0:
            return Authenticated(None)
        ip, port = reader.address()
        return Authenticated(Candidate(CandidateKind.REFLEXIVE, ip, port))
    if kind == MessageType.REJECTED:
        return Rejected(_error_code(reader.u16()), reader.text(MAX_REASON_LENGTH))
    if kind == MessageType.UPDATE_CANDIDATES:
        return UpdateCandidates(reader.candidates())
    if kind == MessageType.CONNECT_REQUEST:
        return ConnectRequest(reader.varint(), reader.pk())
    if kind == MessageType.PEER_CANDIDATES:
        return PeerCandidates(reader.varint(), reader.pk(), reader.candidates())
    if kind == MessageType.PEER_UNAVAILABLE:
        return PeerUnavailable(
            reader.varint(), reader.pk(), _error_code(reader.u16()), reader.text(MAX_REASON_LENGTH)
        )
    if kind == MessageType.PING:
        return Ping(reader.u64())
    if kind == MessageType.PONG:
        return Pong(reader.u64())
    raise WireError(f"unknown message type {kind:#x}")


def decode_message_body(body: bytes) -> Message:
    """Decode one message body (without its length prefix). Raises `WireError`."""
    reader = _Reader(body)
    message = _decode_fields(reader.varint(), reader)
    reader.end()
    return message


class MessageReader:
    """Splits a byte stream into signaling messages; buffers at most one message."""

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_message_size

    def feed(self, data: bytes) -> list[Message]:
        """Append received bytes; return the complete messages. Raises `WireError`."""
        self._buffer += data
        messages: list[Message] = []
        while self._buffer:
            try:
                size, start = decode_varint(self._buffer)
            except WireError:
                break  # the length prefix itself is not complete yet
            if size > self._max:
                raise WireError(f"message of {size} bytes exceeds the maximum of {self._max}")
            if size == 0:
                raise WireError("empty message")
            if len(self._buffer) < start + size:
                break
            body = bytes(self._buffer[start : start + size])
            del self._buffer[: start + size]
            messages.append(decode_message_body(body))
        return messages


# Capsules (RFC 9297 section 3.2) ------------------------------------------------------------


def encode_capsule(capsule_type: int, value: bytes) -> bytes:
    """Encode one capsule: varint type, varint length, value."""
    return encode_varint(capsule_type) + encode_varint(len(value)) + value


def encode_datagram_capsule(payload: bytes) -> bytes:
    """Encode an HTTP datagram payload as a DATAGRAM capsule (RFC 9297 section 3.5)."""
    return encode_capsule(CAPSULE_DATAGRAM, payload)


class CapsuleReader:
    """Splits a CONNECT stream into capsules `(type, value)`; buffers at most one capsule.

    Unknown capsule types are returned like any other; RFC 9297 section 3.2 asks the receiver
    to ignore the ones it does not know.
    """

    def __init__(self, max_capsule_size: int = MAX_CAPSULE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_capsule_size

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Append received bytes; return the complete capsules. Raises `WireError`."""
        self._buffer += data
        capsules: list[tuple[int, bytes]] = []
        while self._buffer:
            try:
                capsule_type, offset = decode_varint(self._buffer)
                size, start = decode_varint(self._buffer, offset)
            except WireError:
                if len(self._buffer) > 16:
                    raise  # two varints take at most 16 bytes
                break
            if size > self._max:
                raise WireError(f"capsule of {size} bytes exceeds the maximum of {self._max}")
            if len(self._buffer) < start + size:
                break
            capsules.append((capsule_type, bytes(self._buffer[start : start + size])))
            del self._buffer[: start + size]
        return capsules


# HTTP datagrams -----------------------------------------------------------------------------


def encode_h3_datagram(stream_id: int, payload: bytes) -> bytes:
    """Prefix an HTTP datagram with its quarter stream ID (RFC 9297 section 2.1)."""
    return encode_varint(stream_id // 4) + payload


def decode_h3_datagram(data: bytes) -> tuple[int, bytes]:
    """Return the request stream ID and the payload of a QUIC DATAGRAM frame's content."""
    quarter, offset = decode_varint(data)
    return quarter * 4, data[offset:]


def encode_bound_datagram(host: str, port: int, payload: bytes) -> bytes:
    """Encode a UDP payload for a bound tunnel, addressed to or received from `host:port`.

    Raises `ValueError` when `host` is not an IP address literal.
    """
    try:
        if ":" in host:
            return b"\x00\x06" + socket.inet_pton(socket.AF_INET6, host) + _U16.pack(port) + payload
        return b"\x00\x04" + socket.inet_pton(socket.AF_INET, host) + _U16.pack(port) + payload
    except OSError as exc:
        raise ValueError(f"{host!r} is not an IP address") from exc


def decode_bound_datagram(data: bytes) -> tuple[str, int, bytes]:
    """Decode an HTTP datagram payload of a bound tunnel into `(host, port, udp_payload)`.

    Raises `WireError` on an unknown context ID, IP version or a truncated prefix.
    """
    if len(data) < 8 or data[0] != BOUND_CONTEXT_ID:
        raise WireError("bound datagram: context ID 0 and an address prefix expected")
    version = data[1]
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, data[2:6]), _U16.unpack_from(data, 6)[0], data[8:]
    if version == 6 and len(data) >= 20:
        host = socket.inet_ntop(socket.AF_INET6, data[2:18])
        return host, _U16.unpack_from(data, 18)[0], data[20:]
    raise WireError(f"bound datagram: unknown IP version {version} or truncated address")


# Request headers ----------------------------------------------------------------------------

Headers = list[tuple[bytes, bytes]]


def signal_request_headers(authority: str, scheme: str = "https") -> Headers:
    """Headers of the extended CONNECT that opens a signaling stream."""
    return [
        (b":method", b"CONNECT"),
        (b":protocol", SIGNAL_PROTOCOL.encode()),
        (b":scheme", scheme.encode()),
        (b":authority", authority.encode()),
        (b":path", SIGNAL_PATH.encode()),
    ]


def relay_request_headers(authority: str, scheme: str = "https") -> Headers:
    """Headers of the CONNECT-UDP request that opens the bound relay tunnel."""
    return [
        (b":method", b"CONNECT"),
        (b":protocol", CONNECT_UDP_PROTOCOL.encode()),
        (b":scheme", scheme.encode()),
        (b":authority", authority.encode()),
        (b":path", RELAY_PATH.encode()),
        (CAPSULE_PROTOCOL_HEADER.encode(), b"?1"),
        (BIND_HEADER.encode(), b"?1"),
    ]


def format_proxy_public_addresses(addresses: list[tuple[str, int]]) -> str:
    """Format `proxy-public-address` values: `1.2.3.4:5, [2001:db8::1]:5`."""
    return ", ".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in addresses
    )


def parse_proxy_public_addresses(value: str) -> list[tuple[IPv4Address | IPv6Address, int]]:
    """Parse a `proxy-public-address` header value. Raises `WireError`."""
    result: list[tuple[IPv4Address | IPv6Address, int]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, sep, port = item.rpartition(":")
        try:
            ip = ip_address(host.removeprefix("[").removesuffix("]"))
            number = int(port)
        except ValueError as exc:
            raise WireError(f"invalid proxy-public-address entry {item!r}") from exc
        if not sep or not 0 < number < 65536:
            raise WireError(f"invalid proxy-public-address entry {item!r}")
        result.append((ip, number))
    return result


# The agent's side of a signaling stream ---------------------------------------------------------


def auth_payload(challenge: bytes, pk: str) -> bytes:
    """Return the bytes an agent signs to prove it has the private key of `pk`."""
    return AUTH_CONTEXT + challenge + _pk_bytes(pk)


class SignalingClient:
    """The agent's signaling state machine, without I/O.

    Feed received stream bytes to `receive_data`, which answers the server's `Challenge` by
    itself and returns every other message; send whatever `data_to_send` returns.
    `authenticated` becomes true after `Authenticated`; `rejected` holds a `Rejected` if one came.
    """

    def __init__(
        self,
        pk: str,
        pow_nonce: int,
        sign: Callable[[bytes], bytes],
        candidates: tuple[Candidate, ...] = (),
    ) -> None:
        self.pk = pk
        self.authenticated = False
        self.reflexive: Candidate | None = None
        self.rejected: Rejected | None = None
        self._pow_nonce = pow_nonce
        self._sign = sign
        self._candidates = candidates
        self._reader = MessageReader()
        self._outgoing = bytearray()
        self._next_request_id = 1

    def receive_data(self, data: bytes) -> list[Message]:
        """Process received bytes; return the messages for the caller. Raises `WireError`."""
        result: list[Message] = []
        for message in self._reader.feed(data):
            if isinstance(message, Challenge):
                self._send(
                    Authenticate(
                        self.pk,
                        self._pow_nonce,
                        self._sign(auth_payload(message.nonce, self.pk)),
                        self._candidates,
                    )
                )
                continue
            if isinstance(message, Authenticated):
                self.authenticated = True
                self.reflexive = message.reflexive
            elif isinstance(message, Rejected):
                self.rejected = message
            elif isinstance(message, Ping):
                self._send(Pong(message.value))
            result.append(message)
        return result

    def request_peer(self, peer_pk: str) -> int:
        """Queue a `ConnectRequest` for `peer_pk`; return its request id."""
        request_id = self._next_request_id
        self._next_request_id += 1
        self._send(ConnectRequest(request_id, peer_pk))
        return request_id

    def update_candidates(self, candidates: tuple[Candidate, ...]) -> None:
        """Queue the agent's new host candidates."""
        self._candidates = candidates
        self._send(UpdateCandidates(candidates))

    def ping(self) -> int:
        """Queue a keepalive `Ping`; return its value."""
        value = secrets.randbits(63)
        self._send(Ping(value))
        return value

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the server."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def _send(self, message: Message) -> None:
        self._outgoing += encode_message(message)
