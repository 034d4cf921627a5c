"""Desired and actual machine state, and the pure planner between them.

The plan only touches what differs, so an unchanged address, route or rule is never removed and
added again: peers and connections that a configuration change does not affect keep working.
Actions come out in a safe order: MTU, route removals, addresses, route additions, forwarding
and firewall rules, then DNS; removals of rules come before forwarding is switched back off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network


@dataclass(frozen=True, order=True)
class GatewayRule:
    """Traffic from overlay `source` to resource `destination` that this gateway forwards and
    masquerades."""

    source: IPv4Network
    destination: IPv4Network


@dataclass(frozen=True)
class DnsLink:
    """The system resolver setting: queries for `~domain` go to `server` on the TUN link.

    `resource_domains` are further routing domains, one per domain resource this node may use
    (`example.internal` for `*.example.internal`), sorted.
    """

    server: str
    domain: str
    resource_domains: tuple[str, ...] = ()

    @property
    def routing_domains(self) -> tuple[str, ...]:
        """Every routing domain of the link, the zone first."""
        return (self.domain, *self.resource_domains)


@dataclass(frozen=True)
class DesiredState:
    """The machine state that the configuration requires."""

    mtu: int
    addresses: frozenset[IPv4Interface] = frozenset()
    routes: frozenset[IPv4Network] = frozenset()
    gateway_rules: frozenset[GatewayRule] = frozenset()
    dns: DnsLink | None = None

    @property
    def forwarding(self) -> bool:
        """IPv4 forwarding is needed exactly when this node has gateway duties."""
        return bool(self.gateway_rules)


@dataclass(frozen=True)
class ActualState:
    """The machine state observed through the OS layer.

    `forwarding_owned` is true when the agent switched IPv4 forwarding on, so it must switch it
    off again when the gateway duty ends.
    """

    mtu: int | None = None
    addresses: frozenset[IPv4Interface] = frozenset()
    routes: frozenset[IPv4Network] = frozenset()
    forward_rules: frozenset[GatewayRule] = frozenset()
    nat_rules: frozenset[GatewayRule] = frozenset()
    forwarding: bool = False
    forwarding_owned: bool = False
    dns: DnsLink | None = None


@dataclass(frozen=True)
class Action:
    """One change to the system: `kind` names the operation, `target` its object."""

    kind: str
    target: object = field(default=None)

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind} {self.target}"


SET_MTU = "set-mtu"
ADD_ADDRESS = "add-address"
REMOVE_ADDRESS = "remove-address"
ADD_ROUTE = "add-route"
REMOVE_ROUTE = "remove-route"
ENABLE_FORWARDING = "enable-forwarding"
RESTORE_FORWARDING = "restore-forwarding"
ADD_FORWARD_RULE = "add-forward-rule"
REMOVE_FORWARD_RULE = "remove-forward-rule"
ADD_NAT_RULE = "add-nat-rule"
REMOVE_NAT_RULE = "remove-nat-rule"
SET_DNS = "set-dns"
REMOVE_DNS = "remove-dns"


def plan(desired: DesiredState, actual: ActualState) -> list[Action]:
    """Return the actions that turn `actual` into `desired`, in the order they must run."""
    actions: list[Action] = []
    if actual.mtu != desired.mtu:
        actions.append(Action(SET_MTU, desired.mtu))
    # Routes go before the addresses they depend on and come back after them: the kernel drops
    # a device's routes with its last address.
    actions += [Action(REMOVE_ROUTE, net) for net in sorted(actual.routes - desired.routes)]
    actions += _diff(ADD_ADDRESS, REMOVE_ADDRESS, desired.addresses, actual.addresses)
    actions += [Action(ADD_ROUTE, net) for net in sorted(desired.routes - actual.routes)]
    actions += _plan_gateway(desired, actual)
    if desired.dns != actual.dns:
        if desired.dns is None:
            actions.append(Action(REMOVE_DNS))
        else:
            actions.append(Action(SET_DNS, desired.dns))
    return actions


def _plan_gateway(desired: DesiredState, actual: ActualState) -> list[Action]:
    actions: list[Action] = []
    if desired.forwarding and not actual.forwarding:
        actions.append(Action(ENABLE_FORWARDING))
    actions += _diff(
        ADD_FORWARD_RULE, REMOVE_FORWARD_RULE, desired.gateway_rules, actual.forward_rules
    )
    actions += _diff(ADD_NAT_RULE, REMOVE_NAT_RULE, desired.gateway_rules, actual.nat_rules)
    if not desired.forwarding and actual.forwarding_owned:
        actions.append(Action(RESTORE_FORWARDING))
    return actions


def _diff(add: str, remove: str, desired: frozenset, actual: frozenset) -> list[Action]:  # type: ignore[type-arg]
    # Removals first, so an address or rule that moves never exists twice.
    removals = [Action(remove, item) for item in sorted(actual - desired)]
    additions = [Action(add, item) for item in sorted(desired - actual)]
    return removals + additions


def teardown_plan(actual: ActualState) -> list[Action]:
    """Return the actions that remove everything the agent installed (clean shutdown)."""
    empty = DesiredState(mtu=actual.mtu or 0)
    return [action for action in plan(empty, actual) if action.kind != SET_MTU]
