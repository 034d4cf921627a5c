"""Property tests: rendering round-trips, symmetric node permissions, a parser that only raises
DocumentError, and views that compile like the full document."""

from __future__ import annotations

import dataclasses
import datetime
import string
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_network
from typing import Any

import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netsody_common._document_values import parse_ipv4_address
from netsody_common.document import (
    ALL_GROUP,
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
from netsody_common.policy import compile_for_node, render_view_for_node, view_for_node

# Generating one document takes about 50 draws, so the document properties run fewer examples
# than the parser properties to keep the unit suite fast.
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
DOCUMENT_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=60)
TOML_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=100)

_LABEL_CHARACTERS = string.ascii_lowercase + string.digits
labels = st.builds(
    lambda head, middle, tail: head + middle + tail,
    st.sampled_from(_LABEL_CHARACTERS),
    st.text(alphabet=_LABEL_CHARACTERS + "-", max_size=6),
    st.text(alphabet=_LABEL_CHARACTERS, max_size=1),
).filter(lambda label: not label.endswith("-"))
pks = st.binary(min_size=32, max_size=32).map(bytes.hex)
group_names = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=8
).filter(lambda name: "::" not in name and name.isprintable())
non_blank = st.text(min_size=1, max_size=8).filter(lambda text: bool(text.strip()))
versions = st.lists(st.integers(0, 999), min_size=1, max_size=3).map(
    lambda parts: ".".join(map(str, parts))
)


@st.composite
def port_ranges(draw: st.DrawFn) -> PortRange:
    low = draw(st.integers(1, 65535))
    return PortRange(low, draw(st.integers(low, min(65535, low + 2000))))


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    protocol = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    if protocol == "icmp":
        return Rule("icmp")
    return Rule(protocol, tuple(draw(st.lists(port_ranges(), max_size=3))))


@st.composite
def any_networks(draw: st.DrawFn) -> IPv4Network | Any:
    if draw(st.booleans()):
        return ip_network((draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 32))), strict=False)
    return ip_network((draw(st.integers(0, 2**128 - 1)), draw(st.integers(0, 128))), strict=False)


@st.composite
def conditions(draw: st.DrawFn) -> Conditions:
    return Conditions(
        source_networks_in=tuple(draw(st.lists(any_networks(), max_size=2))),
        source_networks_out=tuple(draw(st.lists(any_networks(), max_size=2))),
        min_agent_version=draw(st.none() | versions),
        agent_versions=tuple(draw(st.lists(versions, max_size=2))),
        os_types=tuple(draw(st.lists(st.sampled_from(["linux", "macos", "windows"]), max_size=2))),
    )


# NOTE: the composite strategies below draw from module-level strategies and pick list items by
# index, because building a new strategy inside every draw made each example take ~0.1 s.
indexes = st.integers(0, 2**16)
index_lists = st.lists(indexes, max_size=3)
optional_os = st.none() | st.sampled_from(["linux", "macos", "windows"])
optional_versions = st.none() | versions
optional_names = st.none() | non_blank
ipv4_addresses = st.lists(st.integers(0, 2**32 - 1).map(IPv4Address), max_size=1)
hostname_lists = st.lists(labels, max_size=6, unique_by=str.lower)
pk_lists = st.lists(pks, min_size=6, max_size=6, unique=True)
resource_dests = st.lists(
    st.one_of(
        st.integers(0, 255).map(lambda third: f"172.16.{third}.0/24"),
        st.integers(1, 254).map(lambda last: f"192.168.7.{last}"),
        labels.map(lambda label: f"{label}.example.internal"),
        labels.map(lambda label: f"*.{label}.corp"),
    ),
    max_size=4,
    unique=True,
)
entry_lists = st.lists(indexes, min_size=1, max_size=3)
rule_lists = st.lists(rules(), max_size=3)
policy_conditions = st.just(Conditions()) | conditions()


def pick(items: list[Any], picks: list[int]) -> tuple[Any, ...]:
    return tuple(items[number % len(items)] for number in picks)


@st.composite
def nodes(draw: st.DrawFn, network: IPv4Network, groups: list[str]) -> list[Node]:
    # Offsets skip the network address, the reserved last address and the broadcast address.
    capacity = network.num_addresses - 3
    hostnames = draw(hostname_lists)
    offsets = list(dict.fromkeys(1 + number % capacity for number in draw(index_lists)))
    offsets += [offset for offset in range(1, min(capacity, 6) + 1) if offset not in offsets]
    keys = draw(pk_lists)
    result = []
    for hostname, offset, pk in zip(hostnames, offsets, keys, strict=False):
        result.append(
            Node(
                hostname=hostname,
                ip=network.network_address + offset,
                pk=pk,
                groups=pick(groups, draw(index_lists)),
                os=draw(optional_os),
                agent_version=draw(optional_versions),
                addresses=tuple(draw(ipv4_addresses)),
            )
        )
    return result


@st.composite
def resources(draw: st.DrawFn, node_list: list[Node], groups: list[str]) -> list[Resource]:
    if not node_list:
        return []
    return [
        Resource(
            dest=dest,
            gw=pick(node_list, [draw(indexes)])[0].pk,
            groups=pick(groups, draw(index_lists))[:2],
            name=draw(optional_names),
        )
        for dest in draw(resource_dests)
    ]


@st.composite
def policies(
    draw: st.DrawFn, node_list: list[Node], resource_list: list[Resource], groups: list[str]
) -> Policy:
    node_entries = [f"node::{node.hostname}" for node in node_list]
    node_entries += [f"node::{node.hostname.upper()}" for node in node_list]
    resource_entries = [f"resource::{resource.dest}" for resource in resource_list]
    return Policy(
        source_groups=pick(groups + node_entries, draw(entry_lists)),
        destination_groups=pick(groups + node_entries + resource_entries, draw(entry_lists)),
        rules=tuple(draw(rule_lists)),
        conditions=draw(policy_conditions),
        name=draw(optional_names),
    )


@st.composite
def documents(draw: st.DrawFn) -> NetworkDocument:
    network = IPv4Network(f"10.0.0.0/{draw(st.integers(16, 29))}")
    groups = [*draw(st.lists(group_names, min_size=1, max_size=4, unique=True)), ALL_GROUP]
    node_list = draw(nodes(network, groups))
    resource_list = draw(resources(node_list, groups))
    policy_count = draw(st.integers(0, 5))
    policy_list = [draw(policies(node_list, resource_list, groups)) for _ in range(policy_count)]
    return NetworkDocument(
        name=draw(st.text(max_size=10)),
        network=network,
        nodes=tuple(node_list),
        policies=tuple(policy_list),
        resources=tuple(resource_list),
    )


@DOCUMENT_SETTINGS
@given(documents())
def test_render_then_parse_is_identity(document: NetworkDocument) -> None:
    text = render_document(document)
    assert parse_document(text) == document
    assert render_document(parse_document(text)) == text


@DOCUMENT_SETTINGS
@given(documents())
def test_node_permission_is_symmetric(document: NetworkDocument) -> None:
    compiled = {node.pk: compile_for_node(document, node.pk) for node in document.nodes}
    for first in document.nodes:
        for second in document.nodes:
            forward = compiled[first.pk].peer(second.pk)
            backward = compiled[second.pk].peer(first.pk)
            forward_rules = None if forward is None else forward.node_rules
            backward_rules = None if backward is None else backward.node_rules
            assert forward_rules == backward_rules


@DOCUMENT_SETTINGS
@given(documents(), st.data())
def test_view_compiles_like_document(document: NetworkDocument, data: st.DataObject) -> None:
    assume(document.nodes)
    node = data.draw(st.sampled_from(document.nodes))
    view = parse_document(render_document(view_for_node(document, node.pk)))
    assert compile_for_node(view, node.pk) == compile_for_node(document, node.pk)


def shorten_keys(document: NetworkDocument, length: int) -> NetworkDocument:
    """Cut every pk to `length` characters: short enough for tomli_w to write tables inline,
    and for cuts of 1 or 2 characters, possibly repeated."""
    nodes = tuple(dataclasses.replace(node, pk=node.pk[:length]) for node in document.nodes)
    resources = tuple(
        dataclasses.replace(resource, gw=resource.gw[:length]) for resource in document.resources
    )
    return dataclasses.replace(document, nodes=nodes, resources=resources)


@DOCUMENT_SETTINGS
@given(documents())
def test_view_render_matches_render_of_view(document: NetworkDocument) -> None:
    for node in document.nodes:
        expected = render_document(view_for_node(document, node.pk))
        assert render_view_for_node(document, node.pk) == expected
    # The second pass reads the fragments cached by the first.
    for node in reversed(document.nodes):
        expected = render_document(view_for_node(document, node.pk))
        assert render_view_for_node(document, node.pk) == expected


@DOCUMENT_SETTINGS
@given(documents(), st.integers(1, 8))
def test_view_render_matches_with_short_keys(document: NetworkDocument, length: int) -> None:
    document = shorten_keys(document, length)
    for node in document.nodes:
        expected = render_document(view_for_node(document, node.pk))
        assert render_view_for_node(document, node.pk) == expected


def assert_parses_or_reports(text: str) -> None:
    """Parse `text`; any exception other than DocumentError fails the test by propagating."""
    problems: tuple[str, ...] = ()
    try:
        document: NetworkDocument | None = parse_document(text)
    except DocumentError as error:
        document, problems = None, error.problems
    if document is None:
        assert problems
        assert all(problem.strip() for problem in problems)


@PROPERTY_SETTINGS
@given(st.text())
def test_parser_raises_only_document_error_on_text(text: str) -> None:
    assert_parses_or_reports(text)


VOCABULARY = [
    "name", "network", "node", "policy", "resource", "route", "hostname", "ip", "pk", "groups",
    "os", "agent_version", "addresses", "dest", "gw", "source_groups", "destination_groups",
    "rules", "conditions", "protocol", "ports", "source_networks_in", "source_networks_out",
    "min_agent_version", "agent_versions", "os_types",
]  # fmt: skip
STRING_VALUES = [
    "10.1.0.0/24", "10.1.0.1", "10.1.0.254", "10.2.0.0/16", "10.2.0.1/16", "a" * 64, "staff",
    "ALL", "node::alpha", "resource::10.2.0.0/16", "tcp", "icmp", "80-90", "*.example.internal",
    "fd00::/8", "0.1.0", "",
]  # fmt: skip
scalars = st.one_of(
    st.sampled_from(STRING_VALUES),
    st.text(alphabet=string.printable, max_size=12),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.dates(),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
keys = st.one_of(st.sampled_from(VOCABULARY), st.text(alphabet=string.ascii_letters, min_size=1))
toml_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
        st.lists(st.dictionaries(keys, children, max_size=5), max_size=3),
    ),
    max_leaves=12,
)


@TOML_SETTINGS
@given(st.dictionaries(keys, toml_values, max_size=6))
def test_parser_raises_only_document_error_on_toml(data: dict[str, Any]) -> None:
    assert_parses_or_reports(tomli_w.dumps(data))


def test_ipv6_condition_round_trips() -> None:
    network = IPv4Network("10.0.0.0/24")
    node = Node("a", IPv4Address("10.0.0.1"), "a" * 64, (), addresses=(IPv6Address("fd00::1"),))
    policy = Policy(
        ("ALL",), ("ALL",), (), Conditions(source_networks_in=(ip_network("fd00::/8"),))
    )
    document = NetworkDocument("", network, (node,), (policy,), ())
    assert parse_document(render_document(document)) == document


@PROPERTY_SETTINGS
@given(
    st.one_of(
        st.text(alphabet="0123456789.", max_size=16),
        st.integers(0, 2**32 - 1).map(lambda number: str(IPv4Address(number))),
        st.text(max_size=16),
    )
)
def test_ipv4_parser_matches_standard_library(text: str) -> None:
    try:
        expected: IPv4Address | None = IPv4Address(text)
    except ValueError:
        expected = None
    assert parse_ipv4_address(text) == expected
