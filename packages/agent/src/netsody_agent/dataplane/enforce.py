"""Per-packet enforcement: routing to a peer, policy, anti-spoofing and reply flows.

`Enforcer` is built from the compiled networks of one node and answers two questions per packet:

- `egress(header)`: which peer gets a packet read from the TUN device, or why it is dropped;
- `ingress(peer_pk, header)`: whether a packet received from `peer_pk` may be written to the TUN
  device, or why it is dropped.

Policies are stateless allow rules of the initiating side, so replies are admitted through a flow
table: an allowed packet records its 5-tuple and the reverse one, and a packet matching a
recorded tuple passes without a policy decision (anti-spoofing still applies). Policy decisions
are cached per (direction, source, destination, protocol, port, peer); a new `Enforcer` starts
with empty caches, so a policy change takes effect on the next packet.

Addresses learned for domain resources (`CompiledNetwork.learned`) change without a new
`Enforcer`. They are read live with dict lookups, only when the static lookups found nothing,
and their decisions are never cached, so an expired address stops opening flows at once.
Flows opened before the expiry continue until they are idle, as conntrack does on the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from netsody_agent.dataplane.packet import PROTO_ICMP, IPv4Header

logger = logging.getLogger(__name__)

EGRESS = "egress"
INGRESS = "ingress"

# Drop reasons reported by `status()`.
DROP_NO_ROUTE = "no-route"
DROP_EGRESS_POLICY = "egress-policy"
DROP_INGRESS_POLICY = "ingress-policy"
DROP_SPOOFED = "spoofed-source"
DROP_WRONG_DESTINATION = "wrong-destination"
DROP_MALFORMED = "malformed"
DROP_NOT_IPV4 = "not-ipv4"
DROP_PEER_DOWN = "peer-down"
DROP_TOO_LARGE = "too-large"
DROP_QUEUE_FULL = "queue-full"

FLOW_IDLE_SECONDS = 180.0
MAX_FLOWS = 65536
MAX_DECISIONS = 65536
_MISSING = object()


@dataclass(frozen=True)
class PeerEntry:
    """One peer of one compiled network, as the enforcer needs it."""

    network: Any
    pk: str
    hostname: str
    ip: IPv4Address
    sources: tuple[IPv4Network, ...]


def _to_int(address: bytes) -> int:
    return int.from_bytes(address, "big")


class Enforcer:
    """Routing and policy decisions for packets between the TUN device and the peers.

    Built from compiled networks (duck-typed, see `peer_entries`, `local_addresses`,
    `route_entries`). It keeps the reply flow table, which the caller expires with `expire_flows`.
    """

    def __init__(self, networks: Iterable[Any]) -> None:
        self.networks = list(networks)
        self.peers: dict[str, list[PeerEntry]] = {}
        self._peer_by_ip: dict[bytes, PeerEntry] = {}
        self._routes: list[tuple[int, int, Any, str]] = []
        self._local: set[bytes] = set()
        self._local_networks: list[tuple[int, int]] = []
        self._sources: dict[str, list[tuple[int, int, Any]]] = {}
        self._decisions: dict[tuple, bool] = {}
        self._source_cache: dict[tuple[str, bytes], Any] = {}
        self._flows: dict[tuple, float] = {}
        # Networks with domain resources, whose learned addresses are looked up per packet.
        self._learned: list[Any] = [
            network for network in self.networks if _has_domain_resources(network)
        ]
        self.now = 0.0
        for network in self.networks:
            self._add_network(network)
        self._routes.sort(key=lambda route: route[1], reverse=True)

    def _add_network(self, network: Any) -> None:
        for address in local_addresses(network):
            self._local.add(address.packed)
        for gateway_network in gateway_networks(network):
            mask = int(gateway_network.netmask)
            self._local_networks.append((int(gateway_network.network_address), mask))
        for entry in peer_entries(network):
            self.peers.setdefault(entry.pk, []).append(entry)
            self._peer_by_ip.setdefault(entry.ip.packed, entry)
            for source in entry.sources:
                self._sources.setdefault(entry.pk, []).append(
                    (int(source.network_address), int(source.netmask), network)
                )
        for destination, gateway_pk in route_entries(network):
            self._routes.append(
                (int(destination.network_address), destination.prefixlen, network, gateway_pk)
            )

    def peer_pks(self) -> set[str]:
        """Return the pks this node may have a connection with."""
        return set(self.peers)

    def egress(self, header: IPv4Header) -> tuple[str | None, str | None]:
        """Return (peer pk, None) for a TUN packet to forward, or (None, drop reason)."""
        entry = self._peer_by_ip.get(header.dst)
        learned = None
        if entry is not None:
            network, peer_pk = entry.network, entry.pk
        else:
            # A learned /32 is more specific than any resource network, so it comes first.
            route = learned = self._learned_route(header.dst) if self._learned else None
            if route is None:
                route = self._route(header.dst)
            if route is None:
                return None, DROP_NO_ROUTE
            network, peer_pk = route
        key = _flow_key(header)
        if key in self._flows:
            self._flows[key] = self.now
            return peer_pk, None
        if not (learned and _learned_decide(network, EGRESS, header, peer_pk)) and not (
            self._decide(network, EGRESS, header, peer_pk)
        ):
            return None, DROP_EGRESS_POLICY
        self._remember_reply(key)
        return peer_pk, None

    def ingress(self, peer_pk: str, header: IPv4Header) -> str | None:
        """Return None when a packet from `peer_pk` may reach the TUN device, else a drop reason."""
        # SECURITY: anti-spoofing. A peer may only send from its own overlay address or from
        # networks of resources it is the gateway for.
        network = self._source_network(peer_pk, header.src)
        if network is None:
            # Replies from addresses learned for a domain resource behind this gateway peer.
            network = self._learned_source(peer_pk, header.src) if self._learned else None
            if network is None:
                return DROP_SPOOFED
        learned = False
        if header.dst not in self._local:
            # Learned first: a learned address inside a static resource network must not get
            # a cached decision that outlives its expiry.
            if self._learned:
                learned = self._is_learned_destination(network, peer_pk, header.dst)
            if not learned and not self._is_gateway_destination(header.dst):
                return DROP_WRONG_DESTINATION
        key = _flow_key(header)
        if key in self._flows:
            self._flows[key] = self.now
            return None
        if not (learned and _learned_decide(network, INGRESS, header, peer_pk)) and not (
            self._decide(network, INGRESS, header, peer_pk)
        ):
            return DROP_INGRESS_POLICY
        self._remember_reply(key)
        return None

    def _learned_route(self, dst: bytes) -> tuple[Any, str] | None:
        address = _to_int(dst)
        for network in self._learned:
            gateway_pk = network.learned.routes.get(address)
            if gateway_pk is not None:
                return network, gateway_pk
        return None

    def _learned_source(self, peer_pk: str, src: bytes) -> Any:
        address = _to_int(src)
        for network in self._learned:
            if (peer_pk, address) in network.learned.reachable:
                return network
        return None

    def _is_learned_destination(self, network: Any, peer_pk: str, dst: bytes) -> bool:
        learned = getattr(network, "learned", None)
        return learned is not None and (peer_pk, _to_int(dst)) in learned.served

    def _source_network(self, peer_pk: str, src: bytes) -> Any:
        key = (peer_pk, src)
        network = self._source_cache.get(key, _MISSING)
        if network is _MISSING:
            network = self._find_source_network(peer_pk, src)
            if len(self._source_cache) >= MAX_DECISIONS:
                self._source_cache.clear()
            self._source_cache[key] = network
        return network

    def _find_source_network(self, peer_pk: str, src: bytes) -> Any:
        address = _to_int(src)
        for network_address, mask, network in self._sources.get(peer_pk, ()):
            if address & mask == network_address:
                return network
        return None

    def _is_gateway_destination(self, dst: bytes) -> bool:
        address = _to_int(dst)
        return any(address & mask == network for network, mask in self._local_networks)

    def _route(self, dst: bytes) -> tuple[Any, str] | None:
        address = _to_int(dst)
        for network_address, prefixlen, network, gateway_pk in self._routes:
            mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
            if address & mask == network_address:
                return network, gateway_pk
        return None

    def _decide(self, network: Any, direction: str, header: IPv4Header, peer_pk: str) -> bool:
        port = 0 if header.protocol == PROTO_ICMP else header.dst_port
        key = (id(network), direction, header.src, header.dst, header.protocol, port, peer_pk)
        allowed = self._decisions.get(key)
        if allowed is None:
            allowed = bool(
                network.decide(
                    direction,
                    _to_int(header.src),
                    _to_int(header.dst),
                    header.protocol,
                    port,
                    peer_pk,
                )
            )
            if len(self._decisions) >= MAX_DECISIONS:
                self._decisions.clear()
            self._decisions[key] = allowed
        return allowed

    def _remember_reply(self, key: tuple) -> None:
        if len(self._flows) >= MAX_FLOWS:
            self.expire_flows(self.now)
            if len(self._flows) >= MAX_FLOWS:
                return
        protocol, src, src_port, dst, dst_port = key
        # Both directions: later packets of the flow skip the policy decision as well.
        self._flows[key] = self.now
        self._flows[(protocol, dst, dst_port, src, src_port)] = self.now

    def expire_flows(self, now: float) -> int:
        """Forget reply flows idle for `FLOW_IDLE_SECONDS`; return how many were removed."""
        limit = now - FLOW_IDLE_SECONDS
        stale = [key for key, seen in self._flows.items() if seen < limit]
        for key in stale:
            del self._flows[key]
        return len(stale)


def _learned_decide(network: Any, direction: str, header: IPv4Header, peer_pk: str) -> bool:
    """Return whether learned domain addresses permit the packet (never cached)."""
    port = 0 if header.protocol == PROTO_ICMP else header.dst_port
    check = network.learned_egress_allows if direction == EGRESS else network.learned_ingress_allows
    return bool(
        check(
            peer_pk, _to_int(header.src), _to_int(header.dst), protocol=header.protocol, port=port
        )
    )


def _has_domain_resources(network: Any) -> bool:
    has_learned = getattr(network, "learned", None) is not None
    domains = getattr(network, "domain_routes", None) or getattr(
        network, "domain_gateway_duties", None
    )
    return has_learned and bool(domains)


def _flow_key(header: IPv4Header) -> tuple:
    if header.protocol == PROTO_ICMP:
        # Echo request and reply share the identifier, so both ends key the flow with it.
        return (PROTO_ICMP, header.src, header.src_port, header.dst, header.src_port)
    return (header.protocol, header.src, header.src_port, header.dst, header.dst_port)


def peer_entries(network: Any) -> list[PeerEntry]:
    """Return the peers of a compiled network with their permitted source networks."""
    entries = []
    for peer in network.peers:
        ip = IPv4Address(peer.ip)
        sources = tuple(IPv4Network(source) for source in peer.allowed_sources)
        entries.append(PeerEntry(network, peer.pk, peer.hostname, ip, sources))
    return entries


def local_addresses(network: Any) -> list[IPv4Address]:
    """This node's overlay addresses in a compiled network."""
    return [IPv4Address(network.ip)]


def gateway_networks(network: Any) -> list[IPv4Network]:
    """Destination networks this node forwards to as a resource gateway."""
    # Domain resources are keyed by their name; only IPv4 networks are routed.
    return [duty for duty in network.gateway_duties if isinstance(duty, IPv4Network)]


def route_entries(network: Any) -> list[tuple[IPv4Network, str]]:
    """(resource network, gateway pk) pairs of a compiled network."""
    routes = network.routes
    items = routes.items() if isinstance(routes, dict) else routes
    return [(IPv4Network(destination), gateway) for destination, gateway in items]
