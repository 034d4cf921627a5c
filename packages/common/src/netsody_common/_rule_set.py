"""Compiled traffic rules: `RuleSet` (protocol and port matching) and `PrefixTable` (resources)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Protocol

from netsody_common.document import PortRange, Rule

PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}
# Port lists up to this many ports become a frozenset, so a packet costs one hash lookup.
# Larger ones stay a tuple of ranges, because a set of all 65535 ports would take megabytes.
MAX_PORT_SET_SIZE = 4096

PortMatch = frozenset[int] | tuple[tuple[int, int], ...] | None
_NO_MATCH: tuple[tuple[int, int], ...] = ((1, 0),)


@dataclass(frozen=True)
class RuleSet:
    """The union of the rules of one or more policies, ready for per-packet matching.

    `allow_all` permits every packet. Otherwise `protocols` lists (IP protocol number, merged
    inclusive port ranges, or None for every port), sorted by protocol number.
    """

    allow_all: bool
    protocols: tuple[tuple[int, tuple[tuple[int, int], ...] | None], ...] = ()
    _lookup: dict[int, PortMatch] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    def __post_init__(self) -> None:
        for number, ranges in self.protocols:
            self._lookup[number] = _port_match(ranges)

    @classmethod
    def union(cls, rule_lists: Iterable[tuple[Rule, ...]]) -> RuleSet:
        """Merge rule lists; an empty list (a policy without rules) permits all traffic."""
        ranges: dict[int, list[tuple[int, int]] | None] = {}
        for rules in rule_lists:
            if not rules:
                return ANY_TRAFFIC
            for rule in rules:
                number = PROTOCOL_NUMBERS[rule.protocol]
                if not rule.ports:
                    ranges[number] = None
                    continue
                known = ranges.setdefault(number, [])
                if known is not None:
                    known.extend((port.start, port.end) for port in rule.ports)
        protocols = tuple(
            (number, None if items is None else _merge(items))
            for number, items in sorted(ranges.items())
        )
        return cls(allow_all=False, protocols=protocols)

    def allows(self, protocol: int, port: int | None) -> bool:
        """Return whether a packet of IP protocol number `protocol` to `port` matches."""
        if self.allow_all:
            return True
        ports = self._lookup.get(protocol, _NO_MATCH)
        if ports is None:
            return True
        if isinstance(ports, frozenset):
            return port in ports
        if port is None:
            return False
        return any(low <= port <= high for low, high in ports)

    def as_rules(self) -> tuple[Rule, ...]:
        """Return document rules equivalent to this set (empty: all traffic)."""
        if self.allow_all:
            return ()
        rules = []
        for number, ranges in self.protocols:
            ports = () if ranges is None else tuple(PortRange(low, high) for low, high in ranges)
            rules.append(Rule(protocol=PROTOCOL_NAMES[number], ports=ports))
        return tuple(rules)


ANY_TRAFFIC = RuleSet(allow_all=True)


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def _port_match(ranges: tuple[tuple[int, int], ...] | None) -> PortMatch:
    if ranges is None:
        return None
    if sum(high - low + 1 for low, high in ranges) <= MAX_PORT_SET_SIZE:
        return frozenset(port for low, high in ranges for port in range(low, high + 1))
    return ranges


class _Access(Protocol):
    @property
    def network(self) -> IPv4Network | None: ...

    @property
    def rules(self) -> RuleSet: ...


class PrefixTable:
    """Resource networks with their rules, matched by destination address.

    One dict per prefix length, longest first. A packet passes when any network that contains
    its address permits it, so overlapping resources add up instead of shadowing each other.
    """

    __slots__ = ("_levels",)

    def __init__(self, levels: tuple[tuple[int, dict[int, tuple[RuleSet, ...]]], ...]) -> None:
        self._levels = levels

    @classmethod
    def build(cls, items: Sequence[_Access]) -> PrefixTable:
        """Index the IPv4 networks of `items`; domain resources (no network) are skipped."""
        if not items:
            return EMPTY_PREFIX_TABLE
        by_length: dict[int, dict[int, list[RuleSet]]] = {}
        for item in items:
            network = item.network
            if network is None:
                continue
            table = by_length.setdefault(network.prefixlen, {})
            table.setdefault(int(network.network_address), []).append(item.rules)
        levels = tuple(
            (
                (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF,
                {address: tuple(rules) for address, rules in table.items()},
            )
            for length, table in sorted(by_length.items(), reverse=True)
        )
        return cls(levels)

    def allows(self, address: int, protocol: int, port: int | None) -> bool:
        """Return whether some network containing `address` permits the packet."""
        for mask, table in self._levels:
            rule_sets = table.get(address & mask)
            if rule_sets is not None:
                for rules in rule_sets:
                    if rules.allows(protocol, port):
                        return True
        return False

    def contains(self, address: int) -> bool:
        """Return whether some network of the table contains `address`."""
        return any(address & mask in table for mask, table in self._levels)


EMPTY_PREFIX_TABLE = PrefixTable(())
