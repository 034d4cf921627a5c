"""Desired machine state built from documents compiled by the policy engine."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from netsody_agent.desired import AppliedNetwork, build_desired
from netsody_agent.reconciler import DnsLink, GatewayRule
from netsody_common.document import parse_document
from netsody_common.policy import compile_for_node


def _applied(text: str, pk: str) -> AppliedNetwork:
    document = parse_document(text)
    return AppliedNetwork("n1", document.name, document.network, compile_for_node(document, pk))


def test_build_desired_from_compiled_network(identities, lab) -> None:
    me, peer, gateway = identities
    network = _applied(lab(me.pk, peer.pk, gateway.pk), me.pk)
    desired, records = build_desired([network], mtu=1280, dns_server="127.0.0.153")
    assert desired.mtu == 1280
    assert desired.addresses == {IPv4Interface("10.77.0.10/24")}
    assert desired.routes == {IPv4Network("192.168.50.0/24")}
    assert desired.gateway_rules == {
        GatewayRule(IPv4Network("10.77.0.11/32"), IPv4Network("192.168.60.0/24")),
        GatewayRule(IPv4Network("10.77.0.12/32"), IPv4Network("192.168.60.0/24")),
    }
    assert desired.dns == DnsLink("127.0.0.153", "netsody.me")
    assert records["beta"] == IPv4Address("10.77.0.11")
    assert records["gamma"] == IPv4Address("10.77.0.12")


def test_peer_outside_staff_routes_only_all_resource(identities, lab) -> None:
    me, peer, gateway = identities
    network = _applied(lab(me.pk, peer.pk, gateway.pk), peer.pk)
    desired, _ = build_desired([network])
    # 192.168.60.0/24 is tagged ALL and served by alpha; 192.168.50.0/24 is for staff only.
    assert desired.routes == {IPv4Network("192.168.60.0/24")}
    assert desired.gateway_rules == frozenset()
    assert desired.addresses == {IPv4Interface("10.77.0.11/24")}


def test_no_dns_without_resolver(identities, lab) -> None:
    me, peer, gateway = identities
    network = _applied(lab(me.pk, peer.pk, gateway.pk), me.pk)
    desired, records = build_desired([network], dns_server=None)
    assert desired.dns is None
    assert records


def test_no_networks_no_state() -> None:
    desired, records = build_desired([], mtu=1400, dns_server="127.0.0.153")
    assert desired.addresses == frozenset()
    assert desired.dns is None
    assert records == {}
