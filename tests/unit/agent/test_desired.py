"""Desired machine state built from documents compiled by the policy engine."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from netsody_agent.desired import AppliedNetwork, build_desired, unsafe_overlay_reason
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


@pytest.mark.parametrize(
    ("network", "reason"),
    [
        ("0.0.0.0/0", "0.0.0.0/0 would route every address into the overlay"),
        (
            "127.0.0.0/24",
            "127.0.0.0/24 is loopback address space; use a private range such as 10.0.0.0/8",
        ),
        (
            "169.254.0.0/16",
            "169.254.0.0/16 is link-local address space; use a private range such as 10.0.0.0/8",
        ),
        (
            "224.0.0.0/24",
            "224.0.0.0/24 is multicast address space; use a private range such as 10.0.0.0/8",
        ),
        (
            "240.0.0.0/24",
            "240.0.0.0/24 is reserved address space; use a private range such as 10.0.0.0/8",
        ),
        ("0.0.0.0/24", "0.0.0.0/24 overlaps 0.0.0.0/8 ('this network'); use a private range"),
    ],
    ids=["default-route", "loopback", "link-local", "multicast", "reserved", "this-network"],
)
def test_unsafe_overlay_rejected(network: str, reason: str) -> None:
    assert unsafe_overlay_reason(IPv4Network(network)) == reason


@pytest.mark.parametrize("network", ["10.77.0.0/24", "192.168.5.0/24", "100.64.1.0/24"])
def test_private_overlay_accepted(network: str) -> None:
    assert unsafe_overlay_reason(IPv4Network(network)) is None
