"""The DNS codec and the `*.netsody.me` resolver."""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsody_agent.dns import (
    RCODE_FORMERR,
    RCODE_NOERROR,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    TYPE_A,
    TYPE_AAAA,
    DnsFormatError,
    DnsResolver,
    RecordTable,
    build_query,
    parse_a_answers,
    parse_query,
)

RECORDS = {"beta": IPv4Address("10.1.0.11"), "Gamma": IPv4Address("10.1.0.12")}


@pytest.fixture
def table() -> RecordTable:
    records = RecordTable()
    records.replace(RECORDS)
    return records


ANSWER_CASES = [
    pytest.param("beta.netsody.me", TYPE_A, RCODE_NOERROR, ["10.1.0.11"], id="known-name"),
    pytest.param("GAMMA.NetSody.ME", TYPE_A, RCODE_NOERROR, ["10.1.0.12"], id="case-insensitive"),
    pytest.param("beta.netsody.me.", TYPE_A, RCODE_NOERROR, ["10.1.0.11"], id="trailing-dot"),
    pytest.param("beta.netsody.me", TYPE_AAAA, RCODE_NOERROR, [], id="aaaa-no-data"),
    pytest.param("delta.netsody.me", TYPE_A, RCODE_NXDOMAIN, [], id="unknown-name"),
    pytest.param("x.beta.netsody.me", TYPE_A, RCODE_NXDOMAIN, [], id="subdomain-unknown"),
    pytest.param("example.com", TYPE_A, RCODE_REFUSED, [], id="outside-zone-refused"),
    pytest.param("netsody.me.evil.com", TYPE_A, RCODE_REFUSED, [], id="zone-as-prefix"),
]


@pytest.mark.parametrize(("name", "qtype", "rcode", "addresses"), ANSWER_CASES)
def test_answer(table: RecordTable, name: str, qtype: int, rcode: int, addresses) -> None:
    response = table.answer(build_query(name, qtype, query_id=0x1234))
    assert response is not None
    assert struct.unpack_from("!H", response)[0] == 0x1234
    got_rcode, answers = parse_a_answers(response)
    assert got_rcode == rcode
    assert [str(a) for a in answers] == addresses


def test_response_sets_qr_and_aa(table: RecordTable) -> None:
    response = table.answer(build_query("beta.netsody.me"))
    assert response is not None
    flags = struct.unpack_from("!H", response, 2)[0]
    assert flags & 0x8000
    assert flags & 0x0400


def test_two_questions_formerr(table: RecordTable) -> None:
    query = bytearray(build_query("beta.netsody.me", query_id=7))
    query[4:6] = struct.pack("!H", 2)
    response = table.answer(bytes(query))
    assert response is not None
    assert struct.unpack_from("!HH", response) == (7, 0x8000 | RCODE_FORMERR)


def test_short_message_dropped(table: RecordTable) -> None:
    assert table.answer(b"\x00\x01\x02") is None


def test_compression_pointer_in_question_rejected() -> None:
    header = struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0)
    with pytest.raises(DnsFormatError) as error:
        parse_query(header + b"\xc0\x0c" + struct.pack("!HH", 1, 1))
    assert error.value.query_id == 9


def test_response_message_is_not_answered(table: RecordTable) -> None:
    query = bytearray(build_query("beta.netsody.me", query_id=5))
    query[2] |= 0x80
    response = table.answer(bytes(query))
    assert response is not None
    assert struct.unpack_from("!H", response, 2)[0] & 0x000F == RCODE_FORMERR


def test_replace_drops_old_names(table: RecordTable) -> None:
    table.replace({"delta": IPv4Address("10.1.0.13")})
    _, answers = parse_a_answers(table.answer(build_query("beta.netsody.me")) or b"")
    assert answers == []
    assert table.names() == {"delta.netsody.me": "10.1.0.13"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_never_crash(data: bytes) -> None:
    records = RecordTable()
    records.replace(RECORDS)
    response = records.answer(data)
    if response is not None:
        assert len(response) >= 12
        assert response[:2] == data[:2]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.from_regex(r"[a-zA-Z0-9-]{1,20}", fullmatch=True), min_size=1, max_size=5),
    st.integers(min_value=0, max_value=0xFFFF),
    st.integers(min_value=0, max_value=len(build_query("a.netsody.me"))),
)
def test_fuzz_mutated_queries(labels: list[str], query_id: int, cut: int) -> None:
    records = RecordTable()
    records.replace(RECORDS)
    query = build_query(".".join(labels) + ".netsody.me", query_id=query_id)
    assert records.answer(query) is not None
    records.answer(query[:cut])


async def test_resolver_over_udp(table: RecordTable) -> None:
    resolver = DnsResolver("127.0.0.1", 0, table)
    await resolver.start()
    try:
        assert resolver._transport is not None
        port = resolver._transport.get_extra_info("sockname")[1]
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, build_query("beta.netsody.me", query_id=77))
            data = await asyncio.wait_for(loop.sock_recv(sock, 512), 5)
    finally:
        resolver.stop()
    rcode, answers = parse_a_answers(data)
    assert rcode == RCODE_NOERROR
    assert answers == [IPv4Address("10.1.0.11")]
