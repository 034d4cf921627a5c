"""Validation of decoded TOML data into a `NetworkDocument`, collecting every problem found."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from netsody_common import _document_values as values
from netsody_common._document_values import Problems, describe, show
from netsody_common.document import (
    NODE_PREFIX,
    PROTOCOLS,
    RESOURCE_PREFIX,
    Conditions,
    DocumentError,
    IPAddress,
    IPNetwork,
    NetworkDocument,
    Node,
    Policy,
    PortRange,
    Resource,
    Rule,
)
from netsody_common.identity import is_valid_pk

TOP_KEYS = ("name", "network", "node", "policy", "resource", "route")
NODE_KEYS = ("hostname", "ip", "pk", "groups", "os", "agent_version", "addresses")
RESOURCE_KEYS = ("dest", "gw", "groups", "name")
ROUTE_KEYS = ("dest", "gw", "groups")
POLICY_KEYS = ("name", "source_groups", "destination_groups", "rules", "conditions")
RULE_KEYS = ("protocol", "ports")
CONDITION_KEYS = (
    "source_networks_in",
    "source_networks_out",
    "min_agent_version",
    "agent_versions",
    "os_types",
)
# A /30 leaves one address for a node once the network address, the broadcast address and the
# reserved last address before it are taken.
MAX_PREFIX_LENGTH = 30
MIN_PORT = 1
MAX_PORT = 65535
VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*\Z")
_PORT_RANGE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})\Z")


@dataclass
class _Seen:
    """Values already used by earlier entries, for the uniqueness checks and references."""

    hostnames: dict[str, str] = field(default_factory=dict)
    ips: dict[IPv4Address, str] = field(default_factory=dict)
    pks: dict[str, str] = field(default_factory=dict)
    dests: dict[str, str] = field(default_factory=dict)


def build_document(data: dict[str, Any]) -> NetworkDocument:
    """Validate decoded TOML data and build the document; raise `DocumentError` on any problem."""
    problems = Problems()
    values.check_keys(data, "", problems, known=TOP_KEYS)
    name = values.read_str(data, "name", "", problems)
    network = _read_network(data, problems)
    node_tables = values.read_table_list(data, "node", problems)
    resource_tables = values.read_table_list(data, "resource", problems)
    route_tables = values.read_table_list(data, "route", problems)
    policy_tables = values.read_table_list(data, "policy", problems)

    seen = _Seen()
    _collect_references(node_tables, seen)
    nodes = _read_nodes(node_tables, network, problems)
    resources = _read_resources(resource_tables, "resource", network, problems, seen)
    resources += _read_resources(route_tables, "route", network, problems, seen)
    policies = [
        _read_policy(table, f"policy[{index}]", problems, seen)
        for index, table in enumerate(policy_tables)
    ]

    if problems or network is None:
        raise DocumentError(problems.lines or ["network: required key is missing"])
    return NetworkDocument(
        name=name or "",
        network=network,
        nodes=tuple(node for node in nodes if node is not None),
        policies=tuple(policy for policy in policies if policy is not None),
        resources=tuple(resource for resource in resources if resource is not None),
    )


def _read_network(data: dict[str, Any], problems: Problems) -> IPv4Network | None:
    text = values.read_str(data, "network", "", problems, required=True)
    if text is None:
        return None
    network = values.read_strict_network(text, "network", problems)
    if network is not None and network.prefixlen > MAX_PREFIX_LENGTH:
        problems.add(
            "network",
            f"{text} is too small: use a prefix length of {MAX_PREFIX_LENGTH} or less",
        )
        return None
    return network


def _collect_references(node_tables: list[dict[str, Any]], seen: _Seen) -> None:
    # Hostnames and pks of every node table, valid or not, so that a policy or a resource that
    # refers to a node with another problem is not reported a second time.
    for index, table in enumerate(node_tables):
        hostname = table.get("hostname")
        pk = table.get("pk")
        if isinstance(hostname, str):
            seen.hostnames.setdefault(hostname.lower(), f"node[{index}]")
        if isinstance(pk, str):
            seen.pks.setdefault(pk.lower(), f"node[{index}]")


def _read_nodes(
    tables: list[dict[str, Any]], network: IPv4Network | None, problems: Problems
) -> list[Node | None]:
    unique = _Seen()
    nodes: list[Node | None] = []
    for index, table in enumerate(tables):
        path = f"node[{index}]"
        node = _read_node(table, path, network, problems)
        if node is not None and _is_unique_node(node, path, unique, problems):
            nodes.append(node)
        else:
            nodes.append(None)
    return nodes


def _is_unique_node(node: Node, path: str, unique: _Seen, problems: Problems) -> bool:
    before = len(problems.lines)
    first = unique.hostnames.setdefault(node.hostname.lower(), path)
    if first != path:
        problems.add(
            f"{path}.hostname",
            f"{node.hostname} is already used by {first} (hostnames ignore case)",
        )
    first = unique.ips.setdefault(node.ip, path)
    if first != path:
        problems.add(f"{path}.ip", f"{node.ip} is already used by {first}")
    first = unique.pks.setdefault(node.pk, path)
    if first != path:
        problems.add(f"{path}.pk", f"{node.pk} is already used by {first}")
    return len(problems.lines) == before


def _read_node(
    table: dict[str, Any], path: str, network: IPv4Network | None, problems: Problems
) -> Node | None:
    before = len(problems.lines)
    values.check_keys(table, path, problems, known=NODE_KEYS)
    hostname = _read_hostname(table, path, problems)
    ip = _read_node_ip(table, path, network, problems)
    pk = _read_pk(table, "pk", path, problems)
    groups = _read_groups(table, path, problems)
    os_name = _read_non_empty_str(table, "os", path, problems)
    agent_version = _read_non_empty_str(table, "agent_version", path, problems)
    addresses = _read_addresses(table, path, problems)
    if len(problems.lines) != before or hostname is None or ip is None or pk is None:
        return None
    return Node(
        hostname=hostname,
        ip=ip,
        pk=pk,
        groups=groups,
        os=os_name,
        agent_version=agent_version,
        addresses=addresses,
    )


def _read_hostname(table: dict[str, Any], path: str, problems: Problems) -> str | None:
    hostname = values.read_str(table, "hostname", path, problems, required=True)
    if hostname is not None and not values.DNS_LABEL.match(hostname):
        problems.add(
            f"{path}.hostname",
            f"{show(hostname)} is not a valid DNS label: use 1 to 63 letters, digits and "
            "hyphens, with a letter or digit first and last",
        )
        return None
    return hostname


def _read_node_ip(
    table: dict[str, Any], path: str, network: IPv4Network | None, problems: Problems
) -> IPv4Address | None:
    text = values.read_str(table, "ip", path, problems, required=True)
    if text is None:
        return None
    ip = values.parse_ipv4_address(text)
    ip_path = f"{path}.ip"
    if ip is None:
        problems.add(ip_path, f"{show(text)} is not an IPv4 address")
        return None
    if network is None:
        return ip
    if ip not in network:
        problems.add(ip_path, f"{ip} is outside the network {network}")
    elif ip == network.network_address:
        problems.add(ip_path, f"{ip} is the network address of {network}, which no node may use")
    elif ip == network.broadcast_address:
        problems.add(ip_path, f"{ip} is the broadcast address of {network}, which no node may use")
    elif ip == network.broadcast_address - 1:
        problems.add(
            ip_path,
            f"{ip} is reserved: the last address before the broadcast address of {network} "
            "is not available to nodes",
        )
    else:
        return ip
    return None


def _read_pk(table: dict[str, Any], key: str, path: str, problems: Problems) -> str | None:
    text = values.read_str(table, key, path, problems, required=True)
    if text is None:
        return None
    if not is_valid_pk(text.lower()):
        problems.add(
            f"{path}.{key}",
            f"{show(text)} is not a public key: expected 64 hex characters",
        )
        return None
    return text.lower()


def _read_groups(table: dict[str, Any], path: str, problems: Problems) -> tuple[str, ...]:
    groups = values.read_str_list(table, "groups", path, problems)
    if groups is None:
        return ()
    for index, group in enumerate(groups):
        _check_group_name(group, f"{path}.groups[{index}]", problems)
    return groups


def _check_group_name(group: str, path: str, problems: Problems) -> bool:
    if not group or group != group.strip() or "::" in group or not group.isprintable():
        problems.add(
            path,
            f"{show(group)} is not a valid group name: use printable characters without "
            'surrounding spaces or "::"',
        )
        return False
    return True


def _read_non_empty_str(
    table: dict[str, Any], key: str, path: str, problems: Problems
) -> str | None:
    text = values.read_str(table, key, path, problems)
    if text is not None and not text.strip():
        problems.add(f"{path}.{key}", f"{show(text)} is empty: remove the key or give a value")
        return None
    return text


def _read_addresses(table: dict[str, Any], path: str, problems: Problems) -> tuple[IPAddress, ...]:
    texts = values.read_str_list(table, "addresses", path, problems)
    addresses: list[IPAddress] = []
    for index, text in enumerate(texts or ()):
        address = values.parse_ip_address(text)
        if address is None:
            problems.add(
                f"{path}.addresses[{index}]", f"{show(text)} is not an IPv4 or IPv6 address"
            )
        else:
            addresses.append(address)
    return tuple(addresses)


def _read_resources(
    tables: list[dict[str, Any]],
    kind: str,
    network: IPv4Network | None,
    problems: Problems,
    seen: _Seen,
) -> list[Resource | None]:
    resources: list[Resource | None] = []
    for index, table in enumerate(tables):
        path = f"{kind}[{index}]"
        resource = _read_resource(table, path, kind, problems)
        if resource is not None and not _check_resource_links(
            resource, path, network, problems, seen
        ):
            resource = None
        resources.append(resource)
    return resources


def _read_resource(
    table: dict[str, Any], path: str, kind: str, problems: Problems
) -> Resource | None:
    before = len(problems.lines)
    values.check_keys(
        table, path, problems, known=RESOURCE_KEYS if kind == "resource" else ROUTE_KEYS
    )
    dest = _read_dest(table, path, kind, problems)
    gw = _read_pk(table, "gw", path, problems)
    groups = _read_groups(table, path, problems)
    name = _read_non_empty_str(table, "name", path, problems)
    if len(problems.lines) != before or dest is None or gw is None:
        return None
    return Resource(dest=dest, gw=gw, groups=groups, name=name)


def _read_dest(table: dict[str, Any], path: str, kind: str, problems: Problems) -> str | None:
    text = values.read_str(table, "dest", path, problems, required=True)
    if text is None:
        return None
    dest = values.canonical_resource_dest(text)
    dest_path = f"{path}.dest"
    if dest is not None and (kind == "resource" or values.looks_like_ipv4(dest)):
        return dest
    if values.looks_like_ipv4(text) and "/" in text:
        _explain_bad_subnet(text, dest_path, problems)
    elif values.looks_like_ipv4(text):
        problems.add(dest_path, f"{show(text)} is not an IPv4 address")
    elif kind == "route":
        problems.add(
            dest_path,
            f"{show(text)} is not an IPv4 address or subnet: "
            "route entries take only those, so declare domains as [[resource]]",
        )
    else:
        problems.add(
            dest_path,
            f"{show(text)} is not an IPv4 address, IPv4 subnet, domain or wildcard domain "
            "(like *.example.internal)",
        )
    return None


def _explain_bad_subnet(text: str, path: str, problems: Problems) -> None:
    try:
        lenient = IPv4Network(text, strict=False)
    except ValueError:
        problems.add(path, f"{show(text)} is not an IPv4 subnet in CIDR form (like 10.2.0.0/16)")
        return
    problems.add(
        path,
        f"{text} is not the network address of its subnet: use {lenient}",
    )


def _check_resource_links(
    resource: Resource,
    path: str,
    network: IPv4Network | None,
    problems: Problems,
    seen: _Seen,
) -> bool:
    before = len(problems.lines)
    first = seen.dests.setdefault(resource.dest, path)
    if first != path:
        problems.add(f"{path}.dest", f"{resource.dest} is already used by {first}")
    subnet = resource.network
    if subnet is not None and network is not None and subnet.overlaps(network):
        problems.add(f"{path}.dest", f"{resource.dest} overlaps the overlay network {network}")
    if resource.gw not in seen.pks:
        problems.add(f"{path}.gw", f"{resource.gw} is not the pk of any node in this document")
    return len(problems.lines) == before


def _read_policy(
    table: dict[str, Any], path: str, problems: Problems, seen: _Seen
) -> Policy | None:
    before = len(problems.lines)
    values.check_keys(table, path, problems, known=POLICY_KEYS)
    name = _read_non_empty_str(table, "name", path, problems)
    sources = _read_entries(table, "source_groups", path, problems, seen)
    destinations = _read_entries(table, "destination_groups", path, problems, seen)
    rules = _read_rules(table, path, problems)
    conditions = _read_conditions(table, path, problems)
    if len(problems.lines) != before or sources is None or destinations is None:
        return None
    return Policy(
        source_groups=sources,
        destination_groups=destinations,
        rules=rules,
        conditions=conditions,
        name=name,
    )


def _read_entries(
    table: dict[str, Any], key: str, path: str, problems: Problems, seen: _Seen
) -> tuple[str, ...] | None:
    entries = values.read_str_list(table, key, path, problems, required=True)
    if entries is None:
        return None
    if not entries:
        problems.add(f"{path}.{key}", "empty array: name at least one group or node::<hostname>")
        return None
    result: list[str] = []
    for index, entry in enumerate(entries):
        checked = _check_entry(entry, f"{path}.{key}[{index}]", key, problems, seen)
        if checked is not None:
            result.append(checked)
    return tuple(result) if len(result) == len(entries) else None


def _check_entry(entry: str, path: str, key: str, problems: Problems, seen: _Seen) -> str | None:
    if entry.startswith(NODE_PREFIX):
        if entry[len(NODE_PREFIX) :].lower() not in seen.hostnames:
            problems.add(path, f"{show(entry)} names no node of this document")
            return None
        return entry
    if entry.startswith(RESOURCE_PREFIX):
        return _check_resource_entry(entry, path, key, problems, seen)
    return entry if _check_group_name(entry, path, problems) else None


def _check_resource_entry(
    entry: str, path: str, key: str, problems: Problems, seen: _Seen
) -> str | None:
    if key == "source_groups":
        problems.add(path, f"{show(entry)} cannot be a source: resources only receive traffic")
        return None
    dest = values.canonical_resource_dest(entry[len(RESOURCE_PREFIX) :])
    if dest is None or dest not in seen.dests:
        problems.add(path, f"{show(entry)} names no resource of this document")
        return None
    return RESOURCE_PREFIX + dest


def _read_rules(table: dict[str, Any], path: str, problems: Problems) -> tuple[Rule, ...]:
    if "rules" not in table:
        return ()
    items = table["rules"]
    rules_path = f"{path}.rules"
    if not isinstance(items, list):
        problems.add(
            rules_path, f"expected an array of tables ([[{rules_path}]]), got {describe(items)}"
        )
        return ()
    if not items:
        problems.add(rules_path, "empty array: remove the key to permit all traffic")
        return ()
    rules: list[Rule] = []
    for index, item in enumerate(items):
        rule = _read_rule(item, f"{rules_path}[{index}]", problems)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _read_rule(item: Any, path: str, problems: Problems) -> Rule | None:
    if not isinstance(item, dict):
        problems.add(path, f"expected a table, got {describe(item)}")
        return None
    values.check_keys(item, path, problems, known=RULE_KEYS)
    protocol = values.read_str(item, "protocol", path, problems, required=True)
    if protocol is None:
        return None
    if protocol.lower() not in PROTOCOLS:
        problems.add(
            f"{path}.protocol",
            f"{show(protocol)} is not a supported protocol: use tcp, udp or icmp",
        )
        return None
    protocol = protocol.lower()
    if "ports" not in item:
        return Rule(protocol=protocol)
    if protocol == "icmp":
        problems.add(f"{path}.ports", "icmp rules take no ports: remove the key")
        return None
    ports = _read_ports(item["ports"], f"{path}.ports", problems)
    return None if ports is None else Rule(protocol=protocol, ports=ports)


def _read_ports(items: Any, path: str, problems: Problems) -> tuple[PortRange, ...] | None:
    if not isinstance(items, list):
        problems.add(path, f"expected an array of ports and ranges, got {describe(items)}")
        return None
    if not items:
        problems.add(path, "empty array: remove the key to permit every port")
        return None
    ports: list[PortRange] = []
    for index, item in enumerate(items):
        port = _read_port(item, f"{path}[{index}]", problems)
        if port is None:
            return None
        ports.append(port)
    return tuple(ports)


def _read_port(item: Any, path: str, problems: Problems) -> PortRange | None:
    if isinstance(item, int) and not isinstance(item, bool):
        if MIN_PORT <= item <= MAX_PORT:
            return PortRange(item, item)
        problems.add(path, f"{item} is not a port number ({MIN_PORT} to {MAX_PORT})")
        return None
    if not isinstance(item, str):
        problems.add(
            path, f'expected a port number or a "low-high" range string, got {describe(item)}'
        )
        return None
    if item.isdigit() and MIN_PORT <= int(item) <= MAX_PORT:
        return PortRange(int(item), int(item))
    match = _PORT_RANGE.match(item)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        if MIN_PORT <= low <= high <= MAX_PORT:
            return PortRange(low, high)
    problems.add(
        path,
        f"{show(item)} is not a port range: write low-high with "
        f"{MIN_PORT} <= low <= high <= {MAX_PORT}",
    )
    return None


def _read_conditions(table: dict[str, Any], path: str, problems: Problems) -> Conditions:
    if "conditions" not in table:
        return Conditions()
    item = table["conditions"]
    path = f"{path}.conditions"
    if not isinstance(item, dict):
        problems.add(path, f"expected a table, got {describe(item)}")
        return Conditions()
    values.check_keys(item, path, problems, known=CONDITION_KEYS)
    min_version = values.read_str(item, "min_agent_version", path, problems)
    if min_version is not None and not VERSION.match(min_version):
        problems.add(
            f"{path}.min_agent_version",
            f"{show(min_version)} is not a version number (like 1.2.0)",
        )
        min_version = None
    return Conditions(
        source_networks_in=_read_networks(item, "source_networks_in", path, problems),
        source_networks_out=_read_networks(item, "source_networks_out", path, problems),
        min_agent_version=min_version,
        agent_versions=_read_non_empty_list(item, "agent_versions", path, problems),
        os_types=_read_non_empty_list(item, "os_types", path, problems),
    )


def _read_networks(
    table: dict[str, Any], key: str, path: str, problems: Problems
) -> tuple[IPNetwork, ...]:
    texts = values.read_str_list(table, key, path, problems)
    networks: list[IPNetwork] = []
    for index, text in enumerate(texts or ()):
        network = values.read_any_network(text, f"{path}.{key}[{index}]", problems)
        if network is not None:
            networks.append(network)
    return tuple(networks)


def _read_non_empty_list(
    table: dict[str, Any], key: str, path: str, problems: Problems
) -> tuple[str, ...]:
    texts = values.read_str_list(table, key, path, problems)
    for index, text in enumerate(texts or ()):
        if not text.strip():
            problems.add(f"{path}.{key}[{index}]", f"{show(text)} is empty: give a value")
    return texts or ()
