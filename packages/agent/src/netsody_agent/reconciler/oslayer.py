"""The OS layer: one small interface per concern, and in-memory fakes of each for unit tests.

Linux implementations live in `linux.py`. Every method either succeeds or raises
`OsLayerError` naming what failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from typing import Protocol

from netsody_agent.errors import OsLayerError
from netsody_agent.reconciler.planner import DnsLink, GatewayRule


class LinkLayer(Protocol):
    """Addresses and MTU of the TUN device."""

    def observe_mtu(self) -> int | None: ...
    def observe_addresses(self) -> frozenset[IPv4Interface]: ...
    def set_mtu(self, mtu: int) -> None: ...
    def add_address(self, address: IPv4Interface) -> None: ...
    def remove_address(self, address: IPv4Interface) -> None: ...


class RouteLayer(Protocol):
    """Routes into the TUN device for resources reached through a gateway peer."""

    def observe(self) -> frozenset[IPv4Network]: ...
    def add(self, network: IPv4Network) -> None: ...
    def remove(self, network: IPv4Network) -> None: ...


class FirewallLayer(Protocol):
    """IPv4 forwarding and the agent's own FORWARD and NAT chains on gateway nodes."""

    def observe_forwarding(self) -> tuple[bool, bool]: ...
    def observe_forward_rules(self) -> frozenset[GatewayRule]: ...
    def observe_nat_rules(self) -> frozenset[GatewayRule]: ...
    def enable_forwarding(self) -> None: ...
    def restore_forwarding(self) -> None: ...
    def add_forward_rule(self, rule: GatewayRule) -> None: ...
    def remove_forward_rule(self, rule: GatewayRule) -> None: ...
    def add_nat_rule(self, rule: GatewayRule) -> None: ...
    def remove_nat_rule(self, rule: GatewayRule) -> None: ...
    def remove_chains(self) -> None: ...


class DnsLayer(Protocol):
    """The system resolver's routing of `~netsody.me` to the agent's resolver."""

    def available(self) -> tuple[bool, str]: ...
    def observe(self) -> DnsLink | None: ...
    def apply(self, link: DnsLink) -> None: ...
    def remove(self) -> None: ...


@dataclass
class OsLayer:
    """The four concerns together, as the reconciler uses them."""

    links: LinkLayer
    routes: RouteLayer
    firewall: FirewallLayer
    dns: DnsLayer


@dataclass
class FakeLinks:
    """In-memory LinkLayer."""

    mtu: int | None = None
    addresses: set[IPv4Interface] = field(default_factory=set)

    def observe_mtu(self) -> int | None:
        return self.mtu

    def observe_addresses(self) -> frozenset[IPv4Interface]:
        return frozenset(self.addresses)

    def set_mtu(self, mtu: int) -> None:
        self.mtu = mtu

    def add_address(self, address: IPv4Interface) -> None:
        if address in self.addresses:
            raise OsLayerError(f"address {address} already exists on the TUN device")
        self.addresses.add(address)

    def remove_address(self, address: IPv4Interface) -> None:
        self.addresses.remove(address)


@dataclass
class FakeRoutes:
    """In-memory RouteLayer."""

    routes: set[IPv4Network] = field(default_factory=set)

    def observe(self) -> frozenset[IPv4Network]:
        return frozenset(self.routes)

    def add(self, network: IPv4Network) -> None:
        self.routes.add(network)

    def remove(self, network: IPv4Network) -> None:
        self.routes.remove(network)


@dataclass
class FakeFirewall:
    """In-memory FirewallLayer; `forwarding_before` is the value found before the agent ran."""

    forwarding_before: bool = False
    forwarding: bool = False
    owned: bool = False
    forward_rules: set[GatewayRule] = field(default_factory=set)
    nat_rules: set[GatewayRule] = field(default_factory=set)
    chains: bool = False

    def observe_forwarding(self) -> tuple[bool, bool]:
        return self.forwarding, self.owned

    def observe_forward_rules(self) -> frozenset[GatewayRule]:
        return frozenset(self.forward_rules)

    def observe_nat_rules(self) -> frozenset[GatewayRule]:
        return frozenset(self.nat_rules)

    def enable_forwarding(self) -> None:
        self.owned = not self.forwarding
        self.forwarding = True

    def restore_forwarding(self) -> None:
        self.forwarding = self.forwarding_before
        self.owned = False

    def add_forward_rule(self, rule: GatewayRule) -> None:
        self.chains = True
        self.forward_rules.add(rule)

    def remove_forward_rule(self, rule: GatewayRule) -> None:
        self.forward_rules.remove(rule)

    def add_nat_rule(self, rule: GatewayRule) -> None:
        self.chains = True
        self.nat_rules.add(rule)

    def remove_nat_rule(self, rule: GatewayRule) -> None:
        self.nat_rules.remove(rule)

    def remove_chains(self) -> None:
        self.forward_rules.clear()
        self.nat_rules.clear()
        self.chains = False


@dataclass
class FakeDns:
    """In-memory DnsLayer; `present=False` models a system without a supported resolver."""

    present: bool = True
    link: DnsLink | None = None

    def available(self) -> tuple[bool, str]:
        if self.present:
            return True, "fake resolver"
        return False, "no supported system resolver found"

    def observe(self) -> DnsLink | None:
        return self.link

    def apply(self, link: DnsLink) -> None:
        self.link = link

    def remove(self) -> None:
        self.link = None


def fake_os_layer() -> OsLayer:
    """Return an OsLayer built from fresh in-memory fakes."""
    return OsLayer(FakeLinks(), FakeRoutes(), FakeFirewall(), FakeDns())
