"""The MASQUE relay of a running netsody-sp: bound ports over HTTP/3 and HTTP/2."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from netsody_common.wire import (
    ERROR_CODE_HEADER,
    PROXY_PUBLIC_ADDRESS_HEADER,
    Authenticated,
    ErrorCode,
    parse_proxy_public_addresses,
)


async def relayed_agent(
    kit: Any, transport: str, port: int, identity: Any, clients: list
) -> tuple[Any, Any, tuple[str, int]]:
    """Open a client, authenticate it and open its bound tunnel; return the public address."""
    client = await kit.open_client(transport, port)
    clients.append(client)
    channel = await client.signal(identity)
    assert isinstance(await channel.authenticate(), Authenticated)
    response, tunnel = await client.relay()
    assert response[b":status"] == b"200", response
    addresses = parse_proxy_public_addresses(
        response[PROXY_PUBLIC_ADDRESS_HEADER.encode()].decode()
    )
    assert len(addresses) == 1
    ip, public_port = addresses[0]
    return client, tunnel, (str(ip), public_port)


async def exchange(a: Any, b: Any, address_a: tuple[str, int], address_b: tuple[str, int]) -> None:
    # B's first datagram to A's port opens B's port for A and is dropped at A's port, because
    # A has not sent to B yet.
    b.send(*address_a, b"opens B for A")
    await asyncio.sleep(0.2)
    a.send(*address_b, b"hello from A")
    host, port, payload = await b.receive()
    assert (host, port) == address_a
    assert payload == b"hello from A"
    b.send(*address_a, b"hello from B")
    host, port, payload = await a.receive()
    assert (host, port) == address_b
    assert payload == b"hello from B"


@pytest.mark.parametrize(("first", "second"), [("h3", "h3"), ("h2", "h2"), ("h3", "h2")])
async def test_relay_between_two_agents(
    kit: Any, superpeer: Any, clients: list, identities: list, first: str, second: str
) -> None:
    _, tunnel_a, address_a = await relayed_agent(kit, first, superpeer.port, identities[0], clients)
    _, tunnel_b, address_b = await relayed_agent(
        kit, second, superpeer.port, identities[1], clients
    )

    assert address_a != address_b
    assert address_a[1] in superpeer.proxy_ports
    await exchange(tunnel_a, tunnel_b, address_a, address_b)


async def test_relay_candidates_in_coordination(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    _, _, address_a = await relayed_agent(kit, "h3", superpeer.port, identities[0], clients)
    client_b = await kit.open_client("h2", superpeer.port)
    clients.append(client_b)
    channel_b = await client_b.signal(identities[1])
    assert isinstance(await channel_b.authenticate(), Authenticated)

    channel_b.state.request_peer(identities[0].pk)
    channel_b.flush()
    answer = await channel_b.receive()

    relay = [(str(c.ip), c.port) for c in answer.candidates if c.kind == 2]
    assert relay == [address_a]


async def test_bound_port_is_no_open_reflector(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    _, tunnel, address = await relayed_agent(kit, "h3", superpeer.port, identities[0], clients)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stranger.setblocking(False)
    try:
        stranger.sendto(b"unsolicited", address)
        with pytest.raises(TimeoutError):
            await tunnel.receive(wait=1.0)

        tunnel.send(*stranger.getsockname(), b"now allowed")
        loop = asyncio.get_running_loop()
        data, source = await asyncio.wait_for(loop.sock_recvfrom(stranger, 2048), kit.WAIT)
        assert data == b"now allowed"
        assert source == address
        stranger.sendto(b"reply", address)
        host, port, payload = await tunnel.receive()
        assert (host, port, payload) == (*stranger.getsockname(), b"reply")
    finally:
        stranger.close()


async def test_relay_without_authentication_forbidden(
    kit: Any, superpeer: Any, clients: list
) -> None:
    client = await kit.open_client("h3", superpeer.port)
    clients.append(client)

    response, _ = await client.relay()

    assert response[b":status"] == b"403"
    assert response[ERROR_CODE_HEADER.encode()] == str(int(ErrorCode.NOT_AUTHENTICATED)).encode()


async def test_second_port_per_agent_limited(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    client, _, _ = await relayed_agent(kit, "h2", superpeer.port, identities[0], clients)

    response, _ = await client.relay()

    assert response[b":status"] == b"429"
    assert response[ERROR_CODE_HEADER.encode()] == str(int(ErrorCode.RELAY_LIMIT)).encode()


async def test_port_pool_exhaustion_and_release(
    kit: Any, start_superpeer: Any, clients: list, identities: list
) -> None:
    superpeer = start_superpeer(proxy_count=2)
    first, _, _ = await relayed_agent(kit, "h3", superpeer.port, identities[0], clients)
    await relayed_agent(kit, "h2", superpeer.port, identities[1], clients)
    third = await kit.open_client("h3", superpeer.port)
    clients.append(third)
    channel = await third.signal(identities[2])
    assert isinstance(await channel.authenticate(), Authenticated)

    response, _ = await third.relay()
    assert response[b":status"] == b"503"
    assert response[ERROR_CODE_HEADER.encode()] == str(int(ErrorCode.PORT_POOL_EXHAUSTED)).encode()

    clients.remove(first)
    await first.close()
    superpeer.wait_for_log(f"released node_id={identities[0].pk}")
    response, _ = await third.relay()
    assert response[b":status"] == b"200"


async def test_tunnel_end_releases_port(
    kit: Any, start_superpeer: Any, clients: list, identities: list
) -> None:
    superpeer = start_superpeer(proxy_count=1)
    client, tunnel, _ = await relayed_agent(kit, "h2", superpeer.port, identities[0], clients)

    client.send(tunnel.stream.stream_id, b"", end=True)
    superpeer.wait_for_log("reason=request stream ended")
    response, _ = await client.relay()

    assert response[b":status"] == b"200"


async def test_packet_rate_limit_drops_excess(
    kit: Any, start_superpeer: Any, clients: list, identities: list
) -> None:
    superpeer = start_superpeer("--relay-pps", "20", metrics=True)
    _, tunnel, _ = await relayed_agent(kit, "h3", superpeer.port, identities[0], clients)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        for _ in range(200):
            tunnel.send(*sink.getsockname(), b"x" * 100)
        await asyncio.sleep(0.5)
        status, text = superpeer.metrics()
    finally:
        sink.close()

    assert status == 200
    assert 'netsody_sp_drops_total{reason="agent_rate_limit"}' in text
    sent = [
        line
        for line in text.splitlines()
        if line.startswith('netsody_sp_relayed_packets_total{direction="out",transport="h3"}')
    ]
    assert float(sent[0].split()[-1]) < 200


async def test_malformed_datagrams_dropped(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    client_a, tunnel_a, address_a = await relayed_agent(
        kit, "h3", superpeer.port, identities[0], clients
    )
    _, tunnel_b, address_b = await relayed_agent(kit, "h2", superpeer.port, identities[1], clients)
    stream_id = tunnel_a.stream.stream_id
    for garbage in (b"", b"\x05", b"\x00\x09abc", b"\x00\x06\x00"):
        client_a.send_datagram(stream_id, garbage)
    client_a.send_capsule_datagram(stream_id, b"\x00\x04")

    await exchange(tunnel_a, tunnel_b, address_a, address_b)
