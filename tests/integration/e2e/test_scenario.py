"""The whole product on the namespace topology, step by step, with real processes.

Devices a and b sit behind endpoint-independent NATs, c behind a symmetric NAT and d behind a
router that drops UDP; lan-a is a host without an agent on the LAN behind a. The tests run in
file order and share one world: each step builds on the state the previous steps left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from harness import ADMIN_EMAIL, Admin, Agent, Services, sign_in_with_pkce, wait_for
from topology import LAN_HOST_ADDRESS, LAN_NETWORK, Topology

pytestmark = pytest.mark.root

NETWORK_SUBNET = "10.200.0.0/24"
GROUPS = {"a": ["office"], "b": ["office"], "c": ["remote"], "d": ["remote"]}
# The office policy permits every pair except c-d (both only in "remote"): default deny.
PERMITTED_PAIRS = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
DENIED_PAIRS = [("c", "d")]
EXPECTED_PATHS = {("a", "b"): "direct", ("c", "a"): "relay-h3", ("d", "a"): "relay-h2"}
CONVERGE_TIMEOUT = 45.0
POLICY_TIMEOUT = 30.0


@dataclass
class World:
    topology: Topology
    services: Services
    agents: dict[str, Agent]
    admin: Admin | None = None
    network_id: str = ""
    policy: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    iptables_before: dict[str, str] = field(default_factory=dict)
    overlay_ready: bool = False


@pytest.fixture(scope="module")
def world(topology: Topology) -> Iterator[World]:
    services = Services(topology)
    services.start_controller()
    services.start_superpeer()
    agents = {name: Agent(topology, name) for name in GROUPS}
    result = World(topology, services, agents)
    for name, agent in agents.items():
        result.iptables_before[name] = topology.run(agent.role, "iptables-save").stdout
    yield result
    for agent in agents.values():
        agent.stop()


def require_overlay(world: World) -> None:
    """Fail at once when step 3 found no overlay traffic, instead of waiting for it again."""
    if not world.overlay_ready:
        pytest.fail("no overlay traffic: the ping step between permitted pairs did not pass")


def overlay_ip(world: World, device: str) -> str:
    return world.agents[device].node["ip"]


def wait_ping(world: World, source: str, target: str, *, timeout: float = CONVERGE_TIMEOUT) -> None:
    agent = world.agents[source]
    wait_for(lambda: agent.ping(target), f"ping from dev-{source} to {target}", timeout=timeout)


def peer_path(agent: Agent, pk: str) -> str | None:
    for peer in agent.status().get("peers", []):
        if peer.get("pk") == pk:
            return peer.get("path")
    return None


# Step 1: sign-in and pairing


def test_devices_log_in_with_device_flow(world: World) -> None:
    for name in ("a", "b", "c"):
        agent = world.agents[name]
        agent.start()
        agent.pk = agent.status()["identity"]
        agent.login(world.services, ADMIN_EMAIL)

    world.admin = Admin(world.services, sign_in_with_pkce(world.services, ADMIN_EMAIL))
    devices = world.admin.call("GET", "/devices", expect=200)

    assert {device["pk"] for device in devices} == {world.agents[n].pk for n in ("a", "b", "c")}
    for name in ("a", "b", "c"):
        assert world.agents[name].status()["logged_in"] is True


# Step 2: the administrator builds the network


def test_admin_builds_network(world: World) -> None:
    admin = world.admin
    assert admin is not None, "step 1 did not sign the administrator in"
    network = admin.call("POST", "/networks", {"name": "e2e", "subnet": NETWORK_SUBNET}, expect=201)
    world.network_id = network["id"]
    base = f"/networks/{world.network_id}"

    devices = {device["pk"]: device for device in admin.call("GET", "/devices", expect=200)}
    for name in ("a", "b", "c"):
        agent = world.agents[name]
        body = {
            "device_id": devices[agent.pk]["id"],
            "hostname": agent.hostname,
            "groups": GROUPS[name],
        }
        agent.node = admin.call("POST", f"{base}/nodes", body, expect=201)

    key = admin.call(
        "POST",
        f"{base}/join-keys",
        {"name": "headless", "groups": GROUPS["d"], "max_uses": 1},
        expect=201,
    )
    world.agents["d"].start()
    world.agents["d"].pk = world.agents["d"].status()["identity"]
    joined = world.agents["d"].join(key["secret"])
    assert joined.returncode == 0, joined.stdout + joined.stderr
    nodes = {node["pk"]: node for node in admin.call("GET", f"{base}/nodes", expect=200)}
    node_d = nodes[world.agents["d"].pk]
    world.agents["d"].node = admin.call(
        "PATCH", f"{base}/nodes/{node_d['id']}", {"hostname": "dev-d"}, expect=200
    )

    for policy in admin.call("GET", f"{base}/policies", expect=200):
        admin.call("DELETE", f"{base}/policies/{policy['id']}", expect=204)
    world.policy = admin.call(
        "POST",
        f"{base}/policies",
        {
            "name": "office",
            "sources": {"groups": ["office"]},
            "destinations": {"groups": ["office", "remote"]},
        },
        expect=201,
    )
    world.resource = admin.call(
        "POST",
        f"{base}/resources",
        {
            "name": "lan-a",
            "dest": str(LAN_NETWORK),
            "gateway_node_id": world.agents["a"].node["id"],
            "groups": ["lan"],
        },
        expect=201,
    )
    admin.call(
        "POST",
        f"{base}/policies",
        {
            "name": "lan",
            "sources": {"nodes": [world.agents["b"].node["id"]]},
            "destinations": {"resources": [world.resource["id"]]},
        },
        expect=201,
    )

    nodes = admin.call("GET", f"{base}/nodes", expect=200)
    assert sorted(node["hostname"] for node in nodes) == ["dev-a", "dev-b", "dev-c", "dev-d"]
    assert {tuple(node["groups"]) for node in nodes} >= {("office",), ("remote",)}
    assert len(admin.call("GET", f"{base}/policies", expect=200)) == 2


# Step 3: interfaces, addresses, ping and paths


def test_agents_bring_up_interfaces(world: World) -> None:
    for agent in world.agents.values():
        address = agent.node["ip"]

        def applied(agent: Agent = agent, address: str = address) -> bool:
            shown = agent.topology.run(
                agent.role, "ip", "-o", "-4", "addr", "show", "dev", "netsody", check=False
            )
            return f" {address}/" in shown.stdout

        wait_for(applied, f"{address} on netsody in {agent.role}", timeout=CONVERGE_TIMEOUT)
        networks = agent.status()["networks"]
        assert [net["address"] for net in networks if net.get("state") == "applied"] == [address]


def test_ping_between_permitted_pairs(world: World) -> None:
    for source, target in PERMITTED_PAIRS:
        wait_ping(world, source, overlay_ip(world, target))
        wait_ping(world, target, overlay_ip(world, source))
        wait_ping(world, source, f"dev-{target}.netsody.me")
    world.overlay_ready = True

    for source, target in DENIED_PAIRS:
        assert not world.agents[source].ping(overlay_ip(world, target), count=2)


def test_path_kind_per_pair(world: World) -> None:
    require_overlay(world)
    for (observer, peer), expected in EXPECTED_PATHS.items():
        agent, peer_pk = world.agents[observer], world.agents[peer].pk
        wait_for(
            lambda agent=agent, peer_pk=peer_pk, expected=expected: (
                peer_path(agent, peer_pk) == expected
            ),
            f"path {expected} from dev-{observer} to dev-{peer}",
            timeout=CONVERGE_TIMEOUT,
        )
        assert peer_path(agent, peer_pk) == expected


# Step 4: TCP over each path kind


@pytest.mark.parametrize(
    ("client", "server"),
    [("b", "a"), ("c", "a"), ("d", "a")],
    ids=["direct", "relay-h3", "relay-h2"],
)
def test_tcp_transfer_over_path(world: World, client: str, server: str) -> None:
    require_overlay(world)
    topology = world.topology
    iperf = topology.spawn(
        world.agents[server].role,
        ["iperf3", "-s", "-1", "-B", overlay_ip(world, server)],
        name=f"iperf3-{server}-{client}",
    )
    try:
        wait_for(
            lambda: (
                topology.run(world.agents[server].role, "ss", "-ltn", "sport = :5201").stdout.count(
                    "LISTEN"
                )
                > 0
            ),
            "iperf3 listening",
        )
        result = topology.run(
            world.agents[client].role,
            "iperf3",
            "-c",
            overlay_ip(world, server),
            "-t",
            "2",
            "-J",
            check=False,
            timeout=60,
        )
    finally:
        topology.stop(iperf)
    assert result.returncode == 0, result.stdout[-2000:]
    report = json.loads(result.stdout)
    assert report["end"]["sum_received"]["bytes"] > 0


# Step 5: policy removal and restoration


def test_policy_removal_stops_and_restores_traffic(world: World) -> None:
    require_overlay(world)
    admin, base = world.admin, f"/networks/{world.network_id}"
    assert admin is not None
    wait_ping(world, "a", overlay_ip(world, "b"))

    admin.call("DELETE", f"{base}/policies/{world.policy['id']}", expect=204)
    stopped_after = wait_for(
        lambda: not world.agents["a"].ping(overlay_ip(world, "b"), wait=1),
        "traffic a to b stopped after the policy was removed",
        timeout=POLICY_TIMEOUT,
    )
    body = {
        key: world.policy[key] for key in ("name", "sources", "destinations", "rules", "conditions")
    }
    world.policy = admin.call("POST", f"{base}/policies", body, expect=201)
    wait_ping(world, "a", overlay_ip(world, "b"), timeout=POLICY_TIMEOUT)

    print(f"traffic stopped {stopped_after:.1f} s after the policy was removed")


# Step 6: resource through the gateway


def test_resource_reachable_through_gateway(world: World) -> None:
    require_overlay(world)
    wait_ping(world, "b", LAN_HOST_ADDRESS)
    assert not world.agents["c"].ping(LAN_HOST_ADDRESS, count=2)


# Step 7: faults


def test_traffic_survives_controller_outage(world: World) -> None:
    require_overlay(world)
    admin, base = world.admin, f"/networks/{world.network_id}"
    assert admin is not None
    world.services.stop_controller()
    assert world.agents["a"].ping(overlay_ip(world, "b"), count=3)

    world.services.start_controller()
    node_b = world.agents["b"].node
    admin.call(
        "PATCH", f"{base}/nodes/{node_b['id']}", {"groups": [*GROUPS["b"], "resynced"]}, expect=200
    )
    revision = admin.call("GET", f"{base}", expect=200)["revision"]
    for agent in world.agents.values():
        wait_for(
            lambda agent=agent: (agent.status().get("revision") or 0) >= revision,
            f"{agent.role} applied revision {revision}",
            timeout=CONVERGE_TIMEOUT,
        )


def test_relayed_pairs_recover_after_super_peer_restart(world: World) -> None:
    require_overlay(world)
    world.services.stop_superpeer()
    world.services.start_superpeer()
    wait_ping(world, "c", overlay_ip(world, "a"))
    wait_ping(world, "d", overlay_ip(world, "a"))


def test_peers_reconnect_after_agent_restart(world: World) -> None:
    require_overlay(world)
    world.agents["b"].stop(kill=True)
    world.agents["b"].start()
    wait_ping(world, "a", overlay_ip(world, "b"))
    wait_ping(world, "c", overlay_ip(world, "b"))


# Step 8: shutdown


def test_shutdown_leaves_nothing_behind(world: World) -> None:
    for agent in world.agents.values():
        agent.stop()

    for name, agent in world.agents.items():
        links = world.topology.run(agent.role, "ip", "-o", "link", "show").stdout
        routes = world.topology.run(agent.role, "ip", "-4", "route", "show", "table", "all").stdout
        rules = world.topology.run(agent.role, "iptables-save").stdout
        assert "netsody" not in links, links
        assert "netsody" not in routes, routes
        assert _rules(rules) == _rules(world.iptables_before[name]), f"{agent.role}:\n{rules}"
        assert world.topology.pids(agent.role) == []


BUILTIN_CHAINS = {"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"}


def _rules(dump: str) -> list[str]:
    """Return the rules and user-defined chains of an iptables-save dump.

    An empty table with only its built-in chains is no leftover: listing a table creates it.
    """
    kept = []
    for line in dump.splitlines():
        if line.startswith("-A "):
            kept.append(line)
        elif line.startswith(":") and line[1:].split(" ", 1)[0] not in BUILTIN_CHAINS:
            kept.append(line.split(" ", 1)[0])
    return kept
