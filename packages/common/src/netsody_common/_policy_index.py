"""Precomputed lookups over one network document, shared by every compile of that document.

Node sets are Python integers used as bitmasks (bit i is `document.nodes[i]`), so expanding a
policy over groups costs a few big-integer ORs instead of a loop over nodes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import weakref
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from netsody_common.document import (
    ALL_GROUP,
    NODE_PREFIX,
    RESOURCE_PREFIX,
    Conditions,
    NetworkDocument,
    Node,
    Rule,
)

_VERSION_PREFIX = re.compile(r"[0-9]+(?:\.[0-9]+)*")


@dataclass
class ExpandedPolicy:
    """A policy with its entries resolved to node bitmasks and resource positions."""

    source_mask: int
    destination_mask: int
    destination_resources: tuple[int, ...]
    rules: tuple[Rule, ...]
    conditions: Conditions


@dataclass
class DocumentIndex:
    """Lookups built once per document: node positions, group bitmasks, expanded policies."""

    document: NetworkDocument
    position_by_pk: dict[str, int]
    position_by_hostname: dict[str, int]
    policies: list[ExpandedPolicy]
    gateway_resources: dict[str, tuple[int, ...]]
    _condition_masks: dict[Conditions, int] = field(default_factory=dict)

    def condition_mask(self, conditions: Conditions) -> int:
        """Return the bitmask of nodes that satisfy `conditions`, computed once per value."""
        mask = self._condition_masks.get(conditions)
        if mask is None and conditions.is_empty():
            mask = (1 << len(self.document.nodes)) - 1
            self._condition_masks[conditions] = mask
        if mask is None:
            mask = 0
            for position, node in enumerate(self.document.nodes):
                if conditions_hold(conditions, node):
                    mask |= 1 << position
            self._condition_masks[conditions] = mask
        return mask


_cache: dict[int, tuple[weakref.ref[NetworkDocument], DocumentIndex]] = {}


def index_for(document: NetworkDocument) -> DocumentIndex:
    """Return the index of `document`, building it on first use and keeping it while the
    document object lives (keyed by identity, because hashing a large document costs more)."""
    key = id(document)
    entry = _cache.get(key)
    if entry is not None and entry[0]() is document:
        return entry[1]
    index = build_index(document)

    # NOTE: no lock here. The callback runs while the garbage collector frees the document,
    # possibly inside another cache access on the same thread, so a lock could deadlock. Single
    # dict operations are atomic in CPython, and a stale entry fails the identity check above.
    cache = _cache  # bound here because module globals may already be gone at interpreter exit

    def forget(_ref: weakref.ref[NetworkDocument]) -> None:
        cache.pop(key, None)

    _cache[key] = (weakref.ref(document, forget), index)
    return index


def build_index(document: NetworkDocument) -> DocumentIndex:
    """Build the lookups of `document` in time linear in its size."""
    nodes = document.nodes
    position_by_pk = {node.pk: position for position, node in enumerate(nodes)}
    position_by_hostname = {node.hostname.lower(): position for position, node in enumerate(nodes)}
    group_members: dict[str, list[int]] = {}
    for position, node in enumerate(nodes):
        for group in node.groups:
            group_members.setdefault(group, []).append(position)
    group_masks = {group: _mask_of(members) for group, members in group_members.items()}
    group_masks[ALL_GROUP] = (1 << len(nodes)) - 1

    resource_by_dest = {
        resource.dest: position for position, resource in enumerate(document.resources)
    }
    group_resources: dict[str, list[int]] = {}
    gateway_resources: dict[str, list[int]] = {}
    for position, resource in enumerate(document.resources):
        for group in dict.fromkeys(resource.groups):
            group_resources.setdefault(group, []).append(position)
        gateway_resources.setdefault(resource.gw, []).append(position)

    policies = []
    for policy in document.policies:
        source_mask, _ = _expand(
            policy.source_groups,
            group_masks,
            group_resources,
            position_by_hostname,
            resource_by_dest,
        )
        destination_mask, resources = _expand(
            policy.destination_groups,
            group_masks,
            group_resources,
            position_by_hostname,
            resource_by_dest,
        )
        policies.append(
            ExpandedPolicy(
                source_mask, destination_mask, resources, policy.rules, policy.conditions
            )
        )
    return DocumentIndex(
        # A shallow copy, so that the cache entry does not keep the caller's object alive.
        document=dataclasses.replace(document),
        position_by_pk=position_by_pk,
        position_by_hostname=position_by_hostname,
        policies=policies,
        gateway_resources={pk: tuple(items) for pk, items in gateway_resources.items()},
    )


def _mask_of(positions: list[int]) -> int:
    if not positions:
        return 0
    bits = bytearray((max(positions) >> 3) + 1)
    for position in positions:
        bits[position >> 3] |= 1 << (position & 7)
    return int.from_bytes(bits, "little")


def _expand(
    entries: tuple[str, ...],
    group_masks: dict[str, int],
    group_resources: dict[str, list[int]],
    position_by_hostname: dict[str, int],
    resource_by_dest: dict[str, int],
) -> tuple[int, tuple[int, ...]]:
    # A group expands to its nodes and, as a destination, to the resources tagged with it.
    # Resources are never members of ALL unless tagged ALL explicitly. The caller ignores the
    # resources of a source list, and the parser rejects resource:: entries among sources.
    mask = 0
    resources: dict[int, None] = {}
    for entry in entries:
        if entry.startswith(NODE_PREFIX):
            position = position_by_hostname.get(entry[len(NODE_PREFIX) :].lower())
            if position is not None:
                mask |= 1 << position
        elif entry.startswith(RESOURCE_PREFIX):
            resource = resource_by_dest.get(entry[len(RESOURCE_PREFIX) :])
            if resource is not None:
                resources[resource] = None
        else:
            mask |= group_masks.get(entry, 0)
            for resource in group_resources.get(entry, ()):
                resources[resource] = None
    return mask, tuple(resources)


# Maps the digits of a binary string to the bytes 0 and 1, for `itertools.compress`.
_BIT_BYTES = bytes.maketrans(b"01", b"\x00\x01")


def positions_of(mask: int) -> list[int]:
    """Return the set bits of `mask` in ascending order."""
    text = bin(mask)[:1:-1]
    if mask.bit_count() * 16 > len(text):
        # Dense masks: one pass in C over the digits instead of a search per set bit.
        flags = text.encode().translate(_BIT_BYTES)
        return list(itertools.compress(range(len(flags)), flags))
    result = []
    position = text.find("1")
    while position >= 0:
        result.append(position)
        position = text.find("1", position + 1)
    return result


def conditions_hold(conditions: Conditions, node: Node) -> bool:
    """Return whether `node`, as the initiating node, satisfies every one of `conditions`.

    A condition on a node attribute the document does not give (no `addresses`, `os` or
    `agent_version`) fails, so a policy with conditions never applies to unknown nodes.
    """
    # The cheapest checks come first, because a compile evaluates each condition for every node.
    if conditions.os_types and (
        node.os is None or node.os.casefold() not in _casefolded(conditions.os_types)
    ):
        return False
    if conditions.agent_versions and node.agent_version not in conditions.agent_versions:
        return False
    if conditions.min_agent_version is not None and not _version_at_least(
        node.agent_version, conditions.min_agent_version
    ):
        return False
    if conditions.source_networks_in and not any(
        _address_in(address, conditions) for address in node.addresses
    ):
        return False
    return not conditions.source_networks_out or bool(
        node.addresses
        and not any(_address_in(address, conditions, outside=True) for address in node.addresses)
    )


@functools.lru_cache(maxsize=256)
def _casefolded(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(name.casefold() for name in names)


def _address_in(
    address: IPv4Address | IPv6Address, conditions: Conditions, *, outside: bool = False
) -> bool:
    networks = conditions.source_networks_out if outside else conditions.source_networks_in
    return any(address.version == net.version and address in net for net in networks)


@functools.lru_cache(maxsize=1024)
def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """Return the leading numeric release of a version ("1.2.0rc1" gives (1, 2, 0)), or None."""
    if text is None:
        return None
    match = _VERSION_PREFIX.match(text.strip().removeprefix("v"))
    if match is None:
        return None
    parts = [int(part) for part in match.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _version_at_least(version: str | None, minimum: str) -> bool:
    actual = version_tuple(version)
    required = version_tuple(minimum)
    return actual is not None and required is not None and actual >= required
