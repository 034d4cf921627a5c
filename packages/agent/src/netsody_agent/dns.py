"""A minimal DNS codec and the resolver for `<hostname>.netsody.me` names.

The resolver returns A records for the hostnames of permitted peers (RFC 1035 section 4),
NXDOMAIN for unknown names inside the zone, and REFUSED for every other name, unless a
forwarder (see `netsody_agent.domains`) takes names of domain resources. Only the question
section of a query is read; queries with more than one question, compression pointers in the
question, or truncated data get FORMERR when their header is readable and are dropped
otherwise. Responses from other servers are read by `parse_response`, which follows
compression pointers (RFC 1035 section 4.1.4) and CNAME chains.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol, cast

logger = logging.getLogger(__name__)

ZONE = "netsody.me"
DEFAULT_TTL = 30

TYPE_A = 1
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1

TYPE_CNAME = 5

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

_HEADER = struct.Struct("!HHHHHH")
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_RD = 0x0100
_OPCODE_MASK = 0x7800
_MAX_NAME_LENGTH = 255
# A CNAME chain longer than this is treated as a loop.
_MAX_CNAME_CHAIN = 8


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


@dataclass(frozen=True)
class Answer:
    """The A records of a response for one name, with the lowest TTL along its CNAME chain."""

    rcode: int
    addresses: tuple[IPv4Address, ...]
    ttl: int


def parse_response(data: bytes, query_id: int, name: str) -> Answer:
    """Parse the response to an A query for `name` sent with `query_id`.

    Only A records reached from `name` through CNAME records of the answer section count.
    Raises `DnsFormatError` when the message is malformed, not a response, or answers another
    query id or question (SECURITY: a forged or stray response must not be taken).
    """
    if len(data) < _HEADER.size:
        raise DnsFormatError(f"response of {len(data)} bytes is shorter than the 12-byte header")
    got_id, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(data)
    if got_id != query_id or not flags & _FLAG_QR:
        raise DnsFormatError(f"message is not the response to query id {query_id}")
    offset = _HEADER.size
    name = name.rstrip(".").lower()
    for _ in range(qdcount):
        question, offset = _read_compressed_name(data, offset)
        if question != name:
            raise DnsFormatError(f"response answers {question!r}, not {name!r}")
        offset += 4
    records: list[tuple[str, int, int, bytes]] = []
    for _ in range(ancount):
        owner, offset = _read_compressed_name(data, offset)
        if offset + 10 > len(data):
            raise DnsFormatError("resource record ends before its fixed fields")
        rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if offset + rdlength > len(data):
            raise DnsFormatError("resource record data runs past the end of the message")
        rdata = data[offset : offset + rdlength]
        if rclass == CLASS_IN and rtype == TYPE_CNAME:
            target, _ = _read_compressed_name(data, offset)
            rdata = target.encode("ascii")
        records.append((owner, rtype, ttl, rdata))
        offset += rdlength
    return _follow_chain(flags & 0x000F, name, records)


def _follow_chain(rcode: int, name: str, records: list[tuple[str, int, int, bytes]]) -> Answer:
    owner = name
    ttls: list[int] = []
    for _ in range(_MAX_CNAME_CHAIN):
        aliases = [(ttl, rdata) for o, t, ttl, rdata in records if o == owner and t == TYPE_CNAME]
        if not aliases:
            break
        ttls.append(aliases[0][0])
        owner = aliases[0][1].decode("ascii")
    addresses: list[IPv4Address] = []
    for record_owner, rtype, ttl, rdata in records:
        if record_owner == owner and rtype == TYPE_A and len(rdata) == 4:
            addresses.append(IPv4Address(rdata))
            ttls.append(ttl)
    return Answer(rcode, tuple(dict.fromkeys(addresses)), min(ttls) if addresses else 0)


def _read_compressed_name(data: bytes, offset: int) -> tuple[str, int]:
    """Read a name that may use compression pointers; return it and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    total = 0
    while True:
        if offset >= len(data):
            raise DnsFormatError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DnsFormatError("compression pointer runs past the end of the message")
            jumps += 1
            if jumps > _MAX_NAME_LENGTH // 2:
                raise DnsFormatError("compression pointers form a loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise DnsFormatError(f"label type {length >> 6} is not supported")
        offset += 1
        if length == 0:
            break
        total += length + 1
        if total > _MAX_NAME_LENGTH:
            raise DnsFormatError("name is longer than 255 bytes")
        if offset + length > len(data):
            raise DnsFormatError("label runs past the end of the message")
        labels.append(data[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    return ".".join(labels), end if end is not None else offset


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


class Forwarder(Protocol):
    """Answers queries for names outside the zone that it takes (domain resources)."""

    def takes(self, name: str) -> bool: ...
    async def answer(self, query: Query, client: tuple[str, int]) -> bytes: ...


# Queries a resolver answers concurrently through its forwarder; more are dropped, so a flood
# cannot pile up tasks and sockets while upstream servers are slow.
MAX_PENDING_QUERIES = 256


class ResolverProtocol(asyncio.DatagramProtocol):
    """Answers datagrams from `table`, handing names the forwarder takes to the forwarder."""

    def __init__(self, table: RecordTable | None, forwarder: Forwarder | None = None) -> None:
        self.table = table
        self.forwarder = forwarder
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self._pending:
            task.cancel()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.forwarder is not None and self._forward(data, addr):
            return
        response = _refuse(data) if self.table is None else self.table.answer(data)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)
        elif response is None:
            logger.debug("dropped an unreadable DNS message of %d bytes from %s", len(data), addr)

    def _forward(self, data: bytes, addr: tuple[str, int]) -> bool:
        assert self.forwarder is not None
        try:
            query = parse_query(data)
        except DnsFormatError:
            return False
        if not self.forwarder.takes(query.question.name):
            return False
        if len(self._pending) >= MAX_PENDING_QUERIES:
            logger.warning(
                "dropped a DNS query from %s: %d queries pending", addr, len(self._pending)
            )
            return True
        task = asyncio.create_task(self._answer(query, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _answer(self, query: Query, addr: tuple[str, int]) -> None:
        assert self.forwarder is not None
        try:
            response = await self.forwarder.answer(query, addr)
        except Exception:
            logger.exception("answering %s for %s failed", query.question.name, addr[0])
            response = build_response(query, RCODE_SERVFAIL, [], ttl=0)
        if self.transport is not None:
            self.transport.sendto(response, addr)


def _refuse(data: bytes) -> bytes | None:
    try:
        query = parse_query(data)
    except DnsFormatError as exc:
        return None if exc.query_id is None else build_error(exc.query_id, RCODE_FORMERR)
    return build_response(query, RCODE_REFUSED, [], ttl=DEFAULT_TTL)


class DnsResolver:
    """A UDP DNS server bound to `host:port`, answering from a `RecordTable` and a forwarder."""

    def __init__(
        self, host: str, port: int, table: RecordTable, forwarder: Forwarder | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.table = table
        self.forwarder = forwarder
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Bind the UDP socket; raises OSError when the address is unavailable."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: ResolverProtocol(self.table, self.forwarder), local_addr=(self.host, self.port)
        )
        self._transport = transport
        logger.info("DNS resolver for *.%s listening on %s:%d", ZONE, self.host, self.port)

    def stop(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            logger.info("DNS resolver stopped")
