"""Enforcement with addresses learned for domain resources, on real compiled networks.

The learned addresses change under a running `Enforcer`, as the resolver adds and expires them
while the data plane keeps its enforcer.
"""

import socket
import struct
from ipaddress import IPv4Address

from office_network import CLIENT, GATEWAY, OTHER, office_document, policy

from netsody_agent.dataplane import enforce
from netsody_agent.dataplane.enforce import Enforcer
from netsody_agent.dataplane.packet import PROTO_ICMP, PROTO_TCP, PROTO_UDP, parse_ipv4
from netsody_common._domains import GATEWAY_GRACE_SECONDS, MIN_TTL_SECONDS
from netsody_common.document import parse_document
from netsody_common.policy import compile_for_node

DOCUMENT = office_document(
    nodes={"client": "10.1.0.1", "gateway": "10.1.0.2", "other": "10.1.0.3"},
    resources={"*.example.internal": GATEWAY, "192.168.7.0/24": GATEWAY},
    policies=[
        policy(["node::client"], ["resource::*.example.internal"], tcp_ports=[443]),
        policy(["node::other"], ["node::gateway", "resource::192.168.7.0/24"]),
    ],
)

APP = "192.168.9.10"
# Inside the static resource 192.168.7.0/24 that only `other` may use.
INSIDE_STATIC = "192.168.7.20"


def network_for(pk):
    return compile_for_node(parse_document(DOCUMENT), pk)


def packet(src, dst, protocol, *, sport=40000, dport=443):
    if protocol == PROTO_ICMP:
        payload = struct.pack("!BBHHH", 8, 0, 0, 9, 1)
    elif protocol == PROTO_TCP:
        payload = struct.pack("!HH", sport, dport) + bytes(16)
    else:
        payload = struct.pack("!HHHH", sport, dport, 8, 0)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), 0, 0x4000, 64, protocol, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return parse_ipv4(header + payload)


def test_client_egress_follows_learned_address():
    network = network_for(CLIENT)
    enforcer = Enforcer([network])
    outgoing = packet("10.1.0.1", APP, PROTO_TCP)
    assert enforcer.egress(outgoing) == (None, enforce.DROP_NO_ROUTE)

    network.learned.learn_reachable(
        "*.example.internal", GATEWAY, [IPv4Address(APP)], ttl=60, now=0.0
    )
    assert enforcer.egress(outgoing) == (GATEWAY, None)
    assert enforcer.egress(packet("10.1.0.1", APP, PROTO_TCP, dport=22)) == (
        None,
        enforce.DROP_EGRESS_POLICY,
    )
    # The reply from the resource comes through the gateway with the resource as source.
    reply = packet(APP, "10.1.0.1", PROTO_TCP, sport=443, dport=40000)
    assert enforcer.ingress(GATEWAY, reply) is None
    assert enforcer.ingress(OTHER, reply) == enforce.DROP_SPOOFED

    network.learned.expire(MIN_TTL_SECONDS)
    new_flow = packet("10.1.0.1", APP, PROTO_TCP, sport=40001)
    assert enforcer.egress(new_flow) == (None, enforce.DROP_NO_ROUTE)
    fresh = packet(APP, "10.1.0.1", PROTO_TCP, sport=443, dport=40001)
    assert enforcer.ingress(GATEWAY, fresh) == enforce.DROP_SPOOFED


def test_client_dns_to_gateway_only():
    enforcer = Enforcer([network_for(CLIENT)])
    assert enforcer.egress(packet("10.1.0.1", "10.1.0.2", PROTO_UDP, dport=53)) == (GATEWAY, None)
    assert enforcer.egress(packet("10.1.0.1", "10.1.0.2", PROTO_TCP, dport=22)) == (
        None,
        enforce.DROP_EGRESS_POLICY,
    )


def test_gateway_ingress_follows_learned_address():
    network = network_for(GATEWAY)
    enforcer = Enforcer([network])
    incoming = packet("10.1.0.1", APP, PROTO_TCP)
    assert enforcer.ingress(CLIENT, incoming) == enforce.DROP_WRONG_DESTINATION

    network.learned.learn_served("*.example.internal", CLIENT, [IPv4Address(APP)], ttl=60, now=0.0)
    assert enforcer.ingress(CLIENT, incoming) is None
    assert enforcer.ingress(CLIENT, packet("10.1.0.1", APP, PROTO_UDP)) == (
        enforce.DROP_INGRESS_POLICY
    )
    # Learned for one client only: another node is not forwarded there.
    assert enforcer.ingress(OTHER, packet("10.1.0.3", APP, PROTO_TCP)) == (
        enforce.DROP_WRONG_DESTINATION
    )
    assert enforcer.ingress(CLIENT, packet("10.1.0.1", "10.1.0.2", PROTO_UDP, dport=53)) is None

    network.learned.expire(MIN_TTL_SECONDS + GATEWAY_GRACE_SECONDS)
    new_flow = packet("10.1.0.1", APP, PROTO_TCP, sport=40001)
    assert enforcer.ingress(CLIENT, new_flow) == enforce.DROP_WRONG_DESTINATION


def test_gateway_learned_address_inside_static_resource_not_cached():
    """A learned address inside a static resource of another client: the decision for the
    domain client must end with the learned address, not stay in the decision cache."""
    network = network_for(GATEWAY)
    enforcer = Enforcer([network])
    network.learned.learn_served(
        "*.example.internal", CLIENT, [IPv4Address(INSIDE_STATIC)], ttl=60, now=0.0
    )
    assert enforcer.ingress(CLIENT, packet("10.1.0.1", INSIDE_STATIC, PROTO_TCP)) is None
    network.learned.expire(MIN_TTL_SECONDS + GATEWAY_GRACE_SECONDS)
    new_flow = packet("10.1.0.1", INSIDE_STATIC, PROTO_TCP, sport=40001)
    assert enforcer.ingress(CLIENT, new_flow) == enforce.DROP_INGRESS_POLICY
