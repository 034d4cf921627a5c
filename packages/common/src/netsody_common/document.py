"""The network document: the TOML description of one overlay network, parsed and validated.

A document looks like this. The required keys are `network`, a node's `hostname`, `ip` and
`pk`, a resource's `dest` and `gw`, a policy's `source_groups` and `destination_groups`, and a
rule's `protocol`. Every other key is optional::

    name = "office"
    network = "10.1.0.0/24"

    [[node]]
    hostname = "laptop"
    ip = "10.1.0.10"
    pk = "<64 lowercase hex characters: the node's Ed25519 public key>"
    groups = ["staff"]
    # added by the controller so that policy conditions can be evaluated:
    os = "linux"
    agent_version = "0.1.0"
    addresses = ["192.168.1.20"]

    [[resource]]
    dest = "10.2.0.0/16"       # IPv4 address, IPv4 subnet, domain or *.wildcard.domain
    gw = "<pk of the gateway node>"
    groups = ["staff"]
    name = "lab"

    [[policy]]
    source_groups = ["staff", "node::laptop"]
    destination_groups = ["servers", "resource::10.2.0.0/16"]
    name = "staff to lab"
    [[policy.rules]]
    protocol = "tcp"           # "tcp", "udp" or "icmp"
    ports = [22, "8000-8080"]  # omitted: every port (icmp rules take no ports)
    [policy.conditions]
    source_networks_in = ["192.168.0.0/16"]
    source_networks_out = ["192.168.99.0/24"]
    min_agent_version = "0.1.0"
    agent_versions = ["0.1.0", "0.2.0"]
    os_types = ["linux", "macos"]

Policy sources and destinations name groups, single nodes as `node::<hostname>` (matched
case-insensitively), and, as destinations only, resources as `resource::<dest>`. Legacy
`[[route]]` entries (`dest` an IPv4 address or subnet, `gw`, optional `groups`) are read as
resources and rendered back as `[[resource]]`.

Every problem raises one `DocumentError`. Its message has one line per problem in the form
`<path>: <value> <what is wrong>`, where the path counts array entries from 0 in file order, for
example `node[3].ip: 10.1.0.300 is not an IPv4 address`.
"""

from __future__ import annotations

import functools
import logging
import tomllib
from dataclasses import dataclass
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    NetmaskValueError,
)
from typing import Any

import tomli_w

from netsody_common.errors import NetsodyError

logger = logging.getLogger(__name__)

ALL_GROUP = "ALL"
NODE_PREFIX = "node::"
RESOURCE_PREFIX = "resource::"
PROTOCOLS = ("tcp", "udp", "icmp")

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class DocumentError(NetsodyError):
    """A network document is not valid TOML or breaks a rule; `problems` lists every finding."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of TCP or UDP ports; a single port has `start == end`."""

    start: int
    end: int

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"


@dataclass(frozen=True)
class Rule:
    """Traffic a policy permits: one protocol, and its ports (empty: every port)."""

    protocol: str
    ports: tuple[PortRange, ...] = ()


@dataclass(frozen=True)
class Conditions:
    """Requirements on the node that initiates traffic; an empty field imposes nothing.

    A condition whose node attribute is missing (no `os`, `agent_version` or `addresses`) fails.
    """

    source_networks_in: tuple[IPNetwork, ...] = ()
    source_networks_out: tuple[IPNetwork, ...] = ()
    min_agent_version: str | None = None
    agent_versions: tuple[str, ...] = ()
    os_types: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """Return whether no condition is set, so every node passes."""
        return self == _NO_CONDITIONS


_NO_CONDITIONS = Conditions()


@dataclass(frozen=True)
class Node:
    """A member of the network: overlay address, identity and groups, plus controller facts."""

    hostname: str
    ip: IPv4Address
    pk: str
    groups: tuple[str, ...] = ()
    os: str | None = None
    agent_version: str | None = None
    addresses: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class Resource:
    """A destination outside the overlay reached through a gateway node.

    `dest` is canonical: an IPv4 address, an IPv4 subnet in CIDR form, a lowercase domain, or a
    lowercase wildcard domain `*.example.internal`.
    """

    dest: str
    gw: str
    groups: tuple[str, ...] = ()
    name: str | None = None

    @property
    def network(self) -> IPv4Network | None:
        """The destination as an IPv4 network (a /32 for an address), or None for a domain."""
        return resource_network(self.dest)

    @property
    def is_domain(self) -> bool:
        """Whether the destination is a domain or wildcard domain."""
        return self.network is None


@dataclass(frozen=True)
class Policy:
    """Permission for sources to reach destinations, restricted by rules and conditions.

    Entries are group names, `node::<hostname>`, and (destinations only) `resource::<dest>`.
    Empty `rules` permit all traffic; empty `conditions` impose nothing.
    """

    source_groups: tuple[str, ...]
    destination_groups: tuple[str, ...]
    rules: tuple[Rule, ...] = ()
    conditions: Conditions = _NO_CONDITIONS
    name: str | None = None


@dataclass(frozen=True)
class NetworkDocument:
    """A whole network: its name, overlay subnet, nodes, policies and resources."""

    name: str
    network: IPv4Network
    nodes: tuple[Node, ...] = ()
    policies: tuple[Policy, ...] = ()
    resources: tuple[Resource, ...] = ()


def parse_document(text: str) -> NetworkDocument:
    """Parse and validate a network document.

    Raises `DocumentError` (and nothing else, whatever `text` holds) listing every problem.
    """
    if not isinstance(text, str):
        raise DocumentError([f"document: expected TOML text (str), got {type(text).__name__}"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise DocumentError([f"document: invalid TOML: {error}"]) from error
    except RecursionError as error:
        raise DocumentError(["document: invalid TOML: nested too deeply"]) from error
    return document_from_dict(data)


def document_from_dict(data: dict[str, Any]) -> NetworkDocument:
    """Validate decoded TOML data (as `tomllib` returns it) and build the document.

    Raises `DocumentError` listing every problem.
    """
    # NOTE: imported here because the parser module builds the dataclasses defined above.
    from netsody_common._document_parser import build_document

    return build_document(data)


@functools.lru_cache(maxsize=4096)
def resource_network(dest: str) -> IPv4Network | None:
    """Return a canonical resource destination as an IPv4 network, or None for a domain."""
    try:
        return IPv4Network(dest)
    except (AddressValueError, NetmaskValueError, ValueError):
        return None


def render_document(document: NetworkDocument) -> str:
    """Render a document as TOML, with keys in a fixed order, so that parsing it returns an equal
    document and rendering that again returns the same text."""
    data: dict[str, Any] = {}
    if document.name:
        data["name"] = document.name
    data["network"] = str(document.network)
    if document.nodes:
        data["node"] = [_node_to_dict(node) for node in document.nodes]
    if document.resources:
        data["resource"] = [_resource_to_dict(resource) for resource in document.resources]
    if document.policies:
        data["policy"] = [_policy_to_dict(policy) for policy in document.policies]
    return tomli_w.dumps(data)


def _node_to_dict(node: Node) -> dict[str, Any]:
    entry: dict[str, Any] = {"hostname": node.hostname, "ip": str(node.ip), "pk": node.pk}
    entry["groups"] = list(node.groups)
    if node.os is not None:
        entry["os"] = node.os
    if node.agent_version is not None:
        entry["agent_version"] = node.agent_version
    if node.addresses:
        entry["addresses"] = [str(address) for address in node.addresses]
    return entry


def _resource_to_dict(resource: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {"dest": resource.dest, "gw": resource.gw}
    entry["groups"] = list(resource.groups)
    if resource.name is not None:
        entry["name"] = resource.name
    return entry


def _policy_to_dict(policy: Policy) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if policy.name is not None:
        entry["name"] = policy.name
    entry["source_groups"] = list(policy.source_groups)
    entry["destination_groups"] = list(policy.destination_groups)
    if policy.rules:
        entry["rules"] = [_rule_to_dict(rule) for rule in policy.rules]
    if not policy.conditions.is_empty():
        entry["conditions"] = _conditions_to_dict(policy.conditions)
    return entry


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    entry: dict[str, Any] = {"protocol": rule.protocol}
    if rule.ports:
        entry["ports"] = [
            port.start if port.start == port.end else str(port) for port in rule.ports
        ]
    return entry


def _conditions_to_dict(conditions: Conditions) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if conditions.source_networks_in:
        entry["source_networks_in"] = [str(net) for net in conditions.source_networks_in]
    if conditions.source_networks_out:
        entry["source_networks_out"] = [str(net) for net in conditions.source_networks_out]
    if conditions.min_agent_version is not None:
        entry["min_agent_version"] = conditions.min_agent_version
    if conditions.agent_versions:
        entry["agent_versions"] = list(conditions.agent_versions)
    if conditions.os_types:
        entry["os_types"] = list(conditions.os_types)
    return entry
