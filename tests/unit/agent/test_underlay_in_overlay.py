"""Networks whose subnet or resources contain the super peer's address, in the daemon.

A route into the TUN device for the super peer's address sends the agent's own traffic to the
super peer into the overlay. The agent then loses its signaling and relays, and every peer it
does not reach directly. The daemon must not install such a network or route. The
OS layer is the in-memory one and the data plane a recording test double (the real ones need
root and a TUN device).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from netsody_agent.daemon import Daemon, DaemonOptions
from netsody_agent.localapi import LocalApiClient
from netsody_agent.reconciler.oslayer import OsLayer, fake_os_layer
from netsody_agent.settings import Settings, save_settings
from netsody_common.identity import Identity

WAIT_SECONDS = 15.0
SUPER_PEER = "https://192.168.88.1:8443/"


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
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, OsLayer, Identity]]:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    me = Identity.generate(4, progress=False)
    me.save(state_dir / "identity.key")
    save_settings(state_dir, Settings(super_peers=(SUPER_PEER,)))
    layer = fake_os_layer()
    options = DaemonOptions(state_dir=state_dir, dns_host="127.0.0.1", dns_port=0)
    running = Daemon(options, os_layer=layer, dataplane_factory=RecordingDataPlane)
    await running.start()
    try:
        yield running, layer, me
    finally:
        await running.stop()


async def add_and_apply(running: Daemon, path: Path) -> None:
    await call(running.state_dir, "network.add", url=path.as_uri())
    await wait_until(
        lambda: all(s.snapshot or s.error for s in running.sources.values()),
        "the source to deliver its network or an error",
    )
    running.request_apply()
    await asyncio.wait_for(running.wait_applied(), WAIT_SECONDS)


async def test_subnet_with_super_peer_not_installed(daemon, identities, tmp_path: Path) -> None:
    running, layer, me = daemon
    _, peer, _ = identities
    path = tmp_path / "underlay.toml"
    path.write_text(
        'name = "underlay"\nnetwork = "192.168.88.0/25"\n'
        f'\n[[node]]\nhostname = "me"\nip = "192.168.88.100"\npk = "{me.pk}"\n'
        f'\n[[node]]\nhostname = "peer"\nip = "192.168.88.101"\npk = "{peer.pk}"\n'
        '\n[[policy]]\nsource_groups = ["ALL"]\ndestination_groups = ["ALL"]\n'
    )

    await add_and_apply(running, path)

    assert not any(
        IPv4Network("192.168.88.1/32").subnet_of(address.network)
        for address in layer.links.observe_addresses()
    )


async def test_resource_with_super_peer_not_routed(daemon, identities, tmp_path: Path) -> None:
    running, layer, me = daemon
    _, _, gateway = identities
    path = tmp_path / "resource.toml"
    path.write_text(
        'name = "lab"\nnetwork = "10.50.0.0/24"\n'
        f'\n[[node]]\nhostname = "me"\nip = "10.50.0.1"\npk = "{me.pk}"\n'
        f'\n[[node]]\nhostname = "gw"\nip = "10.50.0.2"\npk = "{gateway.pk}"\n'
        f'\n[[resource]]\ndest = "192.168.88.0/25"\ngw = "{gateway.pk}"\n'
        '\n[[policy]]\nsource_groups = ["ALL"]\n'
        'destination_groups = ["ALL", "resource::192.168.88.0/25"]\n'
    )

    await add_and_apply(running, path)

    routes = layer.routes.observe()
    assert not any(IPv4Network("192.168.88.1/32").subnet_of(route) for route in routes)
