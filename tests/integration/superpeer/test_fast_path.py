"""The relay fast path: the agent's HTTP/3 session and netsody-sp seal and open relayed
datagrams with the connection's keys, around aioquic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from netsody_common import quicfast, wire
from netsody_common.wire import Authenticated, parse_proxy_public_addresses

# A full 1,280-byte overlay packet sealed for the peer: the largest relayed UDP payload.
FULL_SIZE = 1309


@pytest.fixture
async def agents() -> AsyncIterator[list[Any]]:
    """A list that tests append their `AgentRelay` objects to; all are closed at teardown."""
    opened: list[Any] = []
    yield opened
    for agent in opened:
        with contextlib.suppress(Exception):
            agent.close()


async def bound_agent(kit: Any, superpeer: Any, identity: Any, agents: list) -> Any:
    agent = kit.AgentRelay(identity, superpeer.port, superpeer.cert)
    agents.append(agent)
    await agent.wait_bound()
    return agent


async def receive(agent: Any, wait: float = 10.0) -> tuple[bytes, tuple[str, int]]:
    result: tuple[bytes, tuple[str, int]] = await asyncio.wait_for(agent.received.get(), wait)
    return result


async def open_pair(kit: Any, superpeer: Any, identities: list, agents: list) -> tuple:
    """Two agents with bound tunnels whose relay ports accept each other's datagrams."""
    a = await bound_agent(kit, superpeer, identities[0], agents)
    b = await bound_agent(kit, superpeer, identities[1], agents)
    port_a, port_b = a.session.relay_addresses[0], b.session.relay_addresses[0]
    assert b.send(b"opens B for A", port_a)  # dropped at A's port: A has not sent to B yet
    await asyncio.sleep(0.2)
    return a, b, port_a, port_b


def metric(superpeer: Any, line_prefix: str) -> float:
    _status, text = superpeer.metrics()
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.split()[-1])
    return 0.0


async def test_agents_relay_full_size_datagrams_both_ways(
    kit: Any, start_superpeer: Any, identities: list, agents: list
) -> None:
    superpeer = start_superpeer()
    a, b, port_a, port_b = await open_pair(kit, superpeer, identities, agents)

    payloads = [bytes([n]) * FULL_SIZE for n in range(20)]
    for payload in payloads:
        assert a.send(payload, port_b)
    received = [await receive(b) for _ in payloads]
    assert b.send(b"reply", port_a)

    assert received == [(payload, port_a) for payload in payloads]
    assert await receive(a) == (b"reply", port_b)
    # Relayed datagrams bypassed aioquic on both agents: it queued none of them, and the
    # agents opened the super peer's sealed packets themselves.
    assert not a.session.quic._datagrams_pending
    assert a.session._fast.replay.highest >= 0
    assert b.session._fast.replay.highest >= 0


async def test_sealed_packets_reach_an_aioquic_client(
    kit: Any, start_superpeer: Any, identities: list, agents: list, clients: list
) -> None:
    superpeer = start_superpeer()
    a = await bound_agent(kit, superpeer, identities[0], agents)
    client = await kit.open_client("h3", superpeer.port)
    clients.append(client)
    channel = await client.signal(identities[1])
    assert isinstance(await channel.authenticate(), Authenticated)
    response, tunnel = await client.relay()
    ip, port = parse_proxy_public_addresses(response[b"proxy-public-address"].decode())[0]
    port_a, port_b = a.session.relay_addresses[0], (str(ip), port)

    tunnel.send(*port_a, b"opens the client's port for A")
    await asyncio.sleep(0.2)
    a.send(b"sealed by the agent and by netsody-sp", port_b)
    host, source_port, payload = await tunnel.receive()
    tunnel.send(*port_a, b"built by aioquic")

    assert (host, source_port, payload) == (*port_a, b"sealed by the agent and by netsody-sp")
    assert await receive(a) == (b"built by aioquic", port_b)


async def test_replayed_packet_is_dropped(
    kit: Any, start_superpeer: Any, identities: list, agents: list
) -> None:
    superpeer = start_superpeer(metrics=True)
    a, b, _port_a, port_b = await open_pair(kit, superpeer, identities, agents)

    a.recording = True
    a.send(b"once", port_b)
    a.recording = False
    assert await receive(b) == (b"once", a.session.relay_addresses[0])
    for packet in a.sent:
        a.sock.sendto(packet, a.session.address)
    a.send(b"after the replay", port_b)

    assert (await receive(b))[0] == b"after the replay"
    assert b.received.empty()
    assert metric(superpeer, 'netsody_sp_drops_total{reason="replayed_packet"}') == len(a.sent)


async def test_malformed_input_counted(
    kit: Any, start_superpeer: Any, identities: list, agents: list
) -> None:
    superpeer = start_superpeer(metrics=True)
    a, b, _port_a, port_b = await open_pair(kit, superpeer, identities, agents)
    quic = a.session.quic
    quarter = a.session._relay_stream >> 2
    cid = quic._peer_cid.cid
    garbage = [
        b"\x40" + cid + b"\x00" * 40,  # does not decrypt: aioquic discards it
        b"\x40" + cid[:3],  # truncated
        b"\x41",
    ]
    sealed = [
        quicfast.seal_datagram(quic, wire.encode_varint(quarter) + b"\x00\x09not an address"),
        quicfast.seal_datagram(quic, wire.encode_varint(quarter + 5) + b"no such tunnel"),
    ]
    for packet in garbage + sealed:
        a.sock.sendto(packet, a.session.address)
    a.send(b"still relayed", port_b)

    assert (await receive(b))[0] == b"still relayed"
    assert metric(superpeer, 'netsody_sp_drops_total{reason="malformed_datagram"}') == 1
    assert metric(superpeer, 'netsody_sp_drops_total{reason="datagram_without_tunnel"}') == 1
    assert superpeer.process.poll() is None
