"""Per-node views of one document, rendered as TOML from fragments cached per document.

`render_document(view_for_node(document, pk))` builds a reduced document and renders it from
scratch, which for a large network costs far more than the policy work behind it. A
`ViewRenderer` renders each node, resource, entry and rule set of the document once, the way
`tomli_w` writes it inside the whole document, and assembles a node's view by joining those
fragments in the order `render_document` writes them.

The assembled text equals `render_document(view_for_node(document, pk))` byte for byte. Where
`tomli_w` would write an entry of a view inline (only tiny entries, such as pks far shorter than
64 characters), or the document repeats a pk or a resource destination (the parser rejects
both), the renderer takes that slow path instead.

NOTE: the fragments follow the layout of tomli_w 1.2 (the version in the lock file). The
property tests compare both paths, so a tomli_w update that changes the layout fails them.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import tomli_w

from netsody_common import _policy_index as index_module
from netsody_common._policy_index import DocumentIndex, positions_of
from netsody_common._rule_set import RuleSet
from netsody_common.document import (
    NODE_PREFIX,
    RESOURCE_PREFIX,
    NetworkDocument,
    Node,
    Resource,
    Rule,
    _node_to_dict,
    _resource_to_dict,
    _rule_to_dict,
    render_document,
)
from netsody_common.policy import (
    _collect_grants,
    _Grants,
    _position_of,
    _rule_set,
    _rules_by_position,
    view_for_node,
)

logger = logging.getLogger(__name__)


@dataclass
class _ViewParts:
    """The contents of one node's view, as document positions and policy entries."""

    node_positions: list[int]
    resource_positions: list[int]
    # (source entries, destination entries, rules) per policy; entries are rendered array items.
    policies: list[tuple[list[str], list[str], RuleSet]]


# Splitting peers by rule set uses bitmask operations while it yields at most this many parts,
# and a per-peer loop beyond that.
_MAX_PARTS = 64
# Marks a fragment that tomli_w writes inline, which only the slow path renders correctly.
_INLINE = ""


class ViewRenderer:
    """Renders the views of one document for many nodes, reusing what every view shares.

    Keeps the document's policy lookups and the TOML text of each array entry, plus, filled on
    first use, the text of each node (complete in its own view, reduced in its peers' views),
    each resource and each rule set. Safe to share between threads: a fragment rendered twice
    at once is the same text.
    """

    def __init__(self, document: NetworkDocument) -> None:
        self._index = index_module.index_for(document)
        # The index contains a shallow copy of the document, so the renderer does not keep the
        # caller's object alive either.
        doc = self._index.document
        self._document = doc
        self._header = render_document(NetworkDocument(name=doc.name, network=doc.network))
        self._exact = len(self._index.position_by_pk) == len(doc.nodes) and len(
            {resource.dest for resource in doc.resources}
        ) == len(doc.resources)
        self.node_entries = _quoted_entries([NODE_PREFIX + node.hostname for node in doc.nodes])
        self.resource_entries = _quoted_entries(
            [RESOURCE_PREFIX + resource.dest for resource in doc.resources]
        )
        self._own_nodes: dict[int, str] = {}
        self._peer_nodes: list[str | None] = [None] * len(doc.nodes)
        self._resources: list[str | None] = [None] * len(doc.resources)
        self._rules: dict[RuleSet, str] = {}

    @property
    def document(self) -> NetworkDocument:
        """The document whose views this renderer makes (a shallow copy of the one given)."""
        return self._document

    @property
    def index(self) -> DocumentIndex:
        """The policy lookups of the document."""
        return self._index

    def render(self, pk: str) -> str:
        """Return `render_document(view_for_node(document, pk))`.

        Raises `NodeNotFoundError` when `pk` is not a node of the document.
        """
        position = _position_of(self._index, pk)
        if not self._exact:
            return render_document(view_for_node(self._document, pk))
        parts = _view_parts(self, position)
        chunks = [self._header]
        peer_nodes = self._peer_nodes
        for node_position in parts.node_positions:
            if node_position == position:
                chunks.append(self._own_node(position))
                continue
            chunk = peer_nodes[node_position]
            if chunk is None:
                chunk = peer_nodes[node_position] = self._peer_node(node_position)
            chunks.append(chunk)
        resources = self._resources
        for resource_position in parts.resource_positions:
            chunk = resources[resource_position]
            if chunk is None:
                chunk = resources[resource_position] = self._resource(resource_position)
            chunks.append(chunk)
        if _INLINE in chunks:
            return render_document(view_for_node(self._document, pk))
        for sources, destinations, rules in parts.policies:
            chunks.append(self._policy(sources, destinations, rules))
        return "".join(chunks)

    def _own_node(self, position: int) -> str:
        found = self._own_nodes.get(position)
        if found is None:
            found = _table_fragment("node", _node_to_dict(self._document.nodes[position]))
            self._own_nodes[position] = found
        return found

    def _peer_node(self, position: int) -> str:
        node = self._document.nodes[position]
        visible = Node(hostname=node.hostname, ip=node.ip, pk=node.pk)
        return _table_fragment("node", _node_to_dict(visible))

    def _resource(self, position: int) -> str:
        resource = self._document.resources[position]
        visible = Resource(dest=resource.dest, gw=resource.gw, name=resource.name)
        return _table_fragment("resource", _resource_to_dict(visible))

    def _policy(self, sources: list[str], destinations: list[str], rules: RuleSet) -> str:
        # A view's policy has no name or conditions, and both entry lists are never empty, so
        # tomli_w writes it as a table of the `policy` array with the lists on several lines.
        rules_text = self._rules.get(rules)
        if rules_text is None:
            rules_text = self._rules[rules] = _rules_fragment(rules)
        return "".join(
            (
                "\n[[policy]]\nsource_groups = [\n",
                ",\n".join(sources),
                ",\n]\ndestination_groups = [\n",
                ",\n".join(destinations),
                ",\n]\n",
                rules_text,
            )
        )


def _view_parts(renderer: ViewRenderer, position: int) -> _ViewParts:
    """Compute what `view_for_node` keeps, without building the compiled form of the node.

    Mirrors `policy._assemble` and `policy.view_for_node` for a document whose pks and resource
    destinations are unique, entry for entry and in the same order.
    """
    index = renderer.index
    document = index.document
    grants = _collect_grants(index, position)
    peers_by_rules = _positions_by_rules(grants.pair_masks)
    reachable: dict[int, list[int]] = {}
    own_reach: list[int] = []
    for resource_position in sorted(grants.reach):
        gateway = index.position_by_pk[document.resources[resource_position].gw]
        if gateway == position:
            own_reach.append(resource_position)
        else:
            reachable.setdefault(gateway, []).append(resource_position)
    duties, clients_of = _duties(document, grants)
    peers: set[int] = set(reachable).union(clients_of, *peers_by_rules.values())
    node_positions = sorted({*peers, position})
    resource_positions = sorted({*grants.reach, *grants.duties})
    targets_by_rules = _targets_by_rules(renderer, grants, peers_by_rules, reachable)
    for resource_position in own_reach:
        rules = _rule_set(grants.reach[resource_position])
        entry = renderer.resource_entries[resource_position]
        targets_by_rules.setdefault(rules, []).append(entry)
    own = [renderer.node_entries[position]]
    policies = [(own, targets, rules) for rules, targets in targets_by_rules.items()]
    for resource_position, clients in duties:
        clients_by_rules: dict[RuleSet, list[str]] = {}
        for client, rules in clients:
            clients_by_rules.setdefault(rules, []).append(renderer.node_entries[client])
        destination = [renderer.resource_entries[resource_position]]
        policies.extend(
            (sources, destination, rules) for rules, sources in clients_by_rules.items()
        )
    return _ViewParts(node_positions, resource_positions, policies)


def _targets_by_rules(
    renderer: ViewRenderer,
    grants: _Grants,
    peers_by_rules: dict[RuleSet, list[int]],
    reachable: dict[int, list[int]],
) -> dict[RuleSet, list[str]]:
    """Group the node and resource entries this node may reach by rule set.

    The order is that of a walk over the peers by position, taking each peer's node entry and
    then the resources it is gateway for, as `policy._view_policies` walks the compiled peers.
    """
    # Sort keys: (peer position, 0, 0) for a node, (gateway position, 1, resource position).
    resource_keys: dict[RuleSet, list[tuple[int, int, int]]] = {}
    for gateway, resource_positions in reachable.items():
        for resource_position in resource_positions:
            rules = _rule_set(grants.reach[resource_position])
            resource_keys.setdefault(rules, []).append((gateway, 1, resource_position))
    node_entries = renderer.node_entries
    resource_entries = renderer.resource_entries
    found: list[tuple[tuple[int, int, int], RuleSet, list[str]]] = []
    for rules, positions in peers_by_rules.items():
        keys = resource_keys.pop(rules, None)
        if keys is None:
            found.append(((positions[0], 0, 0), rules, [node_entries[item] for item in positions]))
            continue
        keys.extend((item, 0, 0) for item in positions)
        keys.sort()
        found.append((keys[0], rules, _entries(keys, node_entries, resource_entries)))
    for rules, keys in resource_keys.items():
        keys.sort()
        found.append((keys[0], rules, _entries(keys, node_entries, resource_entries)))
    found.sort(key=lambda item: item[0])
    return {rules: entries for _key, rules, entries in found}


def _entries(
    keys: list[tuple[int, int, int]], node_entries: list[str], resource_entries: list[str]
) -> list[str]:
    return [
        node_entries[position] if kind == 0 else resource_entries[resource]
        for position, kind, resource in keys
    ]


def _positions_by_rules(masks: dict[tuple[Rule, ...], int]) -> dict[RuleSet, list[int]]:
    """Return the peer positions of each rule set, ascending, like `policy._rules_by_position`
    grouped by its values, splitting bitmasks instead of visiting each peer where that is cheap.
    """
    parts: list[tuple[list[tuple[Rule, ...]], int]] = []
    union = 0
    for mask in masks.values():
        union |= mask
    if union:
        parts.append(([], union))
    for key, mask in masks.items():
        split: list[tuple[list[tuple[Rule, ...]], int]] = []
        for keys, part in parts:
            inside = part & mask
            if inside:
                split.append(([*keys, key], inside))
            outside = part & ~mask
            if outside:
                split.append((keys, outside))
        parts = split
        if len(parts) > _MAX_PARTS:
            return _positions_by_rules_per_peer(masks)
    grouped: dict[RuleSet, list[int]] = {}
    for keys, part in parts:
        grouped.setdefault(_rule_set(keys), []).extend(positions_of(part))
    for positions in grouped.values():
        positions.sort()
    return grouped


def _positions_by_rules_per_peer(masks: dict[tuple[Rule, ...], int]) -> dict[RuleSet, list[int]]:
    grouped: dict[RuleSet, list[int]] = {}
    by_position = _rules_by_position(masks)
    for position in sorted(by_position):
        grouped.setdefault(by_position[position], []).append(position)
    return grouped


def _duties(
    document: NetworkDocument, grants: _Grants
) -> tuple[list[tuple[int, list[tuple[int, RuleSet]]]], set[int]]:
    """Return the resources this node serves with their (client, rules), sorted like
    `CompiledNetwork.gateway_duties` then `domain_gateway_duties`, and the set of clients."""
    # Unique destinations give one duty per resource, so the compiled form's dicts keyed by
    # network and by domain hold every resource, ordered by position within each kind.
    network_duties: list[tuple[int, list[tuple[int, RuleSet]]]] = []
    domain_duties: list[tuple[int, list[tuple[int, RuleSet]]]] = []
    clients_of: set[int] = set()
    for resource_position in sorted(grants.duties):
        by_client = _rules_by_position(grants.duties[resource_position])
        clients = [(client, by_client[client]) for client in sorted(by_client)]
        clients_of.update(by_client)
        if document.resources[resource_position].network is None:
            domain_duties.append((resource_position, clients))
        else:
            network_duties.append((resource_position, clients))
    return network_duties + domain_duties, clients_of


def _quoted_entries(texts: list[str]) -> list[str]:
    """Return each text as tomli_w writes it as an item of a multi-line array, indented.

    One dumps call for all of them: tomli_w writes `k = [`, one item per line followed by a
    comma, then `]`, and escapes every line break inside a string.
    """
    if not texts:
        return []
    lines = tomli_w.dumps({"k": texts}).split("\n")
    return [line[:-1] for line in lines[1:-2]]


def _table_fragment(array: str, entry: dict[str, object]) -> str:
    """Return the entry as tomli_w writes it in a table array of several entries, preceded by
    the blank line that separates tables, or `_INLINE` when tomli_w would write it inline."""
    text = tomli_w.dumps({array: [entry]})
    if not text.startswith(f"[[{array}]]\n"):
        return _INLINE
    return "\n" + text


def _rules_fragment(rules: RuleSet) -> str:
    """Return the lines that the rules of a view policy add after its two entry lists."""
    document_rules = rules.as_rules()
    if not document_rules:
        return ""
    text = tomli_w.dumps({"policy": [{"rules": [_rule_to_dict(rule) for rule in document_rules]}]})
    return text.removeprefix("[[policy]]\n")


_renderers: dict[int, tuple[weakref.ref[NetworkDocument], ViewRenderer]] = {}


def renderer_for(document: NetworkDocument) -> ViewRenderer:
    """Return the renderer of `document`, made on first use and kept while the document object
    lives (keyed by identity, like the policy lookups)."""
    key = id(document)
    entry = _renderers.get(key)
    if entry is not None and entry[0]() is document:
        return entry[1]
    renderer = ViewRenderer(document)
    # NOTE: no lock, for the reasons given in `_policy_index.index_for`.
    renderers = _renderers

    def forget(_ref: weakref.ref[NetworkDocument]) -> None:
        renderers.pop(key, None)

    _renderers[key] = (weakref.ref(document, forget), renderer)
    return renderer
