"""Signaling against a running netsody-sp: authentication and peer coordination."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest

from netsody_common.identity import Identity, verify_pow
from netsody_common.wire import (
    Authenticated,
    Candidate,
    CandidateKind,
    ConnectRequest,
    ErrorCode,
    PeerCandidates,
    PeerUnavailable,
    Ping,
    Pong,
    Rejected,
)

TRANSPORTS = ["h3", "h2"]
HOST = Candidate(CandidateKind.HOST, ip_address("192.0.2.10"), 41641)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_authentication_succeeds(
    kit: Any, superpeer: Any, clients: list, identities: list, transport: str
) -> None:
    client = await kit.open_client(transport, superpeer.port)
    clients.append(client)
    channel = await client.signal(identities[0], (HOST,))

    answer = await channel.authenticate()

    assert isinstance(answer, Authenticated)
    if transport == "h3":
        assert answer.reflexive is not None
        assert str(answer.reflexive.ip) == "127.0.0.1"
        assert answer.reflexive.port > 0
    else:
        assert answer.reflexive is None
    superpeer.wait_for_log(f"session opened node_id={identities[0].pk} transport={transport}")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_signature_rejected(
    kit: Any, superpeer: Any, clients: list, identities: list, transport: str
) -> None:
    client = await kit.open_client(transport, superpeer.port)
    clients.append(client)
    impostor = identities[1]
    channel = await client.signal(identities[0], sign=impostor.sign)

    answer = await channel.authenticate()

    assert isinstance(answer, Rejected)
    assert answer.code == ErrorCode.BAD_SIGNATURE
    superpeer.wait_for_log("rejected session from 127.0.0.1")


async def test_weak_proof_of_work_rejected(kit: Any, superpeer: Any, clients: list) -> None:
    weak = Identity.generate(0, progress=False)
    while verify_pow(weak.pk, weak.pow_nonce, kit.POW_DIFFICULTY):
        weak = Identity.generate(0, progress=False)
    client = await kit.open_client("h3", superpeer.port)
    clients.append(client)
    channel = await client.signal(weak)

    answer = await channel.authenticate()

    assert isinstance(answer, Rejected)
    assert answer.code == ErrorCode.WEAK_PROOF_OF_WORK
    assert "leading zero bits" in answer.reason


async def test_message_before_authentication_rejected(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    client = await kit.open_client("h2", superpeer.port)
    clients.append(client)
    channel = await client.signal(identities[0])
    channel.send(ConnectRequest(1, identities[1].pk))

    answer = await channel.receive()

    # The challenge is answered automatically, so the first message the test sees is the
    # server's reaction to the ConnectRequest sent before Authenticate arrived.
    assert isinstance(answer, Rejected)
    assert answer.code == ErrorCode.NOT_AUTHENTICATED


@pytest.mark.parametrize(("first", "second"), [("h3", "h3"), ("h2", "h2"), ("h3", "h2")])
async def test_coordination_sends_both_candidates(
    kit: Any, superpeer: Any, clients: list, identities: list, first: str, second: str
) -> None:
    a, b = identities[0], identities[1]
    client_a = await kit.open_client(first, superpeer.port)
    client_b = await kit.open_client(second, superpeer.port)
    clients.extend([client_a, client_b])
    host_b = Candidate(CandidateKind.HOST, ip_address("198.51.100.2"), 5000)
    channel_a = await client_a.signal(a, (HOST,))
    channel_b = await client_b.signal(b, (host_b,))
    assert isinstance(await channel_a.authenticate(), Authenticated)
    assert isinstance(await channel_b.authenticate(), Authenticated)

    request_id = channel_a.state.request_peer(b.pk)
    channel_a.flush()
    to_a = await channel_a.receive()
    to_b = await channel_b.receive()

    assert isinstance(to_a, PeerCandidates)
    assert to_a.request_id == request_id
    assert to_a.peer_pk == b.pk
    assert host_b in to_a.candidates
    assert isinstance(to_b, PeerCandidates)
    assert to_b.request_id == 0
    assert to_b.peer_pk == a.pk
    assert HOST in to_b.candidates
    reflexive_a = [c for c in to_b.candidates if c.kind == CandidateKind.REFLEXIVE]
    assert len(reflexive_a) == (1 if first == "h3" else 0)


async def test_offline_peer_reported(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    client = await kit.open_client("h3", superpeer.port)
    clients.append(client)
    channel = await client.signal(identities[0])
    assert isinstance(await channel.authenticate(), Authenticated)

    request_id = channel.state.request_peer(identities[3].pk)
    channel.flush()
    answer = await channel.receive()

    assert isinstance(answer, PeerUnavailable)
    assert answer.request_id == request_id
    assert answer.code == ErrorCode.PEER_OFFLINE


async def test_ping_answered(kit: Any, superpeer: Any, clients: list, identities: list) -> None:
    client = await kit.open_client("h2", superpeer.port)
    clients.append(client)
    channel = await client.signal(identities[0])
    assert isinstance(await channel.authenticate(), Authenticated)

    channel.send(Ping(77))
    answer = await channel.receive()

    assert answer == Pong(77)


async def test_newer_session_replaces_older(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    old = await kit.open_client("h3", superpeer.port)
    new = await kit.open_client("h2", superpeer.port)
    clients.extend([old, new])
    old_channel = await old.signal(identities[0])
    assert isinstance(await old_channel.authenticate(), Authenticated)

    new_channel = await new.signal(identities[0])
    assert isinstance(await new_channel.authenticate(), Authenticated)
    answer = await old_channel.receive()

    assert isinstance(answer, Rejected)
    assert answer.code == ErrorCode.REPLACED


async def test_super_peers_share_no_state(
    kit: Any, start_superpeer: Any, clients: list, identities: list
) -> None:
    first, second = start_superpeer(), start_superpeer()
    a, b = identities[0], identities[1]
    channels = {}
    for name, superpeer, identity in (("a1", first, a), ("b1", first, b), ("a2", second, a)):
        client = await kit.open_client("h3", superpeer.port)
        clients.append(client)
        channels[name] = await client.signal(identity)
        assert isinstance(await channels[name].authenticate(), Authenticated)

    channels["a2"].state.request_peer(b.pk)
    channels["a2"].flush()
    channels["a1"].state.request_peer(b.pk)
    channels["a1"].flush()

    assert isinstance(await channels["a2"].receive(), PeerUnavailable)
    assert isinstance(await channels["a1"].receive(), PeerCandidates)
    assert isinstance(await channels["b1"].receive(), PeerCandidates)
