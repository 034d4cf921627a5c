"""Domain resources: name matching, and the IPv4 addresses learned for them at runtime.

A domain resource is an exact domain (`db.example.internal`) or a leading-wildcard domain
(`*.example.internal`). Names match case-insensitively and without a trailing dot. A wildcard
matches every name below its suffix at any depth (`a.example.internal`,
`a.b.example.internal`) but not the suffix itself (`example.internal`). An exact domain wins
over a wildcard, and a longer wildcard suffix wins over a shorter one.

Resolved addresses are learned with a TTL clamped to [`MIN_TTL_SECONDS`, `MAX_TTL_SECONDS`],
and each resource keeps at most `MAX_ADDRESSES_PER_RESOURCE` distinct addresses. SECURITY: the
bounds keep a hostile or broken DNS answer from flooding the route table, the firewall or
memory, and from pinning an address for long. Time is passed in by the caller (monotonic
seconds), so this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 3600
MAX_ADDRESSES_PER_RESOURCE = 64
# A gateway keeps what it learned a little longer than the TTL it returned, so a client that
# learned the same answer a round trip later never sends to an address the gateway forgot.
GATEWAY_GRACE_SECONDS = 30

WILDCARD_PREFIX = "*."


_THIS_NETWORK = IPv4Network("0.0.0.0/8")


def unusable_reason(
    address: IPv4Address,
    *,
    overlays: Iterable[IPv4Network],
    foreign_routes: Iterable[IPv4Network],
    protected: Container[IPv4Address] = (),
) -> str | None:
    """Return why a resolved address must not be learned for a domain resource, or None.

    SECURITY: the gateway and its upstream DNS choose the answer freely. A learned address gets
    a route into the overlay and is accepted as a source of the gateway's packets, so an answer
    naming a node's overlay address, another gateway's resource, or loopback, broadcast and the
    like would let it spoof that node or resource, or cut the host off from its own addresses.
    `protected` contains the addresses the agent reaches through the underlay (super peers, the
    controller, peer endpoints, its own addresses), which must never be routed to a gateway.
    """
    if (
        address.is_loopback
        or address.is_multicast
        or address.is_unspecified
        or address.is_link_local
        or address.is_reserved
        or address in _THIS_NETWORK
    ):
        return "not a unicast address"
    for network in overlays:
        if address in network:
            return f"inside the overlay network {network}"
    for network in foreign_routes:
        if address in network:
            return f"inside {network}, a resource of another gateway"
    if address in protected:
        return "the agent reaches it through the underlay"
    return None


def normalize_name(name: str) -> str:
    """Return `name` lowercase and without a trailing dot."""
    return name.rstrip(".").lower()


def clamp_ttl(ttl: int) -> int:
    """Return `ttl` (seconds) bounded by `MIN_TTL_SECONDS` and `MAX_TTL_SECONDS`."""
    return max(MIN_TTL_SECONDS, min(MAX_TTL_SECONDS, ttl))


class DomainMatcher:
    """Finds the domain resource a name belongs to with one dict lookup per label.

    Built from canonical resource destinations (lowercase, `*.` prefix for wildcards); values
    are whatever the caller attaches to each destination.
    """

    __slots__ = ("_exact", "_wildcards")

    def __init__(self, items: Mapping[str, str]) -> None:
        self._exact: dict[str, str] = {}
        self._wildcards: dict[str, str] = {}
        for dest, value in items.items():
            if dest.startswith(WILDCARD_PREFIX):
                self._wildcards[dest[len(WILDCARD_PREFIX) :]] = value
            else:
                self._exact[dest] = value

    def __bool__(self) -> bool:
        return bool(self._exact or self._wildcards)

    def match(self, name: str) -> tuple[str, str] | None:
        """Return (resource destination, attached value) for `name`, or None when none matches."""
        name = normalize_name(name)
        value = self._exact.get(name)
        if value is not None:
            return name, value
        if not self._wildcards:
            return None
        # Strip one leading label at a time, so the longest wildcard suffix is found first and
        # the name itself is never taken as a wildcard suffix.
        rest = name
        while "." in rest:
            rest = rest.split(".", 1)[1]
            value = self._wildcards.get(rest)
            if value is not None:
                return WILDCARD_PREFIX + rest, value
        return None


@dataclass(frozen=True)
class LearnedAddress:
    """One learned address: the resource, the peer it applies to and when it expires.

    The peer is the resource's gateway on a client, and the permitted client on a gateway.
    """

    dest: str
    peer_pk: str
    address: IPv4Address
    expires: float


class LearnedAddresses:
    """The addresses learned for the domain resources of one compiled network.

    `routes` (address to gateway pk) and `reachable` ((gateway pk, address) to resources) are
    the client side; `served` ((client pk, address) to resources) the gateway side. All keys
    use addresses as 32-bit integers, so per-packet lookups are single dict lookups. The
    lookups are rebuilt whenever an entry is added or expires.
    """

    def __init__(self) -> None:
        self._reach: dict[tuple[str, int], tuple[str, float]] = {}
        self._serve: dict[tuple[str, str, int], float] = {}
        self.routes: dict[int, str] = {}
        self.reachable: dict[tuple[str, int], frozenset[str]] = {}
        self.served: dict[tuple[str, int], frozenset[str]] = {}

    def __bool__(self) -> bool:
        return bool(self._reach or self._serve)

    def learn_reachable(
        self, dest: str, gateway_pk: str, addresses: Iterable[IPv4Address], *, ttl: int, now: float
    ) -> list[IPv4Address]:
        """Learn `addresses` of `dest` reached through `gateway_pk`; return the accepted ones.

        An address already routed through another gateway, or beyond the per-resource cap, is
        not accepted. A known address gets the later of its old and new expiry.
        """
        expires = now + clamp_ttl(ttl)
        counts = self._reach_counts()
        accepted = []
        for address in addresses:
            key = (dest, int(address))
            known = self._reach.get(key)
            owner = self.routes.get(int(address))
            if owner is not None and owner != gateway_pk:
                continue
            if known is None and counts.get(dest, 0) >= MAX_ADDRESSES_PER_RESOURCE:
                continue
            if known is None:
                counts[dest] = counts.get(dest, 0) + 1
            self._reach[key] = (gateway_pk, max(expires, known[1] if known else expires))
            self.routes[int(address)] = gateway_pk
            accepted.append(address)
        self._rebuild()
        return accepted

    def learn_served(
        self, dest: str, client_pk: str, addresses: Iterable[IPv4Address], *, ttl: int, now: float
    ) -> list[IPv4Address]:
        """Learn `addresses` of `dest` that this gateway forwards for `client_pk`.

        Return the accepted ones. The cap counts distinct addresses of `dest` over all clients.
        """
        expires = now + clamp_ttl(ttl) + GATEWAY_GRACE_SECONDS
        known_addresses = {(d, a) for d, _, a in self._serve}
        counts: dict[str, int] = {}
        for known_dest, _ in known_addresses:
            counts[known_dest] = counts.get(known_dest, 0) + 1
        accepted = []
        for address in addresses:
            key = (dest, client_pk, int(address))
            new_address = (dest, int(address)) not in known_addresses
            if new_address and counts.get(dest, 0) >= MAX_ADDRESSES_PER_RESOURCE:
                continue
            if new_address:
                counts[dest] = counts.get(dest, 0) + 1
                known_addresses.add((dest, int(address)))
            self._serve[key] = max(expires, self._serve.get(key, expires))
            accepted.append(address)
        self._rebuild()
        return accepted

    def expire(self, now: float) -> bool:
        """Forget entries whose expiry has passed; return whether any was removed."""
        reach = {key: value for key, value in self._reach.items() if value[1] > now}
        serve = {key: expires for key, expires in self._serve.items() if expires > now}
        changed = len(reach) != len(self._reach) or len(serve) != len(self._serve)
        if changed:
            self._reach, self._serve = reach, serve
            self._rebuild()
        return changed

    def retain(self, reachable: Mapping[str, str], served: Mapping[str, frozenset[str]]) -> None:
        """Keep only entries a policy still permits.

        `reachable` maps each reachable domain resource to its gateway pk, `served` each served
        domain resource to the pks of its permitted clients.
        """
        self._reach = {
            key: value for key, value in self._reach.items() if reachable.get(key[0]) == value[0]
        }
        self._serve = {
            key: expires
            for key, expires in self._serve.items()
            if key[1] in served.get(key[0], frozenset())
        }
        self._rebuild()

    def copy_from(self, other: LearnedAddresses) -> None:
        """Take over the entries of `other` (before `retain` filters them for a new policy)."""
        self._reach = dict(other._reach)
        self._serve = dict(other._serve)
        self._rebuild()

    def entries(self) -> list[LearnedAddress]:
        """Return every entry, sorted by resource, peer and address (for status output)."""
        items = [
            LearnedAddress(dest, gateway, IPv4Address(address), expires)
            for (dest, address), (gateway, expires) in self._reach.items()
        ]
        items += [
            LearnedAddress(dest, client, IPv4Address(address), expires)
            for (dest, client, address), expires in self._serve.items()
        ]
        return sorted(items, key=lambda item: (item.dest, item.peer_pk, item.address))

    def reachable_addresses(self) -> set[IPv4Address]:
        """Return the addresses this node routes to a gateway."""
        return {IPv4Address(address) for address in self.routes}

    def served_pairs(self) -> set[tuple[str, IPv4Address]]:
        """Return (client pk, address) for every address this gateway forwards to."""
        return {(client, IPv4Address(address)) for client, address in self.served}

    def _reach_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for dest, _ in self._reach:
            counts[dest] = counts.get(dest, 0) + 1
        return counts

    def _rebuild(self) -> None:
        routes: dict[int, str] = {}
        reachable: dict[tuple[str, int], set[str]] = {}
        for (dest, address), (gateway, _) in self._reach.items():
            routes.setdefault(address, gateway)
            reachable.setdefault((gateway, address), set()).add(dest)
        served: dict[tuple[str, int], set[str]] = {}
        for dest, client, address in self._serve:
            served.setdefault((client, address), set()).add(dest)
        self.routes = routes
        self.reachable = {key: frozenset(dests) for key, dests in reachable.items()}
        self.served = {key: frozenset(dests) for key, dests in served.items()}
