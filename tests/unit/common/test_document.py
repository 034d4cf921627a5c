"""The network document: parsing, every validation rule with its message, and rendering."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_network

import pytest

from netsody_common.document import (
    Conditions,
    DocumentError,
    NetworkDocument,
    Node,
    Policy,
    PortRange,
    Resource,
    Rule,
    parse_document,
    render_document,
)
from netsody_common.errors import NetsodyError

PK_A = "a" * 64
PK_B = "b" * 64
PK_C = "c" * 64
HEADER = 'name = "test"\nnetwork = "10.1.0.0/24"\n'
NODE_A = f'[[node]]\nhostname = "alpha"\nip = "10.1.0.1"\npk = "{PK_A}"\ngroups = ["staff"]\n'
NODE_B = f'[[node]]\nhostname = "beta"\nip = "10.1.0.2"\npk = "{PK_B}"\ngroups = ["servers"]\n'
RESOURCE = f'[[resource]]\ndest = "10.2.0.0/16"\ngw = "{PK_B}"\ngroups = ["lab"]\n'


def node(hostname: str = "gamma", ip: str = "10.1.0.3", pk: str = PK_C, extra: str = "") -> str:
    return f'[[node]]\nhostname = "{hostname}"\nip = "{ip}"\npk = "{pk}"\n{extra}'


def policy(sources: str = '["staff"]', destinations: str = '["servers"]', extra: str = "") -> str:
    return f"[[policy]]\nsource_groups = {sources}\ndestination_groups = {destinations}\n{extra}"


def with_base(*tables: str) -> str:
    return "\n".join((HEADER, NODE_A, NODE_B, RESOURCE, *tables))


def test_parse_full_document() -> None:
    text = with_base(
        node(
            extra='os = "linux"\nagent_version = "0.2.0"\naddresses = ["192.168.1.5", "fd00::1"]\n'
        ),
        f'[[resource]]\ndest = "*.Example.Internal"\ngw = "{PK_B}"\nname = "intranet"\n',
        policy(
            '["staff", "node::Gamma"]',
            '["servers", "resource::10.2.0.0/16", "resource::*.example.internal"]',
            'name = "staff access"\n'
            '[[policy.rules]]\nprotocol = "TCP"\nports = [22, "8000-8080", "443"]\n'
            '[[policy.rules]]\nprotocol = "icmp"\n'
            "[policy.conditions]\n"
            'source_networks_in = ["192.168.0.0/16"]\nsource_networks_out = ["192.168.9.0/24"]\n'
            'min_agent_version = "0.1"\nagent_versions = ["0.2.0"]\nos_types = ["linux"]\n',
        ),
    )
    document = parse_document(text)
    assert document.name == "test"
    assert document.network == IPv4Network("10.1.0.0/24")
    assert document.nodes[0] == Node("alpha", IPv4Address("10.1.0.1"), PK_A, ("staff",))
    assert document.nodes[2].os == "linux"
    assert document.nodes[2].agent_version == "0.2.0"
    assert [str(address) for address in document.nodes[2].addresses] == ["192.168.1.5", "fd00::1"]
    assert document.resources[1] == Resource("*.example.internal", PK_B, (), "intranet")
    assert document.policies[0] == Policy(
        source_groups=("staff", "node::Gamma"),
        destination_groups=("servers", "resource::10.2.0.0/16", "resource::*.example.internal"),
        rules=(
            Rule("tcp", (PortRange(22, 22), PortRange(8000, 8080), PortRange(443, 443))),
            Rule("icmp"),
        ),
        conditions=Conditions(
            source_networks_in=(ip_network("192.168.0.0/16"),),
            source_networks_out=(ip_network("192.168.9.0/24"),),
            min_agent_version="0.1",
            agent_versions=("0.2.0",),
            os_types=("linux",),
        ),
        name="staff access",
    )


def test_parse_minimal_document() -> None:
    document = parse_document('network = "10.9.0.0/16"\n')
    assert document == NetworkDocument(name="", network=IPv4Network("10.9.0.0/16"))


def test_parse_legacy_route_as_resource() -> None:
    text = with_base(f'[[route]]\ndest = "192.168.50.0/24"\ngw = "{PK_A}"\ngroups = ["staff"]\n')
    document = parse_document(text)
    assert document.resources[-1] == Resource("192.168.50.0/24", PK_A, ("staff",))
    assert "[[route]]" not in render_document(document)


def test_parse_single_address_resource() -> None:
    document = parse_document(with_base(f'[[resource]]\ndest = "10.3.0.7"\ngw = "{PK_A}"\n'))
    assert document.resources[-1].network == IPv4Network("10.3.0.7/32")
    assert not document.resources[-1].is_domain


def test_parse_domain_resource_lowercased() -> None:
    document = parse_document(
        with_base(f'[[resource]]\ndest = "DB.Corp.Internal"\ngw = "{PK_A}"\n')
    )
    assert document.resources[-1].dest == "db.corp.internal"
    assert document.resources[-1].is_domain


def test_parse_uppercase_pk_normalized() -> None:
    document = parse_document(with_base(node(pk=PK_C.upper())))
    assert document.nodes[-1].pk == PK_C


def test_render_round_trip() -> None:
    document = parse_document(
        with_base(
            node(extra='groups = ["ops"]\nos = "macos"\n'),
            policy(extra='[[policy.rules]]\nprotocol = "udp"\nports = ["53", "1000-2000"]\n'),
            policy('["ALL"]', '["lab"]', '[policy.conditions]\nos_types = ["linux"]\n'),
        )
    )
    text = render_document(document)
    assert parse_document(text) == document
    assert render_document(parse_document(text)) == text


def test_render_is_deterministic() -> None:
    document = parse_document(with_base(policy()))
    assert render_document(document) == render_document(parse_document(with_base(policy())))


def test_document_error_is_netsody_error() -> None:
    assert issubclass(DocumentError, NetsodyError)


def test_document_error_lists_every_problem() -> None:
    text = with_base(node(hostname="bad_name", ip="10.1.0.300"))
    with pytest.raises(DocumentError) as caught:
        parse_document(text)
    assert caught.value.problems == (
        "node[2].hostname: bad_name is not a valid DNS label: use 1 to 63 letters, digits and "
        "hyphens, with a letter or digit first and last",
        "node[2].ip: 10.1.0.300 is not an IPv4 address",
    )
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_toml_syntax_error_wrapped() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document('network = "10.1.0.0/24"\n[[node]\n')
    assert str(caught.value) == (
        "document: invalid TOML: Expected ']]' at the end of an array declaration "
        "(at line 2, column 7)"
    )


def test_non_text_input_rejected() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document(b'network = "10.1.0.0/24"')  # type: ignore[arg-type]
    assert str(caught.value) == "document: expected TOML text (str), got bytes"


LABEL_HINT = "use 1 to 63 letters, digits and hyphens, with a letter or digit first and last"
GROUP_HINT = 'use printable characters without surrounding spaces or "::"'
DEST_HINT = (
    "is not an IPv4 address, IPv4 subnet, domain or wildcard domain (like *.example.internal)"
)
NODE_KEYS = "addresses, agent_version, groups, hostname, ip, os, pk"

INVALID_DOCUMENTS = [
    # Top level.
    pytest.param('name = "x"\n', "document: required key network is missing", id="network-missing"),
    pytest.param(
        'network = "10.1.0.0/33"\n',
        "network: 10.1.0.0/33 is not an IPv4 subnet in CIDR form (like 10.1.0.0/24)",
        id="network-invalid",
    ),
    pytest.param(
        'network = "10.1.0.1/24"\n',
        "network: 10.1.0.1/24 has host bits set: use the network address 10.1.0.0/24",
        id="network-host-bits",
    ),
    pytest.param(
        'network = "10.1.0.0"\n',
        "network: 10.1.0.0 has no prefix length: write it in CIDR form",
        id="network-without-prefix",
    ),
    pytest.param(
        'network = "10.1.0.0/31"\n',
        "network: 10.1.0.0/31 is too small: use a prefix length of 30 or less",
        id="network-too-small",
    ),
    pytest.param(
        "network = 10\n", "network: expected a string, got integer 10", id="network-not-string"
    ),
    pytest.param(
        HEADER + "name2 = 1\n",
        "name2: unknown key (known keys: name, network, node, policy, resource, route)",
        id="unknown-top-key",
    ),
    pytest.param(
        'network = "10.1.0.0/24"\nname = true\n',
        "name: expected a string, got boolean true",
        id="name-not-string",
    ),
    pytest.param(
        HEADER + "node = 5\n",
        "node: expected an array of tables ([[node]]), got integer 5",
        id="node-not-array",
    ),
    pytest.param(
        HEADER + 'node = ["alpha"]\n',
        'node[0]: expected a table, got string "alpha"',
        id="node-entry-not-table",
    ),
    # Nodes.
    pytest.param(
        with_base(node(ip="10.1.0.300")),
        "node[2].ip: 10.1.0.300 is not an IPv4 address",
        id="node-ip-invalid",
    ),
    pytest.param(
        with_base(node(ip="10.2.0.1")),
        "node[2].ip: 10.2.0.1 is outside the network 10.1.0.0/24",
        id="node-ip-outside-network",
    ),
    pytest.param(
        with_base(node(ip="10.1.0.0")),
        "node[2].ip: 10.1.0.0 is the network address of 10.1.0.0/24, which no node may use",
        id="node-ip-network-address",
    ),
    pytest.param(
        with_base(node(ip="10.1.0.255")),
        "node[2].ip: 10.1.0.255 is the broadcast address of 10.1.0.0/24, which no node may use",
        id="node-ip-broadcast-address",
    ),
    pytest.param(
        with_base(node(ip="10.1.0.254")),
        "node[2].ip: 10.1.0.254 is reserved: the last address before the broadcast address "
        "of 10.1.0.0/24 is not available to nodes",
        id="node-ip-last-usable-reserved",
    ),
    pytest.param(
        with_base(node(ip="10.1.0.1")),
        "node[2].ip: 10.1.0.1 is already used by node[0]",
        id="node-ip-duplicate",
    ),
    pytest.param(
        with_base(node(ip="")),
        'node[2].ip: "" is not an IPv4 address',
        id="node-ip-empty",
    ),
    pytest.param(
        with_base(node(hostname="bad_name")),
        f"node[2].hostname: bad_name is not a valid DNS label: {LABEL_HINT}",
        id="hostname-underscore",
    ),
    pytest.param(
        with_base(node(hostname="-gamma")),
        f"node[2].hostname: -gamma is not a valid DNS label: {LABEL_HINT}",
        id="hostname-leading-hyphen",
    ),
    pytest.param(
        with_base(node(hostname="g" * 64)),
        f"node[2].hostname: {'g' * 64} is not a valid DNS label: {LABEL_HINT}",
        id="hostname-too-long",
    ),
    pytest.param(
        with_base(node(hostname="gamma.example")),
        f"node[2].hostname: gamma.example is not a valid DNS label: {LABEL_HINT}",
        id="hostname-with-dot",
    ),
    pytest.param(
        with_base(node(hostname="ALPHA")),
        "node[2].hostname: ALPHA is already used by node[0] (hostnames ignore case)",
        id="hostname-duplicate-ignoring-case",
    ),
    pytest.param(
        with_base(node(pk="xyz")),
        "node[2].pk: xyz is not a public key: expected 64 hex characters",
        id="pk-not-hex",
    ),
    pytest.param(
        with_base(node(pk="c" * 63)),
        f"node[2].pk: {'c' * 63} is not a public key: expected 64 hex characters",
        id="pk-too-short",
    ),
    pytest.param(
        with_base(node(pk=PK_A)),
        f"node[2].pk: {PK_A} is already used by node[0]",
        id="pk-duplicate",
    ),
    pytest.param(
        with_base('[[node]]\nhostname = "gamma"\nip = "10.1.0.3"\n'),
        "node[2]: required key pk is missing",
        id="node-pk-missing",
    ),
    pytest.param(
        with_base(node(extra="hostnmae = 1\n")),
        f"node[2].hostnmae: unknown key (known keys: {NODE_KEYS})",
        id="node-unknown-key",
    ),
    pytest.param(
        with_base(f'[[node]]\nhostname = "gamma"\nip = 3\npk = "{PK_C}"\n'),
        "node[2].ip: expected a string, got integer 3",
        id="node-ip-not-string",
    ),
    pytest.param(
        with_base(node(extra='groups = "staff"\n')),
        'node[2].groups: expected an array of strings, got string "staff"',
        id="groups-not-array",
    ),
    pytest.param(
        with_base(node(extra='groups = ["staff", 2]\n')),
        "node[2].groups[1]: expected a string, got integer 2",
        id="group-not-string",
    ),
    pytest.param(
        with_base(node(extra='groups = [""]\n')),
        f'node[2].groups[0]: "" is not a valid group name: {GROUP_HINT}',
        id="group-empty",
    ),
    pytest.param(
        with_base(node(extra='groups = ["a::b"]\n')),
        f"node[2].groups[0]: a::b is not a valid group name: {GROUP_HINT}",
        id="group-with-separator",
    ),
    pytest.param(
        with_base(node(extra='groups = [" ops"]\n')),
        f'node[2].groups[0]: " ops" is not a valid group name: {GROUP_HINT}',
        id="group-with-space",
    ),
    pytest.param(
        with_base(node(hostname="gam\\nma")),
        f'node[2].hostname: "gam\\nma" is not a valid DNS label: {LABEL_HINT}',
        id="hostname-with-newline-quoted",
    ),
    pytest.param(
        with_base(node(extra='os = ""\n')),
        'node[2].os: "" is empty: remove the key or give a value',
        id="node-os-empty",
    ),
    pytest.param(
        with_base(node(extra='addresses = ["192.168.1.300"]\n')),
        "node[2].addresses[0]: 192.168.1.300 is not an IPv4 or IPv6 address",
        id="node-address-invalid",
    ),
    pytest.param(
        with_base(node(extra="agent_version = 1.5\n")),
        "node[2].agent_version: expected a string, got float 1.5",
        id="node-agent-version-not-string",
    ),
    # Resources and routes.
    pytest.param(
        with_base(f'[[resource]]\ndest = "foo bar"\ngw = "{PK_A}"\n'),
        f"resource[1].dest: foo bar {DEST_HINT}",
        id="resource-dest-invalid",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "10.2.0.1/16"\ngw = "{PK_A}"\n'),
        "resource[1].dest: 10.2.0.1/16 is not the network address of its subnet: use 10.2.0.0/16",
        id="resource-subnet-not-network-address",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "10.3.0.300"\ngw = "{PK_A}"\n'),
        "resource[1].dest: 10.3.0.300 is not an IPv4 address",
        id="resource-address-invalid",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "10.3.0.0/40"\ngw = "{PK_A}"\n'),
        "resource[1].dest: 10.3.0.0/40 is not an IPv4 subnet in CIDR form (like 10.2.0.0/16)",
        id="resource-prefix-invalid",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "db.*.internal"\ngw = "{PK_A}"\n'),
        f"resource[1].dest: db.*.internal {DEST_HINT}",
        id="resource-wildcard-not-leading",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "*.*.internal"\ngw = "{PK_A}"\n'),
        f"resource[1].dest: *.*.internal {DEST_HINT}",
        id="resource-double-wildcard",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "intranet"\ngw = "{PK_A}"\n'),
        f"resource[1].dest: intranet {DEST_HINT}",
        id="resource-single-label-domain",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "10.2.0.0/16"\ngw = "{PK_A}"\n'),
        "resource[1].dest: 10.2.0.0/16 is already used by resource[0]",
        id="resource-dest-duplicate",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "10.1.0.128/25"\ngw = "{PK_A}"\n'),
        "resource[1].dest: 10.1.0.128/25 overlaps the overlay network 10.1.0.0/24",
        id="resource-overlaps-overlay",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "10.3.0.0/16"\ngw = "{PK_C}"\n'),
        f"resource[1].gw: {PK_C} is not the pk of any node in this document",
        id="resource-gateway-unknown",
    ),
    pytest.param(
        with_base('[[resource]]\ndest = "10.3.0.0/16"\ngw = "alpha"\n'),
        "resource[1].gw: alpha is not a public key: expected 64 hex characters",
        id="resource-gateway-not-pk",
    ),
    pytest.param(
        with_base('[[resource]]\ndest = "10.3.0.0/16"\n'),
        "resource[1]: required key gw is missing",
        id="resource-gateway-missing",
    ),
    pytest.param(
        with_base(f'[[resource]]\ndest = "10.3.0.0/16"\ngw = "{PK_A}"\nvia = "x"\n'),
        "resource[1].via: unknown key (known keys: dest, groups, gw, name)",
        id="resource-unknown-key",
    ),
    pytest.param(
        with_base(f'[[route]]\ndest = "db.example.internal"\ngw = "{PK_A}"\n'),
        "route[0].dest: db.example.internal is not an IPv4 address or subnet: "
        "route entries take only those, so declare domains as [[resource]]",
        id="route-domain",
    ),
    pytest.param(
        with_base(f'[[route]]\ndest = "10.3.0.0/16"\ngw = "{PK_A}"\nname = "x"\n'),
        "route[0].name: unknown key (known keys: dest, groups, gw)",
        id="route-unknown-key",
    ),
    pytest.param(
        with_base(f'[[route]]\ndest = "10.2.0.0/16"\ngw = "{PK_A}"\n'),
        "route[0].dest: 10.2.0.0/16 is already used by resource[0]",
        id="route-duplicates-resource",
    ),
    # Policies.
    pytest.param(
        with_base(policy(sources="[]")),
        "policy[0].source_groups: empty array: name at least one group or node::<hostname>",
        id="policy-sources-empty",
    ),
    pytest.param(
        with_base('[[policy]]\nsource_groups = ["staff"]\n'),
        "policy[0]: required key destination_groups is missing",
        id="policy-destinations-missing",
    ),
    pytest.param(
        with_base(policy(sources='["resource::10.2.0.0/16"]')),
        "policy[0].source_groups[0]: resource::10.2.0.0/16 cannot be a source: "
        "resources only receive traffic",
        id="policy-resource-as-source",
    ),
    pytest.param(
        with_base(policy(destinations='["node::delta"]')),
        "policy[0].destination_groups[0]: node::delta names no node of this document",
        id="policy-unknown-node",
    ),
    pytest.param(
        with_base(policy(destinations='["resource::10.9.0.0/16"]')),
        "policy[0].destination_groups[0]: resource::10.9.0.0/16 names no resource of this document",
        id="policy-unknown-resource",
    ),
    pytest.param(
        with_base(policy(destinations='["staff", "x::y"]')),
        f"policy[0].destination_groups[1]: x::y is not a valid group name: {GROUP_HINT}",
        id="policy-unknown-prefix",
    ),
    pytest.param(
        with_base(policy(extra="priority = 1\n")),
        "policy[0].priority: unknown key "
        "(known keys: conditions, destination_groups, name, rules, source_groups)",
        id="policy-unknown-key",
    ),
    pytest.param(
        with_base(policy(extra="rules = []\n")),
        "policy[0].rules: empty array: remove the key to permit all traffic",
        id="rules-empty",
    ),
    pytest.param(
        with_base(policy(extra='rules = "tcp"\n')),
        'policy[0].rules: expected an array of tables ([[policy[0].rules]]), got string "tcp"',
        id="rules-not-array",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "sctp"\n')),
        "policy[0].rules[0].protocol: sctp is not a supported protocol: use tcp, udp or icmp",
        id="rule-protocol-unknown",
    ),
    pytest.param(
        with_base(policy(extra="[[policy.rules]]\nports = [22]\n")),
        "policy[0].rules[0]: required key protocol is missing",
        id="rule-protocol-missing",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "icmp"\nports = [8]\n')),
        "policy[0].rules[0].ports: icmp rules take no ports: remove the key",
        id="rule-icmp-with-ports",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "tcp"\nports = []\n')),
        "policy[0].rules[0].ports: empty array: remove the key to permit every port",
        id="rule-ports-empty",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "tcp"\nports = [70000]\n')),
        "policy[0].rules[0].ports[0]: 70000 is not a port number (1 to 65535)",
        id="rule-port-out-of-range",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "tcp"\nports = [0]\n')),
        "policy[0].rules[0].ports[0]: 0 is not a port number (1 to 65535)",
        id="rule-port-zero",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "udp"\nports = ["90-80"]\n')),
        "policy[0].rules[0].ports[0]: 90-80 is not a port range: "
        "write low-high with 1 <= low <= high <= 65535",
        id="rule-port-range-reversed",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "udp"\nports = ["http"]\n')),
        "policy[0].rules[0].ports[0]: http is not a port range: "
        "write low-high with 1 <= low <= high <= 65535",
        id="rule-port-name",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "udp"\nports = [5.5]\n')),
        'policy[0].rules[0].ports[0]: expected a port number or a "low-high" range string, '
        "got float 5.5",
        id="rule-port-float",
    ),
    pytest.param(
        with_base(policy(extra='[[policy.rules]]\nprotocol = "udp"\nport = 53\n')),
        "policy[0].rules[0].port: unknown key (known keys: ports, protocol)",
        id="rule-unknown-key",
    ),
    pytest.param(
        with_base(policy(extra='conditions = "linux"\n')),
        'policy[0].conditions: expected a table, got string "linux"',
        id="conditions-not-table",
    ),
    pytest.param(
        with_base(policy(extra='[policy.conditions]\nos = ["linux"]\n')),
        "policy[0].conditions.os: unknown key (known keys: agent_versions, min_agent_version, "
        "os_types, source_networks_in, source_networks_out)",
        id="conditions-unknown-key",
    ),
    pytest.param(
        with_base(policy(extra='[policy.conditions]\nsource_networks_in = ["192.168.1.0/33"]\n')),
        "policy[0].conditions.source_networks_in[0]: 192.168.1.0/33 is not an IPv4 or IPv6 "
        "subnet in CIDR form",
        id="conditions-network-invalid",
    ),
    pytest.param(
        with_base(policy(extra='[policy.conditions]\nsource_networks_out = ["192.168.1.1/24"]\n')),
        "policy[0].conditions.source_networks_out[0]: 192.168.1.1/24 has host bits set: "
        "use the network address 192.168.1.0/24",
        id="conditions-network-host-bits",
    ),
    pytest.param(
        with_base(policy(extra='[policy.conditions]\nmin_agent_version = "latest"\n')),
        "policy[0].conditions.min_agent_version: latest is not a version number (like 1.2.0)",
        id="conditions-min-version-invalid",
    ),
    pytest.param(
        with_base(policy(extra='[policy.conditions]\nos_types = "linux"\n')),
        'policy[0].conditions.os_types: expected an array of strings, got string "linux"',
        id="conditions-os-types-not-array",
    ),
    pytest.param(
        with_base(policy(extra='[policy.conditions]\nagent_versions = [" "]\n')),
        'policy[0].conditions.agent_versions[0]: " " is empty: give a value',
        id="conditions-agent-version-blank",
    ),
]


@pytest.mark.parametrize(("text", "message"), INVALID_DOCUMENTS)
def test_invalid_document_message(text: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document(text)
    assert str(caught.value) == message
