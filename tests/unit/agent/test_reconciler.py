"""The reconciler against the in-memory OS layer fakes."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

from netsody_agent.errors import OsLayerError
from netsody_agent.reconciler import DesiredState, DnsLink, GatewayRule, Reconciler
from netsody_agent.reconciler.oslayer import FakeDns, FakeFirewall, OsLayer, fake_os_layer

ADDR = IPv4Interface("10.1.0.10/24")
NET = IPv4Network("192.168.5.0/24")
RULE = GatewayRule(IPv4Network("10.1.0.11/32"), IPv4Network("192.168.9.0/24"))
DNS = DnsLink("127.0.0.153", "netsody.me")
FULL = DesiredState(
    mtu=1280,
    addresses=frozenset({ADDR}),
    routes=frozenset({NET}),
    gateway_rules=frozenset({RULE}),
    dns=DNS,
)


def test_apply_reaches_desired_state() -> None:
    layer = fake_os_layer()
    reconciler = Reconciler(layer)
    assert reconciler.apply(FULL) == []
    actual = reconciler.observe()
    assert actual.mtu == 1280
    assert actual.addresses == {ADDR}
    assert actual.routes == {NET}
    assert actual.forward_rules == {RULE}
    assert actual.nat_rules == {RULE}
    assert actual.forwarding
    assert actual.dns == DNS


def test_second_apply_changes_nothing() -> None:
    layer = fake_os_layer()
    reconciler = Reconciler(layer)
    reconciler.apply(FULL)
    links = layer.links
    links.add_address = None  # type: ignore[method-assign,assignment]
    assert reconciler.apply(FULL) == []


def test_teardown_restores_the_machine() -> None:
    firewall = FakeFirewall(forwarding_before=False)
    layer = fake_os_layer()
    layer.firewall = firewall
    reconciler = Reconciler(layer)
    reconciler.apply(FULL)
    assert reconciler.teardown() == []
    actual = reconciler.observe()
    assert actual.addresses == frozenset()
    assert actual.routes == frozenset()
    assert actual.forward_rules == frozenset()
    assert actual.nat_rules == frozenset()
    assert not firewall.forwarding
    assert not firewall.chains
    assert actual.dns is None


def test_forwarding_enabled_by_someone_else_stays_on() -> None:
    firewall = FakeFirewall(forwarding_before=True, forwarding=True)
    layer = fake_os_layer()
    layer.firewall = firewall
    reconciler = Reconciler(layer)
    reconciler.apply(FULL)
    reconciler.apply(DesiredState(mtu=1280))
    assert firewall.forwarding
    assert firewall.forward_rules == set()


def test_dns_not_wired_without_system_resolver() -> None:
    layer = fake_os_layer()
    layer.dns = FakeDns(present=False)
    reconciler = Reconciler(layer)
    assert reconciler.apply(FULL) == []
    assert layer.dns.link is None
    assert not reconciler.dns_available
    assert reconciler.dns_detail == "no supported system resolver found"


class _BrokenRoutes:
    def observe(self) -> frozenset[IPv4Network]:
        return frozenset()

    def add(self, network: IPv4Network) -> None:
        raise OsLayerError(f"route {network} rejected")

    def remove(self, network: IPv4Network) -> None:
        raise OsLayerError("unreachable")


def test_failed_action_does_not_stop_the_rest() -> None:
    base = fake_os_layer()
    layer = OsLayer(base.links, _BrokenRoutes(), base.firewall, base.dns)
    reconciler = Reconciler(layer)
    errors = reconciler.apply(FULL)
    assert errors == ["add-route 192.168.5.0/24: route 192.168.5.0/24 rejected"]
    assert base.links.observe_addresses() == {ADDR}
    assert base.firewall.observe_nat_rules() == {RULE}
