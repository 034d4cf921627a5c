"""A minimal DNS codec and the resolver for `<hostname>.netsody.me` names.

The resolver returns A records for the hostnames of permitted peers (RFC 1035 section 4),
NXDOMAIN for unknown names inside the zone, and REFUSED for every name outside it, because it
forwards nothing. Only the question section of a query is read; queries with more than one
question, compression pointers in the question, or truncated data get FORMERR when their header
is readable and are dropped otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import cast

logger = logging.getLogger(__name__)

ZONE = "netsody.me"
DEFAULT_TTL = 30

TYPE_A = 1
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

_HEADER = struct.Struct("!HHHHHH")
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_RD = 0x0100
_OPCODE_MASK = 0x7800
_MAX_NAME_LENGTH = 255


class DnsFormatError(ValueError):
    """A DNS message could not be parsed; `query_id` is set when the header was readable."""

    def __init__(self, message: str, query_id: int | None = None) -> None:
        super().__init__(message)
        self.query_id = query_id


@dataclass(frozen=True)
class Question:
    """The single question of a query: lowercase name without the trailing dot, type, class."""

    name: str
    qtype: int
    qclass: int


@dataclass(frozen=True)
class Query:
    """A parsed DNS query: header id, flags and its question."""

    query_id: int
    flags: int
    question: Question
    question_wire: bytes


def parse_query(data: bytes) -> Query:
    """Parse a DNS query; raise `DnsFormatError` when it is malformed or not a standard query."""
    if len(data) < _HEADER.size:
        raise DnsFormatError(f"message of {len(data)} bytes is shorter than the 12-byte header")
    query_id, flags, qdcount, _, _, _ = _HEADER.unpack_from(data)
    if flags & _FLAG_QR:
        raise DnsFormatError("message is a response, not a query", query_id)
    if qdcount != 1:
        raise DnsFormatError(f"query has {qdcount} questions; exactly 1 is supported", query_id)
    name, offset = _read_name(data, _HEADER.size, query_id)
    if offset + 4 > len(data):
        raise DnsFormatError("question ends before its type and class", query_id)
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question = Question(name=name, qtype=qtype, qclass=qclass)
    return Query(query_id, flags, question, data[_HEADER.size : offset + 4])


def _read_name(data: bytes, offset: int, query_id: int) -> tuple[str, int]:
    labels: list[str] = []
    total = 0
    while True:
        if offset >= len(data):
            raise DnsFormatError("name runs past the end of the message", query_id)
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise DnsFormatError("compression pointers in the question are not supported", query_id)
        if offset + length > len(data):
            raise DnsFormatError("label runs past the end of the message", query_id)
        total += length + 1
        if total > _MAX_NAME_LENGTH:
            raise DnsFormatError("name is longer than 255 bytes", query_id)
        labels.append(data[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    return ".".join(labels), offset


def encode_name(name: str) -> bytes:
    """Encode a dotted name as DNS labels (no compression)."""
    out = bytearray()
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError(f"label {label!r} is longer than 63 bytes")
            out += bytes([len(raw)]) + raw
    out.append(0)
    return bytes(out)


def build_query(name: str, qtype: int = TYPE_A, *, query_id: int = 0) -> bytes:
    """Build a standard recursive query for one name (used by tests and `netsody status`)."""
    header = _HEADER.pack(query_id, _FLAG_RD, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def build_response(query: Query, rcode: int, answers: list[IPv4Address], *, ttl: int) -> bytes:
    """Build an authoritative response that repeats the question and carries A answers."""
    flags = _FLAG_QR | _FLAG_AA | (query.flags & (_OPCODE_MASK | _FLAG_RD)) | rcode
    header = _HEADER.pack(query.query_id, flags, 1, len(answers), 0, 0)
    records = b"".join(
        # 0xC00C points at the question name right after the header (RFC 1035 section 4.1.4).
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + address.packed
        for address in answers
    )
    return header + query.question_wire + records


def build_error(query_id: int, rcode: int) -> bytes:
    """Build a response without a question section, for queries that could not be parsed."""
    return _HEADER.pack(query_id, _FLAG_QR | rcode, 0, 0, 0, 0)


def parse_a_answers(data: bytes) -> tuple[int, list[IPv4Address]]:
    """Return the rcode and the A records of a response built by `build_response`."""
    _, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(data)
    offset = _HEADER.size
    for _ in range(qdcount):
        _, offset = _read_name(data, offset, 0)
        offset += 4
    answers = []
    for _ in range(ancount):
        _, rtype, _, _, rdlength = struct.unpack_from("!HHHIH", data, offset)
        offset += 12
        if rtype == TYPE_A and rdlength == 4:
            answers.append(IPv4Address(data[offset : offset + 4]))
        offset += rdlength
    return flags & 0x000F, answers


class RecordTable:
    """The resolver's records: hostname (without the zone) to IPv4 address."""

    def __init__(self, zone: str = ZONE) -> None:
        self.zone = zone
        self._records: dict[str, IPv4Address] = {}

    def replace(self, records: Mapping[str, IPv4Address]) -> None:
        """Replace all records; names are compared case-insensitively."""
        self._records = {name.lower(): address for name, address in records.items()}

    def names(self) -> dict[str, str]:
        """Return the full names and addresses, for status output."""
        return {f"{name}.{self.zone}": str(ip) for name, ip in sorted(self._records.items())}

    def answer(self, data: bytes) -> bytes | None:
        """Return the response to the query in `data`, or None when it must be dropped."""
        try:
            query = parse_query(data)
        except DnsFormatError as exc:
            if exc.query_id is None:
                return None
            return build_error(exc.query_id, RCODE_FORMERR)
        return self._answer_query(query)

    def _answer_query(self, query: Query) -> bytes:
        question = query.question
        if query.flags & _OPCODE_MASK:
            return build_response(query, RCODE_NOTIMP, [], ttl=DEFAULT_TTL)
        suffix = "." + self.zone
        if question.qclass != CLASS_IN or not question.name.endswith(suffix):
            if question.name == self.zone and question.qclass == CLASS_IN:
                return build_response(query, RCODE_NOERROR, [], ttl=DEFAULT_TTL)
            return build_response(query, RCODE_REFUSED, [], ttl=DEFAULT_TTL)
        host = question.name[: -len(suffix)]
        address = self._records.get(host)
        if address is None:
            return build_response(query, RCODE_NXDOMAIN, [], ttl=DEFAULT_TTL)
        if question.qtype in (TYPE_A, TYPE_ANY):
            return build_response(query, RCODE_NOERROR, [address], ttl=DEFAULT_TTL)
        # The name exists but has no record of this type (for example AAAA): NOERROR, no data.
        return build_response(query, RCODE_NOERROR, [], ttl=DEFAULT_TTL)


class _ResolverProtocol(asyncio.DatagramProtocol):
    def __init__(self, table: RecordTable) -> None:
        self.table = table
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = self.table.answer(data)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)
        elif response is None:
            logger.debug("dropped an unreadable DNS message of %d bytes from %s", len(data), addr)


class DnsResolver:
    """A UDP DNS server bound to `host:port`, answering from a `RecordTable`."""

    def __init__(self, host: str, port: int, table: RecordTable) -> None:
        self.host = host
        self.port = port
        self.table = table
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Bind the UDP socket; raises OSError when the address is unavailable."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _ResolverProtocol(self.table), local_addr=(self.host, self.port)
        )
        self._transport = transport
        logger.info("DNS resolver for *.%s listening on %s:%d", ZONE, self.host, self.port)

    def stop(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            logger.info("DNS resolver stopped")
