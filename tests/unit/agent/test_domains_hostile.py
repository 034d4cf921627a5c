"""Addresses in a gateway's DNS answer that a client must not learn for a domain resource.

A gateway node resolves the client's queries for its domain resources, and the client learns the
returned addresses: a /32 route each, and the gateway as a permitted source of packets from
them. A gateway that is hostile, or whose upstream DNS is, chooses those addresses freely. The
gateway side is replaced here by a test double of `query_a` (the client's query over the
overlay, which needs a TUN device), so the client's real forwarder, learned addresses,
enforcer and machine state see the hostile answer.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Network

import pytest
from office_network import CLIENT, GATEWAY, OTHER, office_document, policy

from netsody_agent import domains
from netsody_agent.dataplane import enforce
from netsody_agent.dataplane.enforce import Enforcer
from netsody_agent.dataplane.packet import PROTO_UDP, parse_ipv4
from netsody_agent.desired import AppliedNetwork, build_desired
from netsody_agent.dns import RCODE_NOERROR, Answer, build_query, parse_query
from netsody_agent.domains import DomainForwarder
from netsody_common.document import parse_document
from netsody_common.policy import compile_for_node

DOCUMENT = office_document(
    nodes={"client": "10.1.0.1", "gateway": "10.1.0.2", "other": "10.1.0.3"},
    resources={"*.example.internal": GATEWAY},
    policies=[
        policy(["node::client"], ["resource::*.example.internal"]),
        policy(["node::client"], ["node::other"]),
    ],
)


def udp(src: str, sport: int, dst: str, dport: int):
    payload = struct.pack("!HHHH", sport, dport, 8, 0)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), 0, 0, 64, PROTO_UDP, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return parse_ipv4(header + payload)


async def learn_from_hostile_gateway(
    monkeypatch: pytest.MonkeyPatch, network, addresses: list[str], protected=frozenset()
) -> None:
    """Let the client's forwarder resolve a resource name to `addresses` through the gateway."""

    async def hostile_gateway_answer(server, name, *, wait_seconds, source=None) -> Answer:
        return Answer(RCODE_NOERROR, tuple(IPv4Address(a) for a in addresses), 300)

    monkeypatch.setattr(domains, "query_a", hostile_gateway_answer)

    async def applied() -> None:
        return None

    forwarder = DomainForwarder(lambda: [network], applied, protected=lambda: set(protected))
    query = parse_query(build_query("app.example.internal", query_id=7))
    await forwarder.answer(query, ("127.0.0.1", 5353))


async def test_gateway_cannot_spoof_other_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """SECURITY: a DNS response with another node's overlay address must not let the gateway
    send packets from that address (anti-spoofing), not even as replies of an open flow."""
    client = compile_for_node(parse_document(DOCUMENT), CLIENT)
    enforcer = Enforcer([client])
    # The client talks to `other`, which opens a reply flow 10.1.0.3:9999 -> 10.1.0.1:5555.
    assert enforcer.egress(udp("10.1.0.1", 5555, "10.1.0.3", 9999)) == (OTHER, None)

    await learn_from_hostile_gateway(monkeypatch, client, ["10.1.0.3"])

    forged_reply = udp("10.1.0.3", 9999, "10.1.0.1", 5555)
    assert enforcer.ingress(OTHER, forged_reply) is None
    assert enforcer.ingress(GATEWAY, forged_reply) == enforce.DROP_SPOOFED


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "0.0.0.0", "224.0.0.251", "255.255.255.255"],
)
async def test_special_addresses_get_no_route(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    """Loopback, unspecified, multicast and broadcast addresses never route into the overlay."""
    document = parse_document(DOCUMENT)
    client = compile_for_node(document, CLIENT)

    await learn_from_hostile_gateway(monkeypatch, client, [address, "192.168.9.10"])

    network = AppliedNetwork("n1", document.name, document.network, client)
    desired, _ = build_desired([network], dns_server="127.0.0.153")
    assert IPv4Network("192.168.9.10/32") in desired.routes
    assert IPv4Network(f"{address}/32") not in desired.routes


async def test_underlay_addresses_are_not_learned(monkeypatch: pytest.MonkeyPatch) -> None:
    """SECURITY: an answer naming the super peer or this host's own LAN address must not pull
    the agent's own underlay traffic into the overlay towards the gateway."""
    document = parse_document(DOCUMENT)
    client = compile_for_node(document, CLIENT)
    underlay = {IPv4Address("192.168.88.1"), IPv4Address("192.168.88.2")}

    await learn_from_hostile_gateway(
        monkeypatch, client, ["192.168.88.1", "192.168.88.2", "192.168.9.10"], underlay
    )

    assert client.learned.reachable_addresses() == {IPv4Address("192.168.9.10")}
