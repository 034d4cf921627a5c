"""The policy engine: a network document compiled for one node, and per-packet decisions.

Semantics:

- Default deny. Every node is implicitly in group `ALL`. A resource is only in the groups it
  is tagged with, so an `ALL` to `ALL` policy covers it only when it is tagged `ALL`.
- A group used as a destination expands to its nodes and the resources tagged with it;
  `node::<hostname>` names one node and `resource::<dest>` one resource.
- A policy between two nodes permits traffic in both directions: either node may open a flow,
  restricted by the same rules. A resource is only ever a destination.
- Rules restrict protocol and destination ports (no rules: all traffic). Conditions are
  evaluated against the initiating (source) node and must all hold.
- Traffic to a resource goes from the client node to the resource's gateway node over the
  overlay, so client and gateway are peers even without a node-to-node policy.
- A domain resource (`db.example.internal`, `*.example.internal`) has no address in the
  document. Its gateway resolves names for permitted clients, and both sides learn the
  resolved addresses at runtime (`CompiledNetwork.learned`). A client of a domain resource may
  send DNS queries (UDP port 53) to that resource's gateway node.

`CompiledNetwork.decide` judges the packet that opens a flow: `port` is its destination port
(ignored for ICMP). Replies need a flow table in the data plane, or `decide_reply` for a
stateless check. The compiled form keeps per-peer lookups, so a decision never scans policies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from netsody_common import _policy_index as index_module
from netsody_common._domains import DomainMatcher, LearnedAddresses
from netsody_common._policy_index import DocumentIndex, positions_of
from netsody_common._rule_set import ANY_TRAFFIC, PROTOCOL_NUMBERS, PrefixTable, RuleSet
from netsody_common.document import (
    NODE_PREFIX,
    RESOURCE_PREFIX,
    NetworkDocument,
    Node,
    Policy,
    Resource,
    Rule,
)
from netsody_common.errors import NetsodyError

logger = logging.getLogger(__name__)

EGRESS = "egress"
INGRESS = "ingress"
DNS_ZONE = "netsody.me"
# The port a gateway node's resolver listens on at its overlay address, for domain resources.
GATEWAY_DNS_PORT = 53
_UDP = 17

__all__ = [
    "ANY_TRAFFIC",
    "DNS_ZONE",
    "EGRESS",
    "GATEWAY_DNS_PORT",
    "INGRESS",
    "PROTOCOL_NUMBERS",
    "CompiledNetwork",
    "GatewayClient",
    "GatewayDuty",
    "LearnedAddresses",
    "NodeNotFoundError",
    "Peer",
    "PolicyError",
    "ResourceAccess",
    "RuleSet",
    "compile_for_node",
    "render_view_for_node",
    "view_for_node",
]


class PolicyError(NetsodyError):
    """A document cannot be compiled for the requested node."""


class NodeNotFoundError(PolicyError, LookupError):
    """The requested pk is not a node of the document."""


@dataclass(frozen=True)
class ResourceAccess:
    """A resource and the traffic permitted to it."""

    dest: str
    network: IPv4Network | None
    rules: RuleSet


@dataclass(frozen=True)
class Peer:
    """A node this node may exchange packets with, and what each side may initiate.

    `node_rules` is the traffic between the two overlay addresses (None: no node-to-node
    policy). `reachable` lists the peer's resources this node may use through it as gateway,
    and `served` lists this node's resources the peer may use. `allowed_sources` contains every
    source network a packet from the peer may carry: its own address and `reachable` networks.
    """

    pk: str
    hostname: str
    ip: IPv4Address
    node_rules: RuleSet | None
    reachable: tuple[ResourceAccess, ...] = ()
    served: tuple[ResourceAccess, ...] = ()

    @property
    def allowed_sources(self) -> tuple[IPv4Network, ...]:
        """The overlay address of the peer as a /32, then the networks it is gateway for."""
        own = IPv4Network(int(self.ip))
        return (own, *(item.network for item in self.reachable if item.network is not None))


@dataclass(frozen=True)
class GatewayClient:
    """A node permitted to use a resource through this node."""

    pk: str
    ip: IPv4Address
    rules: RuleSet


@dataclass(frozen=True)
class GatewayDuty:
    """A resource this node forwards to, with the nodes permitted to use it."""

    dest: str
    network: IPv4Network | None
    clients: tuple[GatewayClient, ...]


@dataclass(frozen=True)
class CompiledNetwork:
    """One document compiled for one node: peers, routes, gateway duties and names.

    `routes` maps each reachable IPv4 resource network to its gateway pk, `domain_routes` each
    reachable domain or wildcard domain (resolved by the gateway, so never an IP route).
    `gateway_duties` maps the IPv4 network of each resource this node serves to its duty, and
    `domain_gateway_duties` does the same for served domains. `hostnames` maps the lowercase
    hostname of this node and of every peer with a node-to-node policy to its overlay address.

    `learned` holds the addresses resolved for domain resources at runtime. It is the one
    mutable part: `decide` and `is_valid_source` read it, so a learned address takes effect on
    the next call and an expired one stops doing so.
    """

    network_name: str
    network: IPv4Network
    pk: str
    hostname: str
    ip: IPv4Address
    peers: tuple[Peer, ...]
    routes: Mapping[IPv4Network, str]
    domain_routes: Mapping[str, str]
    gateway_duties: Mapping[IPv4Network, GatewayDuty]
    domain_gateway_duties: Mapping[str, GatewayDuty]
    hostnames: Mapping[str, IPv4Address]
    learned: LearnedAddresses = field(repr=False, compare=False, default_factory=LearnedAddresses)
    _filters: dict[str, _PeerFilter] = field(repr=False, compare=False, default_factory=dict)
    _ip_int: int = field(repr=False, compare=False, default=0)
    _reach_names: DomainMatcher = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    _serve_names: DomainMatcher = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not self._filters:
            self._filters.update(_build_filters(self.peers))
        object.__setattr__(self, "_ip_int", int(self.ip))
        object.__setattr__(self, "_reach_names", DomainMatcher(self.domain_routes))
        served = {dest: dest for dest in self.domain_gateway_duties}
        object.__setattr__(self, "_serve_names", DomainMatcher(served))

    @property
    def dns_names(self) -> dict[str, IPv4Address]:
        """The `hostnames` as fully qualified names in the `netsody.me` zone."""
        return {f"{name}.{DNS_ZONE}": ip for name, ip in self.hostnames.items()}

    def peer(self, pk: str) -> Peer | None:
        """Return the peer with `pk`, or None when no policy relates it to this node."""
        found = self._filters.get(pk)
        return None if found is None else found.peer

    def decide(
        self,
        direction: str,
        src_ip: IPv4Address | int | str,
        dst_ip: IPv4Address | int | str,
        protocol: int | str,
        port: int | None,
        peer_pk: str,
    ) -> bool:
        """Return whether the first packet of a flow may pass.

        `direction` is "egress" (read from the TUN device, sent to `peer_pk`) or "ingress"
        (received from `peer_pk`, written to the TUN device). Addresses are IPv4Address objects,
        32-bit integers or strings; `protocol` an IP protocol number or "tcp", "udp", "icmp";
        `port` the destination port (ignored for ICMP). SECURITY: an ingress packet must come
        from the peer's own address, because resources and other nodes never open flows.
        Raises ValueError for an unknown direction.
        """
        found = self._filters.get(peer_pk)
        if found is None:
            return False
        src = src_ip if type(src_ip) is int else _address_int(src_ip)
        dst = dst_ip if type(dst_ip) is int else _address_int(dst_ip)
        number = protocol if type(protocol) is int else _protocol_number(protocol)
        if direction == EGRESS:
            if src != self._ip_int:
                return False
            if dst == found.ip:
                rules = found.node_rules
                if rules is not None and (rules.allow_all or rules.allows(number, port)):
                    return True
                return found.dns_to_peer and number == _UDP and port == GATEWAY_DNS_PORT
            if found.reachable.allows(dst, number, port):
                return True
            if not found.domain_reach:
                return False
            dests = self.learned.reachable.get((peer_pk, dst))
            return _learned_allows(found.domain_reach, dests, number, port)
        if direction == INGRESS:
            if src != found.ip:
                return False
            if dst == self._ip_int:
                rules = found.node_rules
                if rules is not None and (rules.allow_all or rules.allows(number, port)):
                    return True
                return found.dns_from_peer and number == _UDP and port == GATEWAY_DNS_PORT
            if found.served.allows(dst, number, port):
                return True
            if not found.domain_served:
                return False
            dests = self.learned.served.get((peer_pk, dst))
            return _learned_allows(found.domain_served, dests, number, port)
        raise ValueError(f"direction {direction!r} is invalid: use 'egress' or 'ingress'")

    def learned_egress_allows(
        self, peer_pk: str, src: int, dst: int, *, protocol: int, port: int | None
    ) -> bool:
        """Return whether learned addresses permit this node to open a flow to `dst`.

        Only domain resources reached through `peer_pk` count, so a caller that caches
        `decide` can check learned addresses, which expire, without caching them. Addresses
        are 32-bit integers and `protocol` is an IP protocol number.
        """
        found = self._filters.get(peer_pk)
        if found is None or not found.domain_reach or src != self._ip_int:
            return False
        dests = self.learned.reachable.get((peer_pk, dst))
        return _learned_allows(found.domain_reach, dests, protocol, port)

    def learned_ingress_allows(
        self, peer_pk: str, src: int, dst: int, *, protocol: int, port: int | None
    ) -> bool:
        """Return whether learned addresses permit client `peer_pk` to open a flow to `dst`.

        SECURITY: the flow must come from the client's own overlay address.
        """
        found = self._filters.get(peer_pk)
        if found is None or not found.domain_served or src != found.ip:
            return False
        dests = self.learned.served.get((peer_pk, dst))
        return _learned_allows(found.domain_served, dests, protocol, port)

    def decide_reply(
        self,
        direction: str,
        src_ip: IPv4Address | int | str,
        dst_ip: IPv4Address | int | str,
        protocol: int | str,
        src_port: int | None,
        peer_pk: str,
    ) -> bool:
        """Return whether a packet may pass as a reply to a flow the other side may open.

        A stateless check: the reverse packet (addresses swapped, `src_port` as the destination
        port, direction flipped) must be permitted by `decide`. It admits any packet sent from a
        permitted service port, so a data plane with a flow table should prefer that table.
        """
        if direction == EGRESS:
            return self.decide(INGRESS, dst_ip, src_ip, protocol, src_port, peer_pk)
        if direction == INGRESS:
            return self.decide(EGRESS, dst_ip, src_ip, protocol, src_port, peer_pk)
        raise ValueError(f"direction {direction!r} is invalid: use 'egress' or 'ingress'")

    def is_valid_source(self, peer_pk: str, src_ip: IPv4Address | int | str) -> bool:
        """Return whether a packet from `peer_pk` may carry `src_ip` (anti-spoofing).

        SECURITY: valid sources are the peer's overlay address and the networks of resources
        this node may reach through the peer as gateway.
        """
        found = self._filters.get(peer_pk)
        if found is None:
            return False
        src = src_ip if type(src_ip) is int else _address_int(src_ip)
        if src == found.ip or found.reachable.contains(src):
            return True
        return (peer_pk, src) in self.learned.reachable

    def decide_many(
        self, packets: Iterable[tuple[str, int, int, int, int | None, str]]
    ) -> list[bool]:
        """Return `decide` for each (direction, src, dst, protocol, port, peer_pk) tuple.

        Faster per packet than calling `decide` in a loop when addresses are integers and
        protocols are numbers, because the loop binds its lookups once.
        """
        filters = self._filters
        own = self._ip_int
        results: list[bool] = []
        append = results.append
        for direction, src, dst, protocol, port, peer_pk in packets:
            found = filters.get(peer_pk)
            if found is None:
                append(False)
            elif direction == EGRESS:
                if src != own:
                    append(False)
                elif dst == found.ip:
                    rules = found.node_rules
                    allowed = rules is not None and (
                        rules.allow_all or rules.allows(protocol, port)
                    )
                    append(allowed or self.decide(direction, src, dst, protocol, port, peer_pk))
                else:
                    allowed = found.reachable.allows(dst, protocol, port) or (
                        self.learned_egress_allows(peer_pk, src, dst, protocol=protocol, port=port)
                    )
                    append(allowed)
            elif src != found.ip:
                append(False)
            elif dst == own:
                rules = found.node_rules
                allowed = rules is not None and (rules.allow_all or rules.allows(protocol, port))
                append(allowed or self.decide(direction, src, dst, protocol, port, peer_pk))
            else:
                allowed = found.served.allows(dst, protocol, port) or (
                    self.learned_ingress_allows(peer_pk, src, dst, protocol=protocol, port=port)
                )
                append(allowed)
        return results

    def reachable_domain(self, name: str) -> tuple[str, str] | None:
        """Return (resource destination, gateway pk) of the domain resource `name` belongs to.

        Only resources this node may use through another node count. None when none matches.
        """
        return self._reach_names.match(name)

    def served_domain(self, name: str) -> str | None:
        """Return the destination of the domain resource this node serves that `name` matches."""
        found = self._serve_names.match(name)
        return None if found is None else found[0]

    def domain_client(self, dest: str, client_ip: IPv4Address) -> GatewayClient | None:
        """Return the client with overlay address `client_ip` of served domain resource `dest`.

        SECURITY: None means no policy permits that node to use the resource, so a gateway
        must not resolve its names for it.
        """
        duty = self.domain_gateway_duties.get(dest)
        if duty is None:
            return None
        return next((client for client in duty.clients if client.ip == client_ip), None)

    def adopt_learned(self, previous: CompiledNetwork) -> None:
        """Take over the learned addresses of `previous` that this policy still permits."""
        if previous is self:
            return
        self.learned.copy_from(previous.learned)
        served = {
            dest: frozenset(client.pk for client in duty.clients)
            for dest, duty in self.domain_gateway_duties.items()
        }
        self.learned.retain(self.domain_routes, served)


def _address_int(address: IPv4Address | int | str) -> int:
    return int(address) if isinstance(address, IPv4Address) else int(IPv4Address(address))


def _learned_allows(
    rules_by_dest: Mapping[str, RuleSet],
    dests: frozenset[str] | None,
    protocol: int,
    port: int | None,
) -> bool:
    """Return whether the rules of any resource in `dests` (learned for one address) match."""
    if not dests:
        return False
    for dest in dests:
        rules = rules_by_dest.get(dest)
        if rules is not None and rules.allows(protocol, port):
            return True
    return False


def _protocol_number(protocol: int | str) -> int:
    return PROTOCOL_NUMBERS.get(str(protocol).lower(), -1)


class _PeerFilter:
    """The per-packet lookups of one peer (slots, because decide reads them per packet)."""

    __slots__ = (
        "dns_from_peer",
        "dns_to_peer",
        "domain_reach",
        "domain_served",
        "ip",
        "node_rules",
        "peer",
        "pk",
        "reachable",
        "served",
    )

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.pk = peer.pk
        self.ip = int(peer.ip)
        self.node_rules = peer.node_rules
        self.reachable = PrefixTable.build(peer.reachable)
        self.served = PrefixTable.build(peer.served)
        self.domain_reach = {item.dest: item.rules for item in peer.reachable if not item.network}
        self.domain_served = {item.dest: item.rules for item in peer.served if not item.network}
        # The peer is the gateway of a domain resource this node uses, or a client of one
        # this node serves: DNS queries may go to the gateway's resolver.
        self.dns_to_peer = bool(self.domain_reach)
        self.dns_from_peer = bool(self.domain_served)


def _build_filters(peers: Iterable[Peer]) -> dict[str, _PeerFilter]:
    return {peer.pk: _PeerFilter(peer) for peer in peers}


@dataclass
class _Grants:
    """Permissions of one node, collected policy by policy before the peers are built."""

    pair_masks: dict[tuple[Rule, ...], int] = field(default_factory=dict)
    reach: dict[int, set[tuple[Rule, ...]]] = field(default_factory=dict)
    duties: dict[int, dict[tuple[Rule, ...], int]] = field(default_factory=dict)


def compile_for_node(document: NetworkDocument, pk: str) -> CompiledNetwork:
    """Compile `document` for the node with `pk`.

    Raises `NodeNotFoundError` when `pk` is not a node of the document. The document's lookups
    are built on the first compile and reused while the document object lives, so compiling
    the same document for many nodes costs little per node.
    """
    index = index_module.index_for(document)
    position = _position_of(index, pk)
    grants = _collect_grants(index, position)
    return _assemble(index, position, grants)


def _collect_grants(index: DocumentIndex, position: int) -> _Grants:
    document = index.document
    node = document.nodes[position]
    bit = 1 << position
    own_resources = set(index.gateway_resources.get(node.pk, ()))
    grants = _Grants()
    for policy in index.policies:
        rules = policy.rules
        if policy.source_mask & bit and index.condition_mask(policy.conditions) & bit:
            peers = policy.destination_mask & ~bit
            if peers:
                grants.pair_masks[rules] = grants.pair_masks.get(rules, 0) | peers
            for resource in policy.destination_resources:
                grants.reach.setdefault(resource, set()).add(rules)
        serves = own_resources.intersection(policy.destination_resources)
        if not (policy.destination_mask & bit or serves):
            continue
        sources = policy.source_mask & index.condition_mask(policy.conditions) & ~bit
        if not sources:
            continue
        if policy.destination_mask & bit:
            grants.pair_masks[rules] = grants.pair_masks.get(rules, 0) | sources
        for resource in serves:
            clients = grants.duties.setdefault(resource, {})
            clients[rules] = clients.get(rules, 0) | sources
    return grants


def _assemble(index: DocumentIndex, position: int, grants: _Grants) -> CompiledNetwork:
    document = index.document
    node = document.nodes[position]
    pair_rules = _rules_by_position(grants.pair_masks)
    reachable = _reachable_by_gateway(index, position, grants)
    served, duties, domain_duties = _served_by_client(index, grants)
    peer_positions = sorted(set(pair_rules) | set(reachable) | set(served))
    peers = tuple(
        Peer(
            pk=document.nodes[peer_position].pk,
            hostname=document.nodes[peer_position].hostname,
            ip=document.nodes[peer_position].ip,
            node_rules=pair_rules.get(peer_position),
            reachable=tuple(reachable.get(peer_position, ())),
            served=tuple(served.get(peer_position, ())),
        )
        for peer_position in peer_positions
    )

    routes, domain_routes = _routes(document, position, grants)
    hostnames = {node.hostname.lower(): node.ip}
    for peer_position in sorted(pair_rules):
        other = document.nodes[peer_position]
        hostnames[other.hostname.lower()] = other.ip

    return CompiledNetwork(
        network_name=document.name,
        network=document.network,
        pk=node.pk,
        hostname=node.hostname,
        ip=node.ip,
        peers=peers,
        routes=routes,
        domain_routes=domain_routes,
        gateway_duties=duties,
        domain_gateway_duties=domain_duties,
        hostnames=hostnames,
    )


_rule_set_cache: dict[frozenset[tuple[Rule, ...]], RuleSet] = {}


def _rule_set(keys: Iterable[tuple[Rule, ...]]) -> RuleSet:
    key = frozenset(keys)
    found = _rule_set_cache.get(key)
    if found is None:
        found = RuleSet.union(key)
        if len(_rule_set_cache) > 4096:
            _rule_set_cache.clear()
        _rule_set_cache[key] = found
    return found


def _rules_by_position(masks: Mapping[tuple[Rule, ...], int]) -> dict[int, RuleSet]:
    keys_by_position: dict[int, list[tuple[Rule, ...]]] = {}
    for rules, mask in masks.items():
        for peer_position in positions_of(mask):
            keys_by_position.setdefault(peer_position, []).append(rules)
    return {position: _rule_set(keys) for position, keys in keys_by_position.items()}


def _reachable_by_gateway(
    index: DocumentIndex, position: int, grants: _Grants
) -> dict[int, list[ResourceAccess]]:
    document = index.document
    result: dict[int, list[ResourceAccess]] = {}
    for resource_position in sorted(grants.reach):
        resource = document.resources[resource_position]
        gateway = index.position_by_pk[resource.gw]
        if gateway == position:
            continue
        access = ResourceAccess(
            resource.dest, resource.network, _rule_set(grants.reach[resource_position])
        )
        result.setdefault(gateway, []).append(access)
    return result


def _served_by_client(
    index: DocumentIndex, grants: _Grants
) -> tuple[dict[int, list[ResourceAccess]], dict[IPv4Network, GatewayDuty], dict[str, GatewayDuty]]:
    document = index.document
    served: dict[int, list[ResourceAccess]] = {}
    duties: dict[IPv4Network, GatewayDuty] = {}
    domain_duties: dict[str, GatewayDuty] = {}
    for resource_position in sorted(grants.duties):
        resource = document.resources[resource_position]
        by_client = _rules_by_position(grants.duties[resource_position])
        clients = []
        for client in sorted(by_client):
            rules = by_client[client]
            served.setdefault(client, []).append(
                ResourceAccess(resource.dest, resource.network, rules)
            )
            other = document.nodes[client]
            clients.append(GatewayClient(other.pk, other.ip, rules))
        duty = GatewayDuty(resource.dest, resource.network, tuple(clients))
        if resource.network is None:
            domain_duties[resource.dest] = duty
        else:
            duties[resource.network] = duty
    return served, duties, domain_duties


def _routes(
    document: NetworkDocument, position: int, grants: _Grants
) -> tuple[dict[IPv4Network, str], dict[str, str]]:
    own_pk = document.nodes[position].pk
    routes: dict[IPv4Network, str] = {}
    domain_routes: dict[str, str] = {}
    for resource_position in sorted(grants.reach):
        resource = document.resources[resource_position]
        if resource.gw == own_pk:
            continue
        network = resource.network
        if network is None:
            domain_routes[resource.dest] = resource.gw
        else:
            routes[network] = resource.gw
    return routes, domain_routes


def view_for_node(document: NetworkDocument, pk: str) -> NetworkDocument:
    """Reduce `document` to what the node with `pk` may see, for the controller to serve.

    The view contains this node (complete), its peers (hostname, ip and pk only), the resources it
    may reach or serves (without groups), and explicit `node::`/`resource::` policies with the
    conditions already evaluated. Compiling the view for `pk` gives a `CompiledNetwork` equal to
    compiling the whole document, while other nodes' groups, addresses and versions stay hidden.
    Raises `NodeNotFoundError` when `pk` is not a node of the document.
    """
    index = index_module.index_for(document)
    position = _position_of(index, pk)
    grants = _collect_grants(index, position)
    compiled = _assemble(index, position, grants)
    # Resources this node serves and may also reach itself give no peer, but their policy
    # stays in the view so that the compiled form matches.
    own_reach = {
        document.resources[item].dest: _rule_set(keys)
        for item, keys in sorted(grants.reach.items())
        if document.resources[item].gw == pk
    }
    visible_pks = {peer.pk for peer in compiled.peers} | {pk}
    nodes = tuple(_visible_node(node, pk) for node in document.nodes if node.pk in visible_pks)
    used_dests = {item.dest for peer in compiled.peers for item in (*peer.reachable, *peer.served)}
    used_dests.update(own_reach)
    resources = tuple(
        Resource(dest=resource.dest, gw=resource.gw, name=resource.name)
        for resource in document.resources
        if resource.dest in used_dests
    )
    return NetworkDocument(
        name=document.name,
        network=document.network,
        nodes=nodes,
        policies=_view_policies(compiled, own_reach),
        resources=resources,
    )


def render_view_for_node(document: NetworkDocument, pk: str) -> str:
    """Return `render_document(view_for_node(document, pk))`, the same text, made fast for many
    nodes of one document.

    The TOML of each node, resource and rule set is rendered once and reused while the document
    object lives, so a view costs about the size of its text rather than a full render.
    Raises `NodeNotFoundError` when `pk` is not a node of the document.
    """
    # NOTE: imported here because the renderer builds on the functions of this module.
    from netsody_common._view_render import renderer_for

    return renderer_for(document).render(pk)


def _position_of(index: DocumentIndex, pk: str) -> int:
    position = index.position_by_pk.get(pk)
    if position is None:
        document = index.document
        name = document.name or str(document.network)
        raise NodeNotFoundError(f"node {pk} is not in network {name}: pair or join it first")
    return position


def _visible_node(node: Node, own_pk: str) -> Node:
    if node.pk == own_pk:
        return node
    return Node(hostname=node.hostname, ip=node.ip, pk=node.pk)


def _view_policies(
    compiled: CompiledNetwork, own_reach: Mapping[str, RuleSet]
) -> tuple[Policy, ...]:
    # One policy per distinct rule set from this node to its targets, then one per resource
    # this node serves and rule set of its clients.
    targets_by_rules: dict[RuleSet, list[str]] = {}
    for peer in compiled.peers:
        if peer.node_rules is not None:
            targets_by_rules.setdefault(peer.node_rules, []).append(NODE_PREFIX + peer.hostname)
        for item in peer.reachable:
            targets_by_rules.setdefault(item.rules, []).append(RESOURCE_PREFIX + item.dest)
    for dest, rules in own_reach.items():
        targets_by_rules.setdefault(rules, []).append(RESOURCE_PREFIX + dest)
    own = (NODE_PREFIX + compiled.hostname,)
    policies = [
        Policy(source_groups=own, destination_groups=tuple(targets), rules=rules.as_rules())
        for rules, targets in targets_by_rules.items()
    ]
    hostname_by_pk = {peer.pk: peer.hostname for peer in compiled.peers}
    for duty in (*compiled.gateway_duties.values(), *compiled.domain_gateway_duties.values()):
        clients_by_rules: dict[RuleSet, list[str]] = {}
        for client in duty.clients:
            entry = NODE_PREFIX + hostname_by_pk[client.pk]
            clients_by_rules.setdefault(client.rules, []).append(entry)
        policies.extend(
            Policy(
                source_groups=tuple(clients),
                destination_groups=(RESOURCE_PREFIX + duty.dest,),
                rules=rules.as_rules(),
            )
            for rules, clients in clients_by_rules.items()
        )
    return tuple(policies)
