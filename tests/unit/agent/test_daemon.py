"""The daemon with the in-memory OS layer: local API, file source, apply, cache and cleanup.

The data plane here is a recording test double (the real one needs a TUN device and root; the
integration tests run it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from netsody_agent.daemon import Daemon, DaemonOptions
from netsody_agent.errors import AgentError, LocalApiError
from netsody_agent.localapi import LocalApiClient
from netsody_agent.reconciler.oslayer import OsLayer, fake_os_layer
from netsody_agent.settings import ManualNetwork, Settings, load_settings, save_settings
from netsody_common.identity import Identity

WAIT_SECONDS = 15.0


class RecordingDataPlane:
    """Test double of `DataPlane`: records every `apply` call."""

    def __init__(
        self,
        identity: Identity,
        tun: Any,
        *,
        super_peers: list[str],
        listen_port: int,
        super_peer_cafile: str | None,
    ) -> None:
        self.super_peers = super_peers
        self.applied: list[list[Any]] = []
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def apply(self, networks: list[Any]) -> None:
        self.applied.append(list(networks))

    def status(self) -> dict[str, Any]:
        peers = self.applied[-1][0].peers if self.applied and self.applied[-1] else ()
        return {"peers": [{"pk": p.pk, "hostname": p.hostname, "path": "none"} for p in peers]}

    def set_super_peers(self, super_peers: list[str]) -> None:
        self.super_peers = super_peers

    def set_peer_endpoints(self, pk: str, endpoints: list[tuple[str, int]]) -> None:
        return None

    async def stop(self) -> None:
        self.running = False


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` (state that changes in other tasks) until it is true or time runs out."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), WAIT_SECONDS)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def call(state_dir: Path, method: str, **params: Any) -> dict[str, Any]:
    return await asyncio.to_thread(LocalApiClient(state_dir, timeout=30).call, method, params)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def me(state_dir: Path) -> Identity:
    state_dir.mkdir()
    identity = Identity.generate(4, progress=False)
    identity.save(state_dir / "identity.key")
    return identity


async def start_daemon(state_dir: Path, layer: OsLayer) -> Daemon:
    options = DaemonOptions(state_dir=state_dir, dns_host="127.0.0.1", dns_port=0)
    daemon = Daemon(options, os_layer=layer, dataplane_factory=RecordingDataPlane)
    await daemon.start()
    return daemon


@pytest.fixture
async def running(state_dir: Path, me: Identity) -> AsyncIterator[tuple[Daemon, OsLayer]]:
    layer = fake_os_layer()
    daemon = await start_daemon(state_dir, layer)
    try:
        yield daemon, layer
    finally:
        await daemon.stop()


async def test_network_add_applies_file(running, me, identities, lab, tmp_path) -> None:
    daemon, layer = running
    _, peer, gateway = identities
    doc = tmp_path / "lab.toml"
    doc.write_text(lab(me.pk, peer.pk, gateway.pk))
    result = await call(daemon.state_dir, "network.add", url=doc.as_uri())
    assert result["networks"] == ["lab"]
    assert result["error"] is None
    assert layer.links.observe_addresses() == {IPv4Interface("10.77.0.10/24")}
    assert layer.routes.observe() == {IPv4Network("192.168.50.0/24")}
    assert layer.firewall.observe_forwarding()[0]
    assert daemon.records.names()["beta.netsody.me"] == "10.77.0.11"
    assert [net.ip for net in daemon.dataplane.applied[-1]] == [IPv4Address("10.77.0.10")]
    status = await call(daemon.state_dir, "status")
    assert status["identity"] == me.pk
    assert status["networks"][0]["state"] == "applied"
    assert {peer["hostname"] for peer in status["peers"]} == {"beta", "gamma"}


async def test_invalid_change_keeps_last_valid(running, me, identities, lab, tmp_path) -> None:
    daemon, layer = running
    _, peer, gateway = identities
    doc = tmp_path / "lab.toml"
    doc.write_text(lab(me.pk, peer.pk, gateway.pk))
    await call(daemon.state_dir, "network.add", url=doc.as_uri())
    doc.write_text(lab(me.pk, peer.pk, gateway.pk).replace('"10.77.0.11"', '"10.99.0.11"'))

    def has_error() -> bool:
        return any(state.error for state in daemon.sources.values())

    await wait_until(has_error, "the invalid document to be reported")
    status = await call(daemon.state_dir, "status")
    assert "10.99.0.11" in status["networks"][0]["error"]
    assert "keeping the last valid configuration" in status["networks"][0]["error"]
    assert layer.links.observe_addresses() == {IPv4Interface("10.77.0.10/24")}
    assert daemon.records.names()["beta.netsody.me"] == "10.77.0.11"


async def test_unsafe_overlay_network_not_installed(running, me, identities, lab, tmp_path) -> None:
    daemon, layer = running
    _, peer, gateway = identities
    doc = tmp_path / "lab.toml"
    doc.write_text(lab(me.pk, peer.pk, gateway.pk))
    await call(daemon.state_dir, "network.add", url=doc.as_uri())
    await wait_until(lambda: daemon.records.names(), "the first document to be applied")
    doc.write_text(lab(me.pk, peer.pk, gateway.pk).replace('"10.77.0.', '"169.254.0.'))

    def has_error() -> bool:
        return any(state.error for state in daemon.sources.values())

    await wait_until(has_error, "the unsafe network to be reported")
    status = await call(daemon.state_dir, "status")
    assert "169.254.0.0/24 is link-local address space" in status["networks"][0]["error"]
    assert layer.links.observe_addresses() == {IPv4Interface("10.77.0.10/24")}


async def test_change_keeps_unaffected_peers(running, me, identities, lab, tmp_path) -> None:
    daemon, layer = running
    _, peer, gateway = identities
    doc = tmp_path / "lab.toml"
    doc.write_text(lab(me.pk, peer.pk, gateway.pk))
    await call(daemon.state_dir, "network.add", url=doc.as_uri())
    applies = len(daemon.dataplane.applied)
    doc.write_text(lab(me.pk, peer.pk, gateway.pk, peer_name="bravo"))
    await wait_until(lambda: "bravo.netsody.me" in daemon.records.names(), "the renamed peer")
    assert "beta.netsody.me" not in daemon.records.names()
    assert len(daemon.dataplane.applied) == applies + 1
    assert layer.links.observe_addresses() == {IPv4Interface("10.77.0.10/24")}


async def test_disable_and_enable(running, me, identities, lab, tmp_path) -> None:
    daemon, layer = running
    _, peer, gateway = identities
    doc = tmp_path / "lab.toml"
    doc.write_text(lab(me.pk, peer.pk, gateway.pk))
    await call(daemon.state_dir, "network.add", url=doc.as_uri())
    await call(daemon.state_dir, "network.disable", url=doc.as_uri())
    assert layer.links.observe_addresses() == frozenset()
    assert layer.firewall.observe_nat_rules() == frozenset()
    status = await call(daemon.state_dir, "status")
    assert [net["state"] for net in status["networks"]] == ["disabled"]
    await call(daemon.state_dir, "network.enable", url=doc.as_uri())
    assert layer.links.observe_addresses() == {IPv4Interface("10.77.0.10/24")}


async def test_remove_unknown_network_fails(running) -> None:
    daemon, _ = running
    with pytest.raises(LocalApiError, match=r"no manual network with URL file:///nope\.toml"):
        await call(daemon.state_dir, "network.remove", url="file:///nope.toml")


async def test_add_rejects_unsupported_scheme(running) -> None:
    daemon, _ = running
    with pytest.raises(LocalApiError, match="use file:///path or https://host/path"):
        await call(daemon.state_dir, "network.add", url="ftp://host/lab.toml")


async def test_restart_uses_cached_config(state_dir, me, identities, lab, tmp_path) -> None:
    _, peer, gateway = identities
    doc = tmp_path / "lab.toml"
    doc.write_text(lab(me.pk, peer.pk, gateway.pk))
    first = await start_daemon(state_dir, fake_os_layer())
    try:
        await call(state_dir, "network.add", url=doc.as_uri())
    finally:
        await first.stop()
    doc.unlink()
    layer = fake_os_layer()
    second = await start_daemon(state_dir, layer)
    try:
        await wait_until(lambda: bool(second.applied), "the cached configuration to apply")
        assert layer.links.observe_addresses() == {IPv4Interface("10.77.0.10/24")}
        await wait_until(
            lambda: any(state.error for state in second.sources.values()), "the source error"
        )
    finally:
        await second.stop()
    assert layer.links.observe_addresses() == frozenset()
    assert layer.firewall.observe_forward_rules() == frozenset()


async def test_settings_file_is_private(running) -> None:
    daemon, _ = running
    await call(daemon.state_dir, "settings.update", controller="https://c.example/api")
    path = daemon.state_dir / "settings.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["controller"] == "https://c.example/api"


async def test_auth_url_needs_client_id(running) -> None:
    daemon, _ = running
    with pytest.raises(
        LocalApiError, match="--auth-url and --auth-client-id must be given together"
    ):
        await call(daemon.state_dir, "settings.update", auth_url="https://id.example")


async def test_second_daemon_on_same_state_dir_fails(running) -> None:
    daemon, _ = running
    second = Daemon(
        DaemonOptions(state_dir=daemon.state_dir, dns_host="127.0.0.1", dns_port=0),
        os_layer=fake_os_layer(),
        dataplane_factory=RecordingDataPlane,
    )
    with pytest.raises(AgentError, match="another netsody daemon uses the state directory"):
        await second.start()
    await second.stop()
    status = await call(daemon.state_dir, "status")
    assert status["identity"] == daemon.pk


async def test_reload_reads_settings_changed_on_disk(running, tmp_path: Path) -> None:
    daemon, _layer = running
    network = tmp_path / "added.toml"
    network.write_text('name = "added"\nnetwork = "10.77.0.0/24"\n')
    settings = load_settings(daemon.state_dir)
    save_settings(
        daemon.state_dir,
        dataclasses.replace(settings, manual_networks=(ManualNetwork(network.as_uri()),)),
    )

    await daemon.reload()

    assert ManualNetwork(network.as_uri()).source_id in daemon.sources


async def test_invalid_first_document_says_nothing_is_kept(running, tmp_path) -> None:
    daemon, _layer = running
    doc = tmp_path / "broken.toml"
    doc.write_text('name = "broken"\nnetwork = "not a subnet"\n')
    await call(daemon.state_dir, "network.add", url=doc.as_uri())

    await wait_until(
        lambda: any(state.error for state in daemon.sources.values()), "the invalid document"
    )
    status = await call(daemon.state_dir, "status")
    assert "no valid configuration from this source yet" in status["networks"][0]["error"]


ALLOW_ALL = '[[policy]]\nsource_groups = ["ALL"]\ndestination_groups = ["ALL"]\n'


def document(name: str, subnet: str, nodes: dict[str, tuple[str, str]]) -> str:
    """Render a network with `nodes` (hostname to (address, pk)) and one policy from ALL to ALL."""
    text = f'name = "{name}"\nnetwork = "{subnet}"\n'
    for hostname, (address, pk) in nodes.items():
        text += f'\n[[node]]\nhostname = "{hostname}"\nip = "{address}"\npk = "{pk}"\n'
    return text + "\n" + ALLOW_ALL


async def add_and_apply(running: Daemon, path: Path) -> None:
    await call(running.state_dir, "network.add", url=path.as_uri())
    await wait_until(
        lambda: all(s.snapshot or s.error for s in running.sources.values()),
        "the source to deliver its network or an error",
    )
    running.request_apply()
    await asyncio.wait_for(running.wait_applied(), WAIT_SECONDS)


async def test_overlapping_subnet_is_not_applied(running, me, identities, tmp_path: Path) -> None:
    """SECURITY: in overlapping subnets a node of one network could pass as a node of the other."""
    daemon, _layer = running
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
    await add_and_apply(daemon, first)
    await add_and_apply(daemon, second)

    applied = daemon.dataplane.applied[-1]
    assert [str(network.ip) for network in applied] == ["10.9.0.1"]


SUPER_PEER = "https://192.168.88.1:8443/"


@pytest.fixture
async def with_super_peer(state_dir: Path, me: Identity) -> AsyncIterator[tuple[Daemon, OsLayer]]:
    """A daemon whose settings name a super peer by address (which no overlay may cover)."""
    save_settings(state_dir, Settings(super_peers=(SUPER_PEER,)))
    layer = fake_os_layer()
    daemon = await start_daemon(state_dir, layer)
    try:
        yield daemon, layer
    finally:
        await daemon.stop()


async def test_subnet_with_super_peer_not_installed(
    with_super_peer, me, identities, tmp_path: Path
) -> None:
    """SECURITY: an overlay subnet over the super peer's address would cut the agent off it."""
    running, layer = with_super_peer
    _, peer, _ = identities
    path = tmp_path / "underlay.toml"
    path.write_text(
        document(
            "underlay",
            "192.168.88.0/25",
            {"me": ("192.168.88.100", me.pk), "peer": ("192.168.88.101", peer.pk)},
        )
    )

    await add_and_apply(running, path)

    assert not any(
        IPv4Network("192.168.88.1/32").subnet_of(address.network)
        for address in layer.links.observe_addresses()
    )


async def test_resource_with_super_peer_not_routed(
    with_super_peer, me, identities, tmp_path: Path
) -> None:
    """SECURITY: a resource route over the super peer's address would cut the agent off it."""
    running, layer = with_super_peer
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
