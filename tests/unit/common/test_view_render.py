"""Views rendered from cached fragments: the same text as rendering each view from scratch."""

from __future__ import annotations

import gc
import random
import weakref
from ipaddress import IPv4Address, IPv4Network

import pytest

from netsody_common import _view_render
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
from netsody_common.policy import NodeNotFoundError, render_view_for_node, view_for_node

RULE_CHOICES: list[tuple[Rule, ...]] = [
    (),
    (Rule("icmp"),),
    (Rule("tcp", (PortRange(22, 22),)),),
    (Rule("tcp", (PortRange(80, 80), PortRange(8000, 8100))), Rule("icmp")),
    (Rule("udp", (PortRange(53, 53),)),),
    (Rule("udp"),),
]


def mixed_document(seed: int, nodes: int = 60) -> NetworkDocument:
    """A seeded network with groups, node entries, subnet, address and domain resources (some
    served by the node that also uses them), port rules and conditions."""
    rng = random.Random(seed)
    groups = [f"team-{number}" for number in range(8)]
    node_list = [
        Node(
            hostname=f"host-{number}",
            ip=IPv4Address("10.9.0.1") + number,
            pk=f"{rng.getrandbits(256):064x}",
            groups=tuple(rng.sample(groups, rng.randint(0, 3))),
            os=rng.choice([None, "linux", "windows"]),
            agent_version=rng.choice([None, "0.1.0", "0.3.0"]),
        )
        for number in range(nodes)
    ]
    dests = [f"172.20.{number}.0/24" for number in range(6)]
    dests += [f"192.168.50.{number}" for number in range(1, 4)]
    dests += [f"svc-{number}.example.internal" for number in range(4)] + ["*.corp.internal"]
    rng.shuffle(dests)
    resources = [
        Resource(
            dest=dest,
            gw=rng.choice(node_list).pk,
            groups=tuple(rng.sample(groups, rng.randint(0, 2))),
            name=rng.choice([None, f"name of {dest}"]),
        )
        for dest in dests
    ]
    entries = groups + ["ALL"] + [f"node::{node.hostname}" for node in node_list]
    targets = entries + [f"resource::{resource.dest}" for resource in resources]
    policies = [
        Policy(
            source_groups=tuple(rng.sample(entries, rng.randint(1, 3))),
            destination_groups=tuple(rng.sample(targets, rng.randint(1, 4))),
            rules=rng.choice(RULE_CHOICES),
            conditions=rng.choice([Conditions(), Conditions(os_types=("linux",))]),
            name=rng.choice([None, "a policy"]),
        )
        for _ in range(30)
    ]
    return NetworkDocument(
        name=f"mixed {seed}",
        network=IPv4Network("10.9.0.0/16"),
        nodes=tuple(node_list),
        policies=tuple(policies),
        resources=tuple(resources),
    )


def assert_every_view_matches(document: NetworkDocument) -> None:
    for node in document.nodes:
        assert render_view_for_node(document, node.pk) == render_document(
            view_for_node(document, node.pk)
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_view_matches_render_of_view(seed: int) -> None:
    assert_every_view_matches(mixed_document(seed))


def test_views_match_with_per_peer_grouping(monkeypatch: pytest.MonkeyPatch) -> None:
    # A limit of one part sends every view with two rule sets to the per-peer grouping.
    monkeypatch.setattr(_view_render, "_MAX_PARTS", 1)
    assert_every_view_matches(mixed_document(4))


def test_all_to_all_view_lists_every_node() -> None:
    document = mixed_document(5, nodes=40)
    document = NetworkDocument(
        name=document.name,
        network=document.network,
        nodes=document.nodes,
        policies=(Policy(("ALL",), ("ALL",)),),
    )
    text = render_view_for_node(document, document.nodes[7].pk)
    assert text == render_document(view_for_node(document, document.nodes[7].pk))
    assert len(parse_document(text).nodes) == 40


def test_view_without_policies_is_node_only() -> None:
    document = mixed_document(6, nodes=3)
    document = NetworkDocument(name="", network=document.network, nodes=document.nodes)
    text = render_view_for_node(document, document.nodes[1].pk)
    assert text == render_document(view_for_node(document, document.nodes[1].pk))
    assert parse_document(text).nodes == (document.nodes[1],)


def test_unknown_node_rejected() -> None:
    with pytest.raises(NodeNotFoundError, match="pair or join it first"):
        render_view_for_node(mixed_document(7, nodes=3), "f" * 64)


def test_cached_fragments_do_not_keep_the_document_alive() -> None:
    document = mixed_document(8, nodes=5)
    render_view_for_node(document, document.nodes[0].pk)
    reference = weakref.ref(document)
    del document
    gc.collect()
    assert reference() is None


def test_equal_documents_render_alike() -> None:
    first = mixed_document(9, nodes=20)
    second = parse_document(render_document(first))
    for node in first.nodes:
        assert render_view_for_node(first, node.pk) == render_view_for_node(second, node.pk)
