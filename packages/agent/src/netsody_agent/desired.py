"""Turn compiled networks (netsody_common.policy) into the reconciler's desired state.

This module is the one place in the daemon that reads the fields of a `CompiledNetwork` for
the machine state: `ip`, `routes` (resource network to gateway pk), `domain_routes` (domain
resource to gateway pk), `gateway_duties` and `domain_gateway_duties` (destination to a duty
with its permitted clients), `hostnames` (name to overlay address) and `learned` (addresses
resolved for domain resources).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from netsody_agent.reconciler.planner import DesiredState, DnsLink, GatewayRule

logger = logging.getLogger(__name__)

# 1280 bytes is the IPv6 minimum MTU, so an overlay packet plus QUIC, UDP and IP headers (and
# the MASQUE framing of a relay) still fits a 1500-byte path, and typical tunnels and PPPoE
# links below it, without fragmentation.
DEFAULT_MTU = 1280


def unsafe_overlay_reason(network: IPv4Network) -> str | None:
    """Return why an overlay network must not be installed on this host, or None when it may.

    SECURITY: a manually managed document names its own subnet and nothing upstream checks it.
    Routing the default route, loopback, link-local, multicast or reserved space into the TUN
    device would cut the host off from its own network, the controller and the super peers.
    """
    if network.prefixlen == 0:
        return f"{network} would route every address into the overlay"
    for is_unsafe, kind in (
        (network.is_loopback, "loopback"),
        (network.is_link_local, "link-local"),
        (network.is_multicast, "multicast"),
        (network.is_reserved, "reserved"),
        (network.is_unspecified, "unspecified"),
    ):
        if is_unsafe:
            return f"{network} is {kind} address space; use a private range such as 10.0.0.0/8"
    if network.overlaps(IPv4Network("0.0.0.0/8")):
        return f"{network} overlaps 0.0.0.0/8 ('this network'); use a private range"
    return None


@dataclass(frozen=True)
class AppliedNetwork:
    """One network ready to apply: its document subnet and its compiled form."""

    network_id: str
    name: str
    subnet: IPv4Network
    compiled: Any


def _route_items(routes: Any) -> Iterable[tuple[Any, Any]]:
    return routes.items() if isinstance(routes, Mapping) else routes


def _ipv4_network(value: Any) -> IPv4Network | None:
    """Return `value` as an IPv4 network, or None for a domain resource (not routable by IP)."""
    try:
        return IPv4Network(value)
    except (ValueError, TypeError):
        return None


def hostnames(network: Any) -> dict[str, IPv4Address]:
    """Return the names this node may resolve in `network`, hostname to overlay address."""
    return {str(name).lower(): IPv4Address(ip) for name, ip in network.hostnames.items()}


def _gateway_rules(network: Any) -> set[GatewayRule]:
    """Return one rule per (permitted client, IPv4 resource) of this node's gateway duties,
    and one per (client, address) learned for a domain resource it serves."""
    rules: set[GatewayRule] = set()
    for duty in network.gateway_duties.values():
        destination = _ipv4_network(duty.network) if duty.network is not None else None
        if destination is None:
            continue
        for client in duty.clients:
            rules.add(GatewayRule(IPv4Network(client.ip), destination))
    learned = getattr(network, "learned", None)
    if learned:
        client_ips = {
            client.pk: client.ip
            for duty in network.domain_gateway_duties.values()
            for client in duty.clients
        }
        for client_pk, address in learned.served_pairs():
            client_ip = client_ips.get(client_pk)
            if client_ip is not None:
                rules.add(GatewayRule(IPv4Network(client_ip), IPv4Network(address)))
    return rules


def _learned_routes(network: Any) -> set[IPv4Network]:
    """Return a /32 route per address learned for a domain resource this node uses."""
    learned = getattr(network, "learned", None)
    if not learned:
        return set()
    return {IPv4Network(address) for address in learned.reachable_addresses()}


def resource_domains(network: Any) -> set[str]:
    """Return the routing domains for the domain resources this node may use in `network`.

    A wildcard `*.example.internal` becomes `example.internal`. NOTE: a routing domain covers
    its apex too, so the agent receives queries for `example.internal` itself and refuses them.
    """
    return {dest.removeprefix("*.") for dest in getattr(network, "domain_routes", {})}


def route_conflict(route: IPv4Network, protected: Iterable[IPv4Address]) -> str | None:
    """Return why `route` must not go into the TUN device, or None when it may.

    SECURITY: a route over unsafe address space (`unsafe_overlay_reason`) or over an address the
    agent itself reaches through the underlay (`protected`: super peers, the controller, peer
    endpoints, this host's own addresses) would send the agent's own traffic into the overlay:
    it loses its signaling and relays, and a gateway could take over that traffic.
    """
    reason = unsafe_overlay_reason(route)
    if reason is not None:
        return reason
    for address in protected:
        if address in route:
            return f"{route} contains {address}, which the agent reaches through the underlay"
    return None


def build_desired(
    networks: Iterable[AppliedNetwork],
    *,
    mtu: int = DEFAULT_MTU,
    dns_server: str | None = None,
    protected: Iterable[IPv4Address] = (),
) -> tuple[DesiredState, dict[str, IPv4Address]]:
    """Return the desired machine state and the DNS records of `networks`.

    Routes cover resources outside every overlay subnet (the subnets are on-link through the
    addresses) and the learned addresses of domain resources (/32 each), except routes with a
    `route_conflict` (logged). Gateway rules let each permitted client reach each resource this
    node serves. The system resolver sends the zone and the domains of usable domain resources
    to `dns_server`.
    """
    addresses: set[IPv4Interface] = set()
    routes: set[IPv4Network] = set()
    rules: set[GatewayRule] = set()
    records: dict[str, IPv4Address] = {}
    domains: set[str] = set()
    subnets: list[IPv4Network] = []
    for net in networks:
        compiled = net.compiled
        subnets.append(net.subnet)
        addresses.add(IPv4Interface(f"{compiled.ip}/{net.subnet.prefixlen}"))
        for destination, _gateway in _route_items(compiled.routes):
            route = _ipv4_network(destination)
            if route is not None:
                routes.add(route)
        routes.update(_learned_routes(compiled))
        rules.update(_gateway_rules(compiled))
        domains.update(resource_domains(compiled))
        for name, ip in hostnames(compiled).items():
            records.setdefault(name, ip)
    routes = {route for route in routes if not any(route.subnet_of(s) for s in subnets)}
    protected = list(protected)
    for route in sorted(routes):
        conflict = route_conflict(route, protected)
        if conflict is not None:
            logger.warning("route %s not installed: %s", route, conflict)
            routes.discard(route)
    dns = None
    if dns_server and (records or domains):
        dns = DnsLink(dns_server, "netsody.me", tuple(sorted(domains)))
    desired = DesiredState(
        mtu=mtu,
        addresses=frozenset(addresses),
        routes=frozenset(routes),
        gateway_rules=frozenset(rules),
        dns=dns,
    )
    return desired, records
