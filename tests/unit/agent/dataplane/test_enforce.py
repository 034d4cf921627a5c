"""Enforcement decisions on real compiled networks: routing, policy, anti-spoofing, replies."""

import socket
import struct

import pytest

from netsody_agent.dataplane import enforce
from netsody_agent.dataplane.enforce import Enforcer
from netsody_agent.dataplane.packet import PROTO_ICMP, PROTO_TCP, PROTO_UDP, parse_ipv4
from netsody_common.document import parse_document
from netsody_common.policy import compile_for_node

ALPHA = "a" * 64
BETA = "b" * 64
GAMMA = "c" * 64

DOCUMENT = f"""
name = "office"
network = "10.1.0.0/24"

[[node]]
hostname = "alpha"
ip = "10.1.0.1"
pk = "{ALPHA}"
groups = ["staff"]

[[node]]
hostname = "beta"
ip = "10.1.0.2"
pk = "{BETA}"
groups = ["servers"]

[[node]]
hostname = "gamma"
ip = "10.1.0.3"
pk = "{GAMMA}"
groups = ["guests"]

[[policy]]
source_groups = ["staff"]
destination_groups = ["servers"]

[[policy.rules]]
protocol = "tcp"
ports = [22]

[[policy.rules]]
protocol = "icmp"

[[policy]]
source_groups = ["staff"]
destination_groups = ["lan"]

[[resource]]
dest = "192.168.50.0/24"
gw = "{BETA}"
groups = ["lan"]
"""


def enforcer_for(pk):
    return Enforcer([compile_for_node(parse_document(DOCUMENT), pk)])


def packet(src, dst, protocol, *, sport=40000, dport=22, icmp_type=8, ident=9):
    if protocol == PROTO_ICMP:
        payload = struct.pack("!BBHHH", icmp_type, 0, 0, ident, 1)
    elif protocol == PROTO_TCP:
        payload = struct.pack("!HH", sport, dport) + bytes(16)
    else:
        payload = struct.pack("!HHHH", sport, dport, 8, 0)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0x4000,
        64,
        protocol,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return parse_ipv4(header + payload)


def test_egress_allowed_port_routes_to_peer():
    assert enforcer_for(ALPHA).egress(packet("10.1.0.1", "10.1.0.2", PROTO_TCP)) == (BETA, None)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param(
            packet("10.1.0.1", "10.1.0.2", PROTO_TCP, dport=80),
            enforce.DROP_EGRESS_POLICY,
            id="port-not-in-rules",
        ),
        pytest.param(
            packet("10.1.0.1", "10.1.0.2", PROTO_UDP, dport=22),
            enforce.DROP_EGRESS_POLICY,
            id="protocol-not-in-rules",
        ),
        pytest.param(
            packet("10.1.0.1", "10.1.0.3", PROTO_TCP), enforce.DROP_NO_ROUTE, id="no-policy-peer"
        ),
        pytest.param(
            packet("10.1.0.1", "172.16.0.1", PROTO_TCP), enforce.DROP_NO_ROUTE, id="outside"
        ),
    ],
)
def test_egress_dropped(header, reason):
    assert enforcer_for(ALPHA).egress(header) == (None, reason)


def test_egress_resource_routes_to_gateway():
    header = packet("10.1.0.1", "192.168.50.7", PROTO_UDP, dport=53)

    assert enforcer_for(ALPHA).egress(header) == (BETA, None)


def test_ingress_allowed_from_permitted_peer():
    assert enforcer_for(BETA).ingress(ALPHA, packet("10.1.0.1", "10.1.0.2", PROTO_TCP)) is None


@pytest.mark.parametrize(
    ("peer", "header", "reason"),
    [
        pytest.param(
            ALPHA,
            packet("10.1.0.9", "10.1.0.2", PROTO_TCP),
            enforce.DROP_SPOOFED,
            id="forged-overlay-source",
        ),
        pytest.param(
            ALPHA,
            packet("192.168.50.7", "10.1.0.2", PROTO_TCP),
            enforce.DROP_SPOOFED,
            id="resource-source-from-non-gateway",
        ),
        pytest.param(
            GAMMA,
            packet("10.1.0.3", "10.1.0.2", PROTO_TCP),
            enforce.DROP_SPOOFED,
            id="peer-without-policy",
        ),
        pytest.param(
            ALPHA,
            packet("10.1.0.1", "10.1.0.2", PROTO_TCP, dport=80),
            enforce.DROP_INGRESS_POLICY,
            id="port-not-in-rules",
        ),
        pytest.param(
            ALPHA,
            packet("10.1.0.1", "10.1.0.3", PROTO_TCP),
            enforce.DROP_WRONG_DESTINATION,
            id="destination-not-local",
        ),
    ],
)
def test_ingress_dropped(peer, header, reason):
    assert enforcer_for(BETA).ingress(peer, header) == reason


def test_ingress_resource_on_gateway_allowed():
    header = packet("10.1.0.1", "192.168.50.7", PROTO_UDP, dport=53)

    assert enforcer_for(BETA).ingress(ALPHA, header) is None


def test_reply_passes_through_flow_table():
    server = enforcer_for(BETA)
    request = packet("10.1.0.1", "10.1.0.2", PROTO_TCP, sport=40000, dport=22)
    reply = packet("10.1.0.2", "10.1.0.1", PROTO_TCP, sport=22, dport=40000)

    assert server.egress(reply) == (None, enforce.DROP_EGRESS_POLICY)
    assert server.ingress(ALPHA, request) is None
    assert server.egress(reply) == (ALPHA, None)


def test_echo_reply_passes_after_request():
    client = enforcer_for(ALPHA)
    request = packet("10.1.0.1", "10.1.0.2", PROTO_ICMP, icmp_type=8, ident=5)
    reply = packet("10.1.0.2", "10.1.0.1", PROTO_ICMP, icmp_type=0, ident=5)

    assert client.egress(request) == (BETA, None)
    assert client.ingress(BETA, reply) is None


def test_node_policy_applies_both_directions():
    # Node-to-node policies let either node open a flow, restricted by the same rules.
    client = enforcer_for(ALPHA)

    assert client.ingress(BETA, packet("10.1.0.2", "10.1.0.1", PROTO_TCP, dport=22)) is None
    assert client.ingress(BETA, packet("10.1.0.2", "10.1.0.1", PROTO_TCP, dport=23)) == (
        enforce.DROP_INGRESS_POLICY
    )


def test_expired_flow_needs_policy_again():
    server = enforcer_for(BETA)
    server.ingress(ALPHA, packet("10.1.0.1", "10.1.0.2", PROTO_TCP, sport=40000))
    reply = packet("10.1.0.2", "10.1.0.1", PROTO_TCP, sport=22, dport=40000)

    server.expire_flows(enforce.FLOW_IDLE_SECONDS + 1)

    assert server.egress(reply) == (None, enforce.DROP_EGRESS_POLICY)


def test_peer_pks_lists_permitted_peers_only():
    assert enforcer_for(ALPHA).peer_pks() == {BETA}
    assert enforcer_for(GAMMA).peer_pks() == set()
