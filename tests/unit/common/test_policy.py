"""The policy engine: compile semantics, per-packet decisions and the per-node view."""

from __future__ import annotations

import gc
import weakref
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

import pytest

from netsody_common.document import (
    Conditions,
    NetworkDocument,
    Node,
    Policy,
    PortRange,
    Resource,
    Rule,
    parse_document,
    render_document,
)
from netsody_common.policy import (
    ANY_TRAFFIC,
    EGRESS,
    INGRESS,
    CompiledNetwork,
    NodeNotFoundError,
    compile_for_node,
    view_for_node,
)

PK_A = "a" * 64
PK_B = "b" * 64
PK_C = "c" * 64
PK_D = "d" * 64
IP_A = IPv4Address("10.1.0.1")
IP_B = IPv4Address("10.1.0.2")
IP_C = IPv4Address("10.1.0.3")
IP_D = IPv4Address("10.1.0.4")
TCP, UDP, ICMP = 6, 17, 1

ALPHA = Node(
    "alpha",
    IP_A,
    PK_A,
    ("staff",),
    os="linux",
    agent_version="0.2.0",
    addresses=(ip_address("192.168.1.10"),),
)
BETA = Node("beta", IP_B, PK_B, ("servers",))
GAMMA = Node("gamma", IP_C, PK_C, ())
DELTA = Node("delta", IP_D, PK_D, ("staff",), os="windows", agent_version="0.1.0")
LAB = Resource("10.2.0.0/16", PK_B, ("lab",))
HOST = Resource("10.3.0.7", PK_B, ())
INTRANET = Resource("*.corp.internal", PK_B, ("lab",))


def make_document(
    *policies: Policy,
    resources: tuple[Resource, ...] = (LAB, HOST, INTRANET),
    nodes: tuple[Node, ...] = (ALPHA, BETA, GAMMA, DELTA),
) -> NetworkDocument:
    """Build a document and pass it through the parser, so every test input is valid."""
    document = NetworkDocument("test", IPv4Network("10.1.0.0/24"), nodes, policies, resources)
    return parse_document(render_document(document))


def allow(sources: tuple[str, ...], destinations: tuple[str, ...], *rules: Rule) -> Policy:
    return Policy(sources, destinations, rules)


def tcp(*ports: int) -> Rule:
    return Rule("tcp", tuple(PortRange(port, port) for port in ports))


def peer_pks(compiled: CompiledNetwork) -> set[str]:
    return {peer.pk for peer in compiled.peers}


def node_peer_pks(compiled: CompiledNetwork) -> set[str]:
    return {peer.pk for peer in compiled.peers if peer.node_rules is not None}


def test_default_deny() -> None:
    compiled = compile_for_node(make_document(), PK_A)
    assert compiled.peers == ()
    assert compiled.routes == {}
    assert not compiled.decide(EGRESS, IP_A, IP_B, TCP, 22, PK_B)
    assert not compiled.decide(INGRESS, IP_B, IP_A, TCP, 22, PK_B)


def test_all_to_all_connects_every_node() -> None:
    document = make_document(allow(("ALL",), ("ALL",)))
    compiled = compile_for_node(document, PK_A)
    assert node_peer_pks(compiled) == {PK_B, PK_C, PK_D}
    assert compiled.decide(EGRESS, IP_A, IP_C, UDP, 53, PK_C)
    assert compiled.decide(INGRESS, IP_C, IP_A, ICMP, None, PK_C)


def test_node_without_groups_is_in_all() -> None:
    document = make_document(allow(("staff",), ("ALL",)))
    assert PK_C in node_peer_pks(compile_for_node(document, PK_A))
    assert PK_A in node_peer_pks(compile_for_node(document, PK_C))


def test_group_to_group_permits_members_only() -> None:
    document = make_document(allow(("staff",), ("servers",)))
    compiled = compile_for_node(document, PK_A)
    assert node_peer_pks(compiled) == {PK_B}
    assert compile_for_node(document, PK_C).peers == ()


def test_node_policy_is_bidirectional() -> None:
    document = make_document(allow(("staff",), ("servers",)))
    server = compile_for_node(document, PK_B)
    assert node_peer_pks(server) == {PK_A, PK_D}
    assert server.decide(EGRESS, IP_B, IP_A, TCP, 8080, PK_A)
    assert server.decide(INGRESS, IP_A, IP_B, TCP, 8080, PK_A)


def test_node_entries_select_single_nodes() -> None:
    document = make_document(allow(("node::ALPHA",), ("node::gamma",)))
    assert node_peer_pks(compile_for_node(document, PK_A)) == {PK_C}
    assert node_peer_pks(compile_for_node(document, PK_C)) == {PK_A}
    assert compile_for_node(document, PK_D).peers == ()


def test_node_never_peers_with_itself() -> None:
    document = make_document(allow(("staff",), ("staff",)))
    assert node_peer_pks(compile_for_node(document, PK_A)) == {PK_D}


def test_group_destination_includes_tagged_resources() -> None:
    document = make_document(allow(("staff",), ("lab",)))
    compiled = compile_for_node(document, PK_A)
    assert compiled.routes == {IPv4Network("10.2.0.0/16"): PK_B}
    assert compiled.domain_routes == {"*.corp.internal": PK_B}
    assert compiled.decide(EGRESS, IP_A, "10.2.5.6", TCP, 443, PK_B)


def test_group_destination_without_nodes_gives_no_node_peer() -> None:
    document = make_document(allow(("staff",), ("lab",)))
    compiled = compile_for_node(document, PK_A)
    assert peer_pks(compiled) == {PK_B}
    assert node_peer_pks(compiled) == set()
    assert not compiled.decide(EGRESS, IP_A, IP_B, TCP, 22, PK_B)


def test_resources_not_implicitly_in_all() -> None:
    document = make_document(allow(("ALL",), ("ALL",)))
    compiled = compile_for_node(document, PK_A)
    assert compiled.routes == {}
    assert not compiled.decide(EGRESS, IP_A, "10.2.0.1", TCP, 22, PK_B)


def test_resource_tagged_all_covered_by_all_policy() -> None:
    tagged = Resource("10.2.0.0/16", PK_B, ("ALL",))
    document = make_document(allow(("ALL",), ("ALL",)), resources=(tagged,))
    compiled = compile_for_node(document, PK_C)
    assert compiled.routes == {IPv4Network("10.2.0.0/16"): PK_B}


def test_resource_entry_reaches_one_resource() -> None:
    document = make_document(allow(("staff",), ("resource::10.3.0.7",)))
    compiled = compile_for_node(document, PK_A)
    assert compiled.routes == {IPv4Network("10.3.0.7/32"): PK_B}
    assert compiled.decide(EGRESS, IP_A, "10.3.0.7", TCP, 22, PK_B)
    assert not compiled.decide(EGRESS, IP_A, "10.3.0.8", TCP, 22, PK_B)
    assert not compiled.decide(EGRESS, IP_A, "10.2.0.1", TCP, 22, PK_B)


def test_resource_traffic_must_go_to_its_gateway() -> None:
    document = make_document(allow(("staff",), ("resource::10.3.0.7", "node::gamma")))
    compiled = compile_for_node(document, PK_A)
    assert not compiled.decide(EGRESS, IP_A, "10.3.0.7", TCP, 22, PK_C)


def test_rules_restrict_protocol_and_port() -> None:
    document = make_document(allow(("staff",), ("servers",), tcp(22), Rule("icmp")))
    compiled = compile_for_node(document, PK_A)
    assert compiled.decide(EGRESS, IP_A, IP_B, TCP, 22, PK_B)
    assert compiled.decide(EGRESS, IP_A, IP_B, ICMP, None, PK_B)
    assert not compiled.decide(EGRESS, IP_A, IP_B, TCP, 80, PK_B)
    assert not compiled.decide(EGRESS, IP_A, IP_B, UDP, 22, PK_B)


def test_rules_port_range_and_all_ports() -> None:
    rules = (Rule("udp", (PortRange(5000, 5010),)), Rule("tcp"))
    document = make_document(allow(("staff",), ("servers",), *rules))
    compiled = compile_for_node(document, PK_A)
    assert compiled.decide(EGRESS, IP_A, IP_B, UDP, 5000, PK_B)
    assert compiled.decide(EGRESS, IP_A, IP_B, UDP, 5010, PK_B)
    assert not compiled.decide(EGRESS, IP_A, IP_B, UDP, 5011, PK_B)
    assert compiled.decide(EGRESS, IP_A, IP_B, TCP, 1, PK_B)


def test_wide_port_range_matches() -> None:
    rules = (Rule("tcp", (PortRange(1024, 65535),)),)
    compiled = compile_for_node(make_document(allow(("staff",), ("servers",), *rules)), PK_A)
    assert compiled.decide(EGRESS, IP_A, IP_B, TCP, 65535, PK_B)
    assert not compiled.decide(EGRESS, IP_A, IP_B, TCP, 1023, PK_B)


def test_rules_of_policies_add_up() -> None:
    document = make_document(
        allow(("staff",), ("servers",), tcp(22)), allow(("node::alpha",), ("servers",), tcp(443))
    )
    compiled = compile_for_node(document, PK_A)
    assert compiled.decide(EGRESS, IP_A, IP_B, TCP, 22, PK_B)
    assert compiled.decide(EGRESS, IP_A, IP_B, TCP, 443, PK_B)
    assert not compiled.decide(EGRESS, IP_A, IP_B, TCP, 80, PK_B)


def test_policy_without_rules_overrides_restricted_one() -> None:
    document = make_document(allow(("staff",), ("servers",), tcp(22)), allow(("ALL",), ("ALL",)))
    compiled = compile_for_node(document, PK_A)
    assert compiled.peer(PK_B) is not None
    assert compiled.peer(PK_B).node_rules == ANY_TRAFFIC  # type: ignore[union-attr]


def test_rules_apply_in_both_directions() -> None:
    document = make_document(allow(("staff",), ("servers",), tcp(22)))
    server = compile_for_node(document, PK_B)
    assert server.decide(EGRESS, IP_B, IP_A, TCP, 22, PK_A)
    assert not server.decide(EGRESS, IP_B, IP_A, TCP, 80, PK_A)


def conditioned(conditions: Conditions) -> Policy:
    return Policy(("staff",), ("servers",), (), conditions)


CONDITION_CASES = [
    pytest.param(Conditions(os_types=("Linux",)), True, id="os-matches-ignoring-case"),
    pytest.param(Conditions(os_types=("macos",)), False, id="os-differs"),
    pytest.param(Conditions(min_agent_version="0.2"), True, id="version-equal-to-minimum"),
    pytest.param(Conditions(min_agent_version="0.10.0"), False, id="version-below-minimum"),
    pytest.param(Conditions(agent_versions=("0.2.0", "0.3.0")), True, id="version-listed"),
    pytest.param(Conditions(agent_versions=("0.3.0",)), False, id="version-not-listed"),
    pytest.param(
        Conditions(source_networks_in=(ip_network("192.168.0.0/16"),)), True, id="address-inside"
    ),
    pytest.param(
        Conditions(source_networks_in=(ip_network("10.0.0.0/8"),)), False, id="address-not-inside"
    ),
    pytest.param(
        Conditions(source_networks_in=(ip_network("::/0"),)), False, id="address-family-differs"
    ),
    pytest.param(
        Conditions(source_networks_out=(ip_network("192.168.1.0/24"),)),
        False,
        id="address-in-excluded-network",
    ),
    pytest.param(
        Conditions(source_networks_out=(ip_network("172.16.0.0/12"),)),
        True,
        id="address-outside-excluded-network",
    ),
    pytest.param(
        Conditions(os_types=("linux",), min_agent_version="0.1.0"), True, id="all-conditions-hold"
    ),
    pytest.param(
        Conditions(os_types=("linux",), min_agent_version="1.0.0"),
        False,
        id="one-condition-fails",
    ),
]


@pytest.mark.parametrize(("conditions", "permitted"), CONDITION_CASES)
def test_conditions_on_initiating_node(conditions: Conditions, permitted: bool) -> None:
    document = make_document(conditioned(conditions), nodes=(ALPHA, BETA))
    assert (PK_B in node_peer_pks(compile_for_node(document, PK_A))) is permitted
    assert (PK_A in node_peer_pks(compile_for_node(document, PK_B))) is permitted


@pytest.mark.parametrize(
    "conditions",
    [
        pytest.param(Conditions(os_types=("linux",)), id="os-missing"),
        pytest.param(Conditions(min_agent_version="0.1"), id="version-missing"),
        pytest.param(Conditions(agent_versions=("0.1.0",)), id="version-list-missing"),
        pytest.param(
            Conditions(source_networks_in=(ip_network("0.0.0.0/0"),)), id="addresses-missing"
        ),
        pytest.param(
            Conditions(source_networks_out=(ip_network("10.0.0.0/8"),)),
            id="addresses-missing-for-exclusion",
        ),
    ],
)
def test_condition_on_missing_attribute_fails(conditions: Conditions) -> None:
    staff_without_facts = Node("omega", IPv4Address("10.1.0.9"), "e" * 64, ("staff",))
    document = make_document(conditioned(conditions), nodes=(staff_without_facts, BETA))
    assert compile_for_node(document, "e" * 64).peers == ()


def test_conditions_ignore_destination_node() -> None:
    # The server BETA has no os; only the initiating staff node ALPHA must be linux.
    document = make_document(conditioned(Conditions(os_types=("linux",))))
    server = compile_for_node(document, PK_B)
    assert node_peer_pks(server) == {PK_A}


def test_conditions_filter_sources_per_node() -> None:
    document = make_document(conditioned(Conditions(os_types=("linux",))))
    assert compile_for_node(document, PK_D).peers == ()


def test_ingress_source_must_be_peer_address() -> None:
    compiled = compile_for_node(make_document(allow(("ALL",), ("ALL",))), PK_A)
    assert not compiled.decide(INGRESS, IP_C, IP_A, TCP, 22, PK_B)
    assert not compiled.decide(INGRESS, "10.2.0.9", IP_A, TCP, 22, PK_B)


def test_egress_source_must_be_own_address() -> None:
    compiled = compile_for_node(make_document(allow(("ALL",), ("ALL",))), PK_A)
    assert not compiled.decide(EGRESS, IP_C, IP_B, TCP, 22, PK_B)


def test_unknown_peer_denied() -> None:
    compiled = compile_for_node(make_document(allow(("ALL",), ("ALL",))), PK_A)
    assert not compiled.decide(EGRESS, IP_A, IP_B, TCP, 22, "f" * 64)


def test_anti_spoofing_sources() -> None:
    document = make_document(allow(("staff",), ("lab",)))
    compiled = compile_for_node(document, PK_A)
    peer = compiled.peer(PK_B)
    assert peer is not None
    assert peer.allowed_sources == (IPv4Network("10.1.0.2/32"), IPv4Network("10.2.0.0/16"))
    assert compiled.is_valid_source(PK_B, "10.1.0.2")
    assert compiled.is_valid_source(PK_B, "10.2.200.1")
    assert not compiled.is_valid_source(PK_B, "10.3.0.7")
    assert not compiled.is_valid_source(PK_B, IP_C)
    assert not compiled.is_valid_source(PK_C, IP_C)


def test_gateway_duty_lists_permitted_clients() -> None:
    document = make_document(allow(("staff",), ("resource::10.2.0.0/16",), tcp(5432)))
    gateway = compile_for_node(document, PK_B)
    duty = gateway.gateway_duties[IPv4Network("10.2.0.0/16")]
    assert [client.pk for client in duty.clients] == [PK_A, PK_D]
    assert [client.ip for client in duty.clients] == [IP_A, IP_D]
    assert duty.clients[0].rules.allows(TCP, 5432)
    assert peer_pks(gateway) == {PK_A, PK_D}


def test_gateway_forwards_only_permitted_clients() -> None:
    document = make_document(
        allow(("staff",), ("resource::10.2.0.0/16",), tcp(5432)), allow(("ALL",), ("ALL",))
    )
    gateway = compile_for_node(document, PK_B)
    assert gateway.decide(INGRESS, IP_A, "10.2.3.4", TCP, 5432, PK_A)
    assert not gateway.decide(INGRESS, IP_A, "10.2.3.4", TCP, 22, PK_A)
    assert not gateway.decide(INGRESS, IP_C, "10.2.3.4", TCP, 5432, PK_C)


def test_gateway_without_clients_has_no_duty() -> None:
    assert compile_for_node(make_document(), PK_B).gateway_duties == {}


def test_gateway_domain_duty_keyed_by_domain() -> None:
    document = make_document(allow(("staff",), ("resource::*.corp.internal",)))
    gateway = compile_for_node(document, PK_B)
    assert gateway.gateway_duties == {}
    assert list(gateway.domain_gateway_duties) == ["*.corp.internal"]
    assert gateway.domain_gateway_duties["*.corp.internal"].network is None


def test_gateway_reaching_own_resource_has_no_route() -> None:
    document = make_document(allow(("servers",), ("lab",)))
    gateway = compile_for_node(document, PK_B)
    assert gateway.routes == {}
    assert gateway.peers == ()


def test_overlapping_resources_add_up() -> None:
    wide = Resource("10.2.0.0/16", PK_B, ())
    narrow = Resource("10.2.3.0/24", PK_B, ())
    document = make_document(
        allow(("staff",), ("resource::10.2.0.0/16",), tcp(22)),
        allow(("staff",), ("resource::10.2.3.0/24",), tcp(80)),
        resources=(wide, narrow),
    )
    compiled = compile_for_node(document, PK_A)
    assert compiled.decide(EGRESS, IP_A, "10.2.3.9", TCP, 22, PK_B)
    assert compiled.decide(EGRESS, IP_A, "10.2.3.9", TCP, 80, PK_B)
    assert not compiled.decide(EGRESS, IP_A, "10.2.4.9", TCP, 80, PK_B)


def test_hostnames_cover_self_and_node_peers() -> None:
    document = make_document(allow(("staff",), ("lab", "node::gamma")))
    compiled = compile_for_node(document, PK_A)
    assert compiled.hostnames == {"alpha": IP_A, "gamma": IP_C}
    assert compiled.dns_names == {"alpha.netsody.me": IP_A, "gamma.netsody.me": IP_C}


def test_unknown_node_rejected() -> None:
    document = make_document()
    with pytest.raises(NodeNotFoundError) as caught:
        compile_for_node(document, "f" * 64)
    assert str(caught.value) == f"node {'f' * 64} is not in network test: pair or join it first"
    assert isinstance(caught.value, LookupError)


def test_decide_unknown_direction_raises() -> None:
    compiled = compile_for_node(make_document(allow(("ALL",), ("ALL",))), PK_A)
    with pytest.raises(ValueError, match="direction 'inbound' is invalid"):
        compiled.decide("inbound", IP_B, IP_A, TCP, 22, PK_B)


def test_decide_reply_unknown_direction_raises() -> None:
    compiled = compile_for_node(make_document(allow(("ALL",), ("ALL",))), PK_A)
    with pytest.raises(ValueError, match="direction 'outbound' is invalid"):
        compiled.decide_reply("outbound", IP_B, IP_A, TCP, 22, PK_B)


@pytest.mark.parametrize(
    ("src", "dst", "protocol"),
    [
        pytest.param(IP_A, IP_B, TCP, id="address-objects"),
        pytest.param(int(IP_A), int(IP_B), TCP, id="integers"),
        pytest.param("10.1.0.1", "10.1.0.2", "tcp", id="strings"),
        pytest.param(IP_A, IP_B, "TCP", id="protocol-name-uppercase"),
    ],
)
def test_decide_accepts_address_forms(src: object, dst: object, protocol: object) -> None:
    document = make_document(allow(("staff",), ("servers",), tcp(22)))
    compiled = compile_for_node(document, PK_A)
    assert compiled.decide(EGRESS, src, dst, protocol, 22, PK_B)  # type: ignore[arg-type]


def test_decide_unknown_protocol_name_denied() -> None:
    document = make_document(allow(("staff",), ("servers",), tcp(22)))
    compiled = compile_for_node(document, PK_A)
    assert not compiled.decide(EGRESS, IP_A, IP_B, "sctp", 22, PK_B)


def test_decide_reply_admits_reverse_of_permitted_flow() -> None:
    document = make_document(allow(("staff",), ("resource::10.2.0.0/16",), tcp(5432)))
    client = compile_for_node(document, PK_A)
    assert client.decide_reply(INGRESS, "10.2.0.5", IP_A, TCP, 5432, PK_B)
    assert not client.decide_reply(INGRESS, "10.2.0.5", IP_A, TCP, 22, PK_B)
    gateway = compile_for_node(document, PK_B)
    assert gateway.decide_reply(EGRESS, "10.2.0.5", IP_A, TCP, 5432, PK_A)


def test_decide_many_matches_decide() -> None:
    document = make_document(
        allow(("staff",), ("servers",), tcp(22)), allow(("staff",), ("lab",), Rule("icmp"))
    )
    compiled = compile_for_node(document, PK_A)
    own = int(IP_A)
    packets = [
        (direction, src, dst, protocol, port, peer)
        for peer, peer_ip in ((PK_B, int(IP_B)), (PK_C, int(IP_C)))
        for direction, src, dst in (
            (EGRESS, own, peer_ip),
            (INGRESS, peer_ip, own),
            (EGRESS, own, int(IPv4Address("10.2.0.1"))),
            (EGRESS, peer_ip, own),
        )
        for protocol, port in ((TCP, 22), (TCP, 80), (ICMP, 0), (UDP, 22))
    ]
    expected = [compiled.decide(*packet) for packet in packets]
    assert compiled.decide_many(packets) == expected
    assert any(expected)
    assert not all(expected)


def test_compile_reuses_lookups_for_same_document() -> None:
    document = make_document(allow(("staff",), ("servers",)))
    first = compile_for_node(document, PK_A)
    assert compile_for_node(document, PK_A) == first
    assert compile_for_node(parse_document(render_document(document)), PK_A) == first


def test_compile_cache_releases_document() -> None:
    """The lookup cache once referenced the document itself, so no document was ever freed."""
    document = make_document(allow(("staff",), ("servers",)))
    compile_for_node(document, PK_A)
    reference = weakref.ref(document)
    del document
    gc.collect()
    assert reference() is None


RICH_POLICIES = (
    allow(("staff",), ("servers",), tcp(22), Rule("icmp")),
    allow(("node::gamma",), ("lab",)),
    allow(("staff",), ("resource::10.3.0.7",), Rule("udp", (PortRange(53, 53),))),
    Policy(("ALL",), ("node::gamma",), (tcp(80),), Conditions(os_types=("windows",))),
    allow(("servers",), ("lab",)),
)


@pytest.mark.parametrize("pk", [PK_A, PK_B, PK_C, PK_D])
def test_view_compiles_like_full_document(pk: str) -> None:
    document = make_document(*RICH_POLICIES)
    view = view_for_node(document, pk)
    reparsed = parse_document(render_document(view))
    assert compile_for_node(reparsed, pk) == compile_for_node(document, pk)


def test_view_hides_unrelated_nodes_and_facts() -> None:
    document = make_document(allow(("node::alpha",), ("node::beta",)))
    view = view_for_node(document, PK_B)
    assert [node.pk for node in view.nodes] == [PK_A, PK_B]
    assert view.nodes[0] == Node("alpha", IP_A, PK_A)
    assert view.nodes[1] == BETA
    assert view.resources == ()


def test_view_keeps_needed_resources_without_groups() -> None:
    document = make_document(allow(("staff",), ("lab",)))
    view = view_for_node(document, PK_A)
    assert [resource.dest for resource in view.resources] == ["10.2.0.0/16", "*.corp.internal"]
    assert all(resource.groups == () for resource in view.resources)


def test_view_evaluates_conditions() -> None:
    document = make_document(conditioned(Conditions(os_types=("linux",))))
    view = view_for_node(document, PK_B)
    assert all(policy.conditions.is_empty() for policy in view.policies)
    assert [node.hostname for node in view.nodes] == ["alpha", "beta"]


def test_view_unknown_node_rejected() -> None:
    with pytest.raises(NodeNotFoundError):
        view_for_node(make_document(), "f" * 64)
