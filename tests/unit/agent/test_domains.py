"""Domain resource resolution: the gateway's checks, forwarding, and reading upstream answers.

The upstream DNS server is a real UDP responder on 127.0.0.1 (a test double for the internal
DNS a gateway sees), so queries, ids and timeouts go through real sockets. The test network
uses loopback addresses as overlay addresses, so the client's forwarder can send from its own
overlay address to the gateway's resolver without a TUN device.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from office_network import CLIENT, GATEWAY, office_document, policy

from netsody_agent.dns import (
    RCODE_NOERROR,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    DnsFormatError,
    ResolverProtocol,
    build_query,
    parse_a_answers,
    parse_query,
    parse_response,
)
from netsody_agent.domains import (
    MAX_ANSWER_ADDRESSES,
    DomainForwarder,
    GatewayResolver,
    query_a,
    read_nameservers,
)
from netsody_common._domains import MIN_TTL_SECONDS
from netsody_common.document import parse_document
from netsody_common.policy import compile_for_node

DOCUMENT = office_document(
    network="127.0.0.0/24",
    nodes={"client": "127.0.0.2", "gateway": "127.0.0.1", "other": "127.0.0.3"},
    resources={"*.example.internal": GATEWAY},
    policies=[
        policy(["node::client"], ["resource::*.example.internal"]),
        policy(["node::other"], ["node::gateway"]),
    ],
)

APP = "192.168.7.10"
SHORT = "192.168.7.11"


def encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def upstream_response(query: bytes, records: list[tuple[str, int, int, bytes]], rcode=0) -> bytes:
    """Build a response with compressed owner names: (owner, type, ttl, rdata) per record."""
    query_id = struct.unpack_from("!H", query)[0]
    question = query[12:]
    body = b""
    for owner, rtype, ttl, rdata in records:
        name = struct.pack("!H", 0xC00C) if owner == "@" else encode(owner)
        body += name + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    header = struct.pack("!HHHHHH", query_id, 0x8180 | rcode, 1, len(records), 0, 0)
    return header + question + body


class Upstream(asyncio.DatagramProtocol):
    """A UDP responder on loopback: name to the records it answers with, and a query log."""

    def __init__(self, answers: dict[str, list[tuple[str, int, int, bytes]]]) -> None:
        self.answers = answers
        self.queries: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        name = parse_query(data).question.name
        self.queries.append(name)
        records = self.answers.get(name)
        rcode = 0 if records is not None else 3
        assert self.transport is not None
        self.transport.sendto(upstream_response(data, records or [], rcode), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, int]]:
    a_record = [("@", TYPE_A, 300, IPv4Address(APP).packed)]
    short = [("@", TYPE_A, 5, IPv4Address(SHORT).packed)]
    protocol = Upstream({"app.example.internal": a_record, "short.example.internal": short})
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0)
    )
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()


def compiled(pk: str):
    return compile_for_node(parse_document(DOCUMENT), pk)


class Applied:
    """Counts `on_learned` calls, standing in for the daemon's apply."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


def gateway_resolver(network, port: int, applied: Applied) -> GatewayResolver:
    return GatewayResolver(
        lambda: network, applied, nameservers=lambda: ["127.0.0.1"], upstream_port=port
    )


async def ask(resolver, name: str, client: str, qtype: int = TYPE_A) -> tuple[int, list[str]]:
    response = await resolver.answer(parse_query(build_query(name, qtype)), (client, 5353))
    rcode, answers = parse_a_answers(response)
    return rcode, [str(a) for a in answers]


async def test_gateway_answers_permitted_client(upstream) -> None:
    server, port = upstream
    network, applied = compiled(GATEWAY), Applied()
    resolver = gateway_resolver(network, port, applied)
    assert await ask(resolver, "APP.example.internal", "127.0.0.2") == (RCODE_NOERROR, [APP])
    assert server.queries == ["app.example.internal"]
    assert applied.calls == 1
    assert network.learned.served_pairs() == {(CLIENT, IPv4Address(APP))}
    # A repeated answer refreshes the entry and installs nothing new.
    await ask(resolver, "app.example.internal", "127.0.0.2")
    assert applied.calls == 1


@pytest.mark.parametrize(
    ("name", "client"),
    [
        pytest.param("app.example.internal", "127.0.0.3", id="client-without-policy"),
        pytest.param("app.example.internal", "127.0.0.9", id="unknown-address"),
        pytest.param("www.example.com", "127.0.0.2", id="foreign-name"),
        pytest.param("example.internal", "127.0.0.2", id="wildcard-apex"),
    ],
)
async def test_gateway_refuses(upstream, name: str, client: str) -> None:
    server, port = upstream
    network = compiled(GATEWAY)
    resolver = gateway_resolver(network, port, Applied())
    assert await ask(resolver, name, client) == (RCODE_REFUSED, [])
    assert server.queries == []
    assert not network.learned


async def test_gateway_raises_short_ttl(upstream) -> None:
    _, port = upstream
    network = compiled(GATEWAY)
    resolver = gateway_resolver(network, port, Applied())
    query = build_query("short.example.internal", query_id=3)
    response = await resolver.answer(parse_query(query), ("127.0.0.2", 5353))
    answer = parse_response(response, 3, "short.example.internal")
    assert answer.addresses == (IPv4Address(SHORT),)
    assert answer.ttl == MIN_TTL_SECONDS


async def test_gateway_passes_nxdomain_and_skips_aaaa(upstream) -> None:
    server, port = upstream
    resolver = gateway_resolver(compiled(GATEWAY), port, Applied())
    assert await ask(resolver, "gone.example.internal", "127.0.0.2") == (RCODE_NXDOMAIN, [])
    assert await ask(resolver, "app.example.internal", "127.0.0.2", TYPE_AAAA) == (0, [])
    assert server.queries == ["gone.example.internal"]


async def test_gateway_servfail_when_upstream_silent() -> None:
    silent = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = silent[0].get_extra_info("sockname")[1]
    resolver = GatewayResolver(
        lambda: compiled(GATEWAY),
        Applied(),
        nameservers=lambda: ["127.0.0.1"],
        upstream_port=port,
        timeout=0.2,
    )
    try:
        assert await ask(resolver, "app.example.internal", "127.0.0.2") == (RCODE_SERVFAIL, [])
    finally:
        silent[0].close()


async def test_gateway_caps_addresses_per_answer() -> None:
    many = [("@", TYPE_A, 300, IPv4Address(f"10.9.0.{i}").packed) for i in range(1, 41)]
    protocol = Upstream({"big.example.internal": many})
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0)
    )
    network = compiled(GATEWAY)
    resolver = gateway_resolver(network, transport.get_extra_info("sockname")[1], Applied())
    try:
        rcode, answers = await ask(resolver, "big.example.internal", "127.0.0.2")
    finally:
        transport.close()
    assert rcode == RCODE_NOERROR
    assert len(answers) == MAX_ANSWER_ADDRESSES
    assert len(network.learned.served) == MAX_ANSWER_ADDRESSES


async def test_forwarder_learns_through_gateway_resolver(upstream) -> None:
    """The client asks a real gateway resolver socket on loopback, as over the overlay."""
    _, port = upstream
    gateway, client = compiled(GATEWAY), compiled(CLIENT)
    gateway_applied, client_applied = Applied(), Applied()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: ResolverProtocol(None, gateway_resolver(gateway, port, gateway_applied)),
        local_addr=("127.0.0.1", 0),
    )
    forwarder = DomainForwarder(
        lambda: [client], client_applied, gateway_port=transport.get_extra_info("sockname")[1]
    )
    try:
        assert forwarder.takes("app.example.internal")
        assert not forwarder.takes("example.internal")
        assert await ask(forwarder, "app.example.internal", "127.0.0.5") == (RCODE_NOERROR, [APP])
        assert await ask(forwarder, "gone.example.internal", "127.0.0.5") == (RCODE_NXDOMAIN, [])
    finally:
        transport.close()
    assert client.learned.reachable_addresses() == {IPv4Address(APP)}
    assert client_applied.calls == 1
    assert gateway_applied.calls == 1
    [entry] = client.learned.entries()
    assert entry.peer_pk == GATEWAY


async def test_query_a_ignores_wrong_id_and_question() -> None:
    class Forger(asyncio.DatagramProtocol):
        def connection_made(self, transport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr) -> None:
            wrong_id = bytearray(upstream_response(data, [("@", TYPE_A, 60, bytes(4))]))
            wrong_id[0] ^= 0xFF
            self.transport.sendto(bytes(wrong_id), addr)
            real = upstream_response(data, [("@", TYPE_A, 60, IPv4Address(APP).packed)])
            self.transport.sendto(real, addr)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Forger, local_addr=("127.0.0.1", 0)
    )
    try:
        server = ("127.0.0.1", transport.get_extra_info("sockname")[1])
        answer = await query_a(server, "app.example.internal", wait_seconds=2)
    finally:
        transport.close()
    assert answer.addresses == (IPv4Address(APP),)


def test_parse_response_follows_cname_with_compression() -> None:
    query = build_query("alias.example.internal", query_id=7)
    target = encode("app.example.internal")
    response = upstream_response(
        query,
        [
            ("@", 5, 600, target),
            ("app.example.internal", TYPE_A, 120, IPv4Address(APP).packed),
            ("unrelated.example.com", TYPE_A, 120, bytes(4)),
        ],
    )
    answer = parse_response(response, 7, "alias.example.internal")
    assert answer.addresses == (IPv4Address(APP),)
    assert answer.ttl == 120


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda r: r[:1] + bytes([r[1] ^ 1]) + r[2:], "query id", id="wrong-id"),
        pytest.param(lambda r: r[:20], "past the end", id="truncated"),
        pytest.param(lambda r: r[:12] + b"\xc0\x0c" + r[14:], "loop", id="pointer-loop"),
    ],
)
def test_parse_response_rejects(mutate, message: str) -> None:
    query = build_query("app.example.internal", query_id=7)
    response = upstream_response(query, [("@", TYPE_A, 60, IPv4Address(APP).packed)])
    with pytest.raises(DnsFormatError, match=message):
        parse_response(mutate(response), 7, "app.example.internal")


def test_parse_response_rejects_other_question() -> None:
    query = build_query("other.example.internal", query_id=7)
    with pytest.raises(DnsFormatError, match=re.escape("answers 'other.example.internal'")):
        parse_response(upstream_response(query, []), 7, "app.example.internal")


def test_read_nameservers(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nsearch lan\n")
    assert read_nameservers(conf) == ["10.0.0.53", "fe80::1"]
    conf.write_text("search lan\n")
    assert read_nameservers(conf) == ["127.0.0.1"]
