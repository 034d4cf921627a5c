"""Two `netsody run` daemons in namespaces joined by a veth pair reach each other.

The underlay addresses 192.168.88.1 and .2 exist only inside the two namespaces; the daemons
find each other through `--peer-endpoint` (no super peer runs here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import AgentNamespace, new_agent, remove_agent, run, wait_for

pytestmark = pytest.mark.root

PORT = "7000"
UNDERLAY = ("192.168.88.1", "192.168.88.2")

DOCUMENT = """
name = "pair"
network = "10.55.0.0/24"

[[node]]
hostname = "left"
ip = "10.55.0.1"
pk = "{left}"

[[node]]
hostname = "right"
ip = "10.55.0.2"
pk = "{right}"

[[policy]]
source_groups = ["ALL"]
destination_groups = ["ALL"]
"""


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[AgentNamespace, AgentNamespace]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    agents: list[AgentNamespace] = []
    try:
        agents = [new_agent(tmp_path / "left"), new_agent(tmp_path / "right")]
        left, right = agents
        run("ip", "link", "add", "nsd-veth-l", "netns", left.namespace, "type", "veth",
            "peer", "name", "nsd-veth-r", "netns", right.namespace)  # fmt: skip
        for agent, device, address in zip(
            agents, ("nsd-veth-l", "nsd-veth-r"), UNDERLAY, strict=True
        ):
            agent.exec("ip", "addr", "add", f"{address}/24", "dev", device)
            agent.exec("ip", "link", "set", device, "up")
        yield left, right
    finally:
        for agent in agents:
            remove_agent(agent)


def ping(agent: AgentNamespace, address: str) -> bool:
    return agent.exec("ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


def test_two_daemons_ping_over_overlay(pair, tmp_path: Path) -> None:
    left, right = pair
    document = tmp_path / "pair.toml"
    document.write_text(DOCUMENT.format(left=left.identity.pk, right=right.identity.pk))
    left.start(
        "--listen-port", PORT, "--peer-endpoint", f"{right.identity.pk}={UNDERLAY[1]}:{PORT}"
    )
    right.start(
        "--listen-port", PORT, "--peer-endpoint", f"{left.identity.pk}={UNDERLAY[0]}:{PORT}"
    )
    left.netsody("network", "add", document.as_uri())
    right.netsody("network", "add", document.as_uri())

    wait_for(lambda: ping(left, "10.55.0.2"), "a ping from left to right over the overlay")
    assert ping(right, "10.55.0.1")
    peers = left.status()["peers"]
    assert [(peer["hostname"], peer["path"]) for peer in peers] == [("right", "direct")]
    assert peers[0]["bytes_out"] > 0

    assert left.stop() == 0
    assert right.stop() == 0
