"""Benchmark of the network document parser and the policy engine.

Run with `hatch run python benchmarks/policy_bench.py [--nodes N --groups G --policies P]`.
Prints medians over several runs next to a baseline measured in the same run:

- parse: `parse_document` against `tomllib.loads` of the same text;
- compile for one node: `compile_for_node` on a fresh document (lookups built in the call) and
  on a document already compiled once (lookups reused), against a straightforward compile
  that expands every policy into sets of pks;
- per-packet decisions: `decide` per call and `decide_many` per batch, against a loop that
  does one dict lookup per packet;
- one node's view as TOML, for this network and for the network of the controller benchmark
  (`--view-nodes` nodes, one ALL-to-ALL policy), against `render_document(view_for_node(...))`.
  `render_view_for_node` runs once with its per-document fragments filled, and once on a fresh
  copy of the document, where the call also builds the lookups and the fragments of that view.

The generated network is deterministic (seeded): nodes in 10.0.0.0/16 with three groups
each, a quarter of the policies with port rules, one in twenty with conditions, and
resources whose gateways are nodes of the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import random
import statistics
import time
import tomllib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

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
    EGRESS,
    INGRESS,
    compile_for_node,
    render_view_for_node,
    view_for_node,
)

SEED = 20261204
PACKETS = 200_000
VIEW_SAMPLE = 10


def generate_document(nodes: int, groups: int, policies: int, resources: int) -> NetworkDocument:
    """Build a deterministic network of the given size."""
    rng = random.Random(SEED)
    network = IPv4Network("10.0.0.0/16")
    group_names = [f"group-{number}" for number in range(groups)]
    node_list = []
    for number in range(nodes):
        node_list.append(
            Node(
                hostname=f"node-{number}",
                ip=network.network_address + 1 + number,
                pk=f"{rng.getrandbits(256):064x}",
                groups=tuple(rng.sample(group_names, 3)),
                os=rng.choice(["linux", "macos", "windows"]),
                agent_version=rng.choice(["0.1.0", "0.2.0", "0.3.1"]),
                addresses=(IPv4Address(f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"),),
            )
        )
    resource_list = [
        Resource(
            dest=f"172.{16 + number // 256}.{number % 256}.0/24",
            gw=rng.choice(node_list).pk,
            groups=(rng.choice(group_names),),
        )
        for number in range(resources)
    ]
    policy_list = [_random_policy(rng, group_names, node_list) for _ in range(policies)]
    return NetworkDocument(
        name="bench",
        network=network,
        nodes=tuple(node_list),
        policies=tuple(policy_list),
        resources=tuple(resource_list),
    )


def _random_policy(rng: random.Random, group_names: list[str], nodes: list[Node]) -> Policy:
    sources = tuple(rng.sample(group_names, rng.randint(1, 3)))
    destinations = tuple(rng.sample(group_names, rng.randint(1, 3)))
    if rng.random() < 0.1:
        sources += (f"node::{rng.choice(nodes).hostname}",)
    rules: tuple[Rule, ...] = ()
    if rng.random() < 0.25:
        port = rng.choice([22, 80, 443, 5432])
        rules = (Rule("tcp", (PortRange(port, port), PortRange(8000, 8100))), Rule("icmp"))
    conditions = Conditions()
    if rng.random() < 0.05:
        conditions = Conditions(os_types=("linux",), min_agent_version="0.2.0")
    return Policy(sources, destinations, rules, conditions)


def naive_peers(document: NetworkDocument, pk: str) -> set[str]:
    """Return the pks with a node-to-node policy to `pk`, by expanding every policy into sets.

    The baseline compile: no conditions or rules, only the peer set, the way a first
    implementation would compute it.
    """
    members: dict[str, set[str]] = {"ALL": {node.pk for node in document.nodes}}
    by_hostname = {node.hostname.lower(): node.pk for node in document.nodes}
    for node in document.nodes:
        for group in node.groups:
            members.setdefault(group, set()).add(node.pk)

    def expand(entries: tuple[str, ...]) -> set[str]:
        result: set[str] = set()
        for entry in entries:
            if entry.startswith("node::"):
                result.add(by_hostname[entry[6:].lower()])
            else:
                result |= members.get(entry, set())
        return result

    peers: set[str] = set()
    for policy in document.policies:
        sources = expand(policy.source_groups)
        destinations = expand(policy.destination_groups)
        if pk in sources:
            peers |= destinations
        if pk in destinations:
            peers |= sources
    peers.discard(pk)
    return peers


def median_seconds(*functions: Callable[[], object], runs: int) -> list[float]:
    """Return the median wall time of `runs` calls of each function.

    The functions take turns within each run, so that load from other processes on the machine
    affects them alike. The garbage collector is paused during each call, as `timeit` does,
    because collections triggered by the large documents held in memory add noise unrelated to
    the code measured.
    """
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(runs):
        for function, samples in zip(functions, times, strict=True):
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                function()
                samples.append(time.perf_counter() - started)
            finally:
                gc.enable()
    return [statistics.median(samples) for samples in times]


def make_packets(document: NetworkDocument, pk: str) -> list[tuple[str, int, int, int, int, str]]:
    """Build a deterministic mix of egress and ingress packets, permitted and denied."""
    rng = random.Random(SEED + 1)
    compiled = compile_for_node(document, pk)
    own = int(compiled.ip)
    peers = list(compiled.peers)
    packets = []
    for _ in range(PACKETS):
        peer = rng.choice(peers)
        protocol = rng.choice([6, 6, 17, 1])
        port = rng.choice([22, 80, 443, 8080, 50000])
        if rng.random() < 0.5:
            packets.append((EGRESS, own, int(peer.ip), protocol, port, peer.pk))
        else:
            packets.append((INGRESS, int(peer.ip), own, protocol, port, peer.pk))
    return packets


def row(label: str, seconds: float, baseline_label: str, baseline: float) -> str:
    """Format one figure with its baseline and the ratio."""
    return (
        f"{label:<34} {seconds * 1000:10.2f} ms   "
        f"{baseline_label:<30} {baseline * 1000:10.2f} ms   ratio {seconds / baseline:6.2f}"
    )


def rate_row(label: str, per_second: float, baseline_label: str, baseline: float) -> str:
    """Format one throughput figure with its baseline and the ratio."""
    return (
        f"{label:<34} {per_second / 1e6:8.2f} M/s   "
        f"{baseline_label:<30} {baseline / 1e6:8.2f} M/s   ratio {per_second / baseline:6.2f}"
    )


def all_to_all_document(nodes: int) -> NetworkDocument:
    """Build the network of the controller benchmark: `nodes` nodes, one ALL-to-ALL policy."""
    document = generate_document(nodes, 10, 0, 0)
    return dataclasses.replace(document, policies=(Policy(("ALL",), ("ALL",)),))


def print_view_rows(label: str, document: NetworkDocument, runs: int) -> None:
    """Print the time of one node's view, averaged over a sample of nodes, by both paths."""
    step = max(1, len(document.nodes) // VIEW_SAMPLE)
    pks = [node.pk for node in document.nodes[::step][:VIEW_SAMPLE]]
    for pk in pks:
        assert render_view_for_node(document, pk) == render_document(view_for_node(document, pk))
    copies = iter([dataclasses.replace(document) for _ in range(runs)])

    def fresh() -> None:
        copy = next(copies)
        for pk in pks:
            render_view_for_node(copy, pk)

    new, cold, old = median_seconds(
        lambda: [render_view_for_node(document, pk) for pk in pks],
        fresh,
        lambda: [render_document(view_for_node(document, pk)) for pk in pks],
        runs=runs,
    )
    count = len(pks)
    baseline = "render_document(view_for_node)"
    print(f"  {label}: {len(render_view_for_node(document, pks[0])) / 1e3:.0f} kB per view")
    print(row("render_view_for_node, filled", new / count, baseline, old / count))
    print(row("render_view_for_node, fresh copy", cold / count, baseline, old / count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000, help="number of nodes")
    parser.add_argument("--groups", type=int, default=500, help="number of groups")
    parser.add_argument("--policies", type=int, default=1000, help="number of policies")
    parser.add_argument("--resources", type=int, default=200, help="number of subnet resources")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument(
        "--view-nodes", type=int, default=1000, help="nodes of the ALL-to-ALL view network"
    )
    args = parser.parse_args()

    document = generate_document(args.nodes, args.groups, args.policies, args.resources)
    text = render_document(document)
    print(
        f"network: {args.nodes} nodes, {args.groups} groups, {args.policies} policies, "
        f"{args.resources} resources, {len(text) / 1e6:.1f} MB of TOML"
    )
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"median of {args.runs} runs, garbage collector paused while timing"
    )
    print(f"load average before the run: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")
    print()

    parse_time, toml_time = median_seconds(
        lambda: parse_document(text), lambda: tomllib.loads(text), runs=args.runs
    )
    print(row("parse_document", parse_time, "tomllib.loads (baseline)", toml_time))

    pk = document.nodes[len(document.nodes) // 2].pk
    parsed = [parse_document(text) for _ in range(args.runs)]
    fresh = iter(parsed)
    compiled = compile_for_node(document, pk)
    cold, warm, naive = median_seconds(
        lambda: compile_for_node(next(fresh), pk),
        lambda: compile_for_node(document, pk),
        lambda: naive_peers(document, pk),
        runs=args.runs,
    )
    print(row("compile_for_node, fresh document", cold, "set expansion (baseline)", naive))
    print(row("compile_for_node, lookups reused", warm, "set expansion (baseline)", naive))
    assert {peer.pk for peer in compiled.peers if peer.node_rules} <= naive_peers(document, pk)
    print(f"  compiled node has {len(compiled.peers)} peers and {len(compiled.routes)} routes")

    packets = make_packets(document, pk)
    peers = {peer.pk: peer for peer in compiled.peers}
    decide = compiled.decide

    def per_call() -> None:
        for direction, src, dst, protocol, port, peer_pk in packets:
            decide(direction, src, dst, protocol, port, peer_pk)

    def dict_loop() -> None:
        get = peers.get
        for _direction, _src, _dst, _protocol, _port, peer_pk in packets:
            get(peer_pk)

    decide_time, batch_time, lookup_time = median_seconds(
        per_call, lambda: compiled.decide_many(packets), dict_loop, runs=args.runs
    )
    lookup_rate = len(packets) / lookup_time
    print(
        rate_row(
            "decide, one call per packet",
            len(packets) / decide_time,
            "dict lookup loop (baseline)",
            lookup_rate,
        )
    )
    print(
        rate_row(
            "decide_many, one batch",
            len(packets) / batch_time,
            "dict lookup loop (baseline)",
            lookup_rate,
        )
    )
    allowed = sum(compiled.decide_many(packets))
    print(f"  {len(packets)} packets, {allowed} allowed")

    print(f"one node's view, per node, mean over {VIEW_SAMPLE} nodes:")
    print_view_rows("this network", document, args.runs)
    print_view_rows(
        f"{args.view_nodes} nodes, one ALL-to-ALL policy",
        all_to_all_document(args.view_nodes),
        args.runs,
    )


if __name__ == "__main__":
    main()
