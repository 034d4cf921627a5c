"""Two manually managed networks whose subnets overlap, in the daemon with the in-memory OS layer.

The daemon skips a network whose subnet equals one already applied. A subnet that contains or
lies inside another one is as ambiguous: a node of the second network may then hold the overlay
address of a node of the first, and the agent admits its packets from that address. The data
plane here is a recording test double (the real one needs a TUN device and root).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from netsody_agent.daemon import Daemon, DaemonOptions
from netsody_agent.localapi import LocalApiClient
from netsody_agent.reconciler.oslayer import fake_os_layer
from netsody_common.identity import Identity

WAIT_SECONDS = 15.0
ALLOW_ALL = '[[policy]]\nsource_groups = ["ALL"]\ndestination_groups = ["ALL"]\n'


class RecordingDataPlane:
    """Test double of `DataPlane`: records the networks of every `apply` call."""

    def __init__(self, identity: Identity, tun: Any, **options: Any) -> None:
        self.applied: list[list[Any]] = []

    async def start(self) -> None:
        return None

    async def apply(self, networks: list[Any]) -> None:
        self.applied.append(list(networks))

    def status(self) -> dict[str, Any]:
        return {"peers": []}

    def set_super_peers(self, super_peers: list[str]) -> None:
        return None

    def set_peer_endpoints(self, pk: str, endpoints: list[tuple[str, int]]) -> None:
        return None

    async def stop(self) -> None:
        return None


def document(name: str, subnet: str, nodes: dict[str, tuple[str, str]]) -> str:
    """Render a network with `nodes` (hostname to (address, pk)) and one policy from ALL to ALL."""
    text = f'name = "{name}"\nnetwork = "{subnet}"\n'
    for hostname, (address, pk) in nodes.items():
        text += f'\n[[node]]\nhostname = "{hostname}"\nip = "{address}"\npk = "{pk}"\n'
    return text + "\n" + ALLOW_ALL


async def wait_until(predicate: Callable[[], bool], description: str) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), WAIT_SECONDS)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {description}")


async def call(state_dir: Path, method: str, **params: Any) -> dict[str, Any]:
    return await asyncio.to_thread(LocalApiClient(state_dir, timeout=30).call, method, params)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Identity]]:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    me = Identity.generate(4, progress=False)
    me.save(state_dir / "identity.key")
    options = DaemonOptions(state_dir=state_dir, dns_host="127.0.0.1", dns_port=0)
    running = Daemon(options, os_layer=fake_os_layer(), dataplane_factory=RecordingDataPlane)
    await running.start()
    try:
        yield running, me
    finally:
        await running.stop()


async def test_overlapping_subnet_is_not_applied(daemon, identities, tmp_path: Path) -> None:
    running, me = daemon
    _, peer, stranger = identities
    first = tmp_path / "first.toml"
    first.write_text(
        document("first", "10.9.0.0/24", {"me": ("10.9.0.1", me.pk), "peer": ("10.9.0.2", peer.pk)})
    )
    # The stranger has the address of the first network's peer, inside a larger subnet.
    second = tmp_path / "second.toml"
    second.write_text(
        document(
            "second",
            "10.9.0.0/23",
            {"me": ("10.9.1.1", me.pk), "stranger": ("10.9.0.2", stranger.pk)},
        )
    )
    await call(running.state_dir, "network.add", url=first.as_uri())
    await call(running.state_dir, "network.add", url=second.as_uri())
    await wait_until(
        lambda: len(running.sources) == 2 and all(s.snapshot for s in running.sources.values()),
        "both sources to deliver their networks",
    )
    running.request_apply()
    await asyncio.wait_for(running.wait_applied(), WAIT_SECONDS)

    applied = running.dataplane.applied[-1]
    assert [str(network.ip) for network in applied] == ["10.9.0.1"]
