"""The agent daemon (`netsody run`): identity, TUN device, configuration sync, reconciler,
DNS resolver, data plane and the local API.

`start()` sets everything up and restores the cached configuration, so the node comes up even
when its sources are unreachable. Names of domain resources go through `netsody_agent.domains`:
addresses learned there are routed (client) or forwarded (gateway) by the next apply, and the
expiry loop removes them again. `run()` waits for SIGTERM or SIGINT. `stop()` removes every
address, route, firewall rule and resolver setting the daemon installed and deletes the TUN
device.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netsody_agent import __version__
from netsody_agent.apihandlers import handlers
from netsody_agent.controller import ControllerClient, os_name
from netsody_agent.desired import (
    DEFAULT_MTU,
    AppliedNetwork,
    build_desired,
    route_conflict,
    unsafe_overlay_reason,
)
from netsody_agent.dns import DnsResolver, RecordTable
from netsody_agent.domains import (
    RESOLV_CONF,
    DomainForwarder,
    GatewayListeners,
    GatewayResolver,
    read_nameservers,
)
from netsody_agent.errors import AgentError, ConfigSourceError, ControllerError
from netsody_agent.localapi import LocalApiServer
from netsody_agent.netif import local_ipv4_addresses
from netsody_agent.netsync import SourceRunner, SourceState
from netsody_agent.reconciler import Reconciler
from netsody_agent.reconciler.oslayer import OsLayer
from netsody_agent.settings import IDENTITY_FILE, Settings, load_settings, save_settings
from netsody_agent.sources import (
    CONTROLLER_SOURCE_ID,
    ControllerSource,
    FileSource,
    HttpsSource,
    Snapshot,
    SnapshotCache,
    Source,
)
from netsody_common.document import DocumentError, parse_document
from netsody_common.identity import Identity, IdentityError, pow_difficulty_from_env
from netsody_common.policy import PolicyError, compile_for_node

logger = logging.getLogger(__name__)

DEFAULT_DEVICE = "netsody"
DEFAULT_DNS_HOST = "127.0.0.153"
DNS_PORT = 53
APPLY_STOP_TIMEOUT_SECONDS = 60
# How long a DNS answer for a domain resource waits for its routes or rules to be installed.
LEARN_APPLY_TIMEOUT_SECONDS = 10
EXPIRE_INTERVAL_SECONDS = 5
LOCK_FILE = "daemon.lock"


@dataclass(frozen=True)
class DaemonOptions:
    """Options of `netsody run`."""

    state_dir: Path
    device: str = DEFAULT_DEVICE
    mtu: int = DEFAULT_MTU
    dns_host: str = DEFAULT_DNS_HOST
    dns_port: int = DNS_PORT
    listen_port: int = 0
    peer_endpoints: tuple[tuple[str, str, int], ...] = ()
    super_peer_ca: str | None = None
    resolv_conf: Path = RESOLV_CONF


def load_or_create_identity(state_dir: Path) -> Identity:
    """Load `<state>/identity.key`, or generate and save it (mode 0600) on first start."""
    path = state_dir / IDENTITY_FILE
    if path.exists():
        return Identity.load(path)
    logger.info("generating the node identity (proof of work); this takes a few seconds")
    identity = Identity.generate(pow_difficulty_from_env(), progress=sys.stderr.isatty())
    identity.save(path)
    logger.info("identity generated and saved to %s", path)
    return identity


class Daemon:
    """The running agent. `os_layer` and `dataplane_factory` are replaceable for tests."""

    def __init__(
        self,
        options: DaemonOptions,
        *,
        os_layer: OsLayer | None = None,
        dataplane_factory: Any = None,
    ) -> None:
        self.options = options
        self.state_dir = options.state_dir
        self._os_layer = os_layer
        self._dataplane_factory = dataplane_factory
        self.identity: Identity | None = None
        self.settings = Settings()
        self.tun: Any = None
        self.reconciler: Reconciler | None = None
        self.dataplane: Any = None
        self.dataplane_error: str | None = None
        self.records = RecordTable()
        self.resolver: DnsResolver | None = None
        self.resolver_error: str | None = None
        # The compiled networks that domain names resolve against, switched with each apply
        # before anything is awaited, so a name is never learned into a replaced network.
        self.domain_networks: list[Any] = []
        self.forwarder = DomainForwarder(
            lambda: self.domain_networks,
            self._learned_changed,
            protected=self.protected_addresses,
        )
        self.gateway_listeners = GatewayListeners(self._gateway_resolver, device=None)
        self._compiled_by_id: dict[str, Any] = {}
        self._dataplane_networks: list[Any] | None = None
        self._expire_task: asyncio.Task[None] | None = None
        self.sources: dict[str, SourceState] = {}
        self.runner = SourceRunner(SnapshotCache(self.state_dir), self.validate, self.request_apply)
        self.api: LocalApiServer | None = None
        self.applied: list[AppliedNetwork] = []
        self.apply_errors: list[str] = []
        self.applied_revision: int | None = None
        self._apply_wanted = asyncio.Event()
        self._apply_done = asyncio.Event()
        self._apply_task: asyncio.Task[None] | None = None
        self._report_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock_fd: int | None = None

    @property
    def pk(self) -> str:
        assert self.identity is not None
        return self.identity.pk

    # Lifecycle

    async def start(self) -> None:
        """Set up identity, TUN device, reconciler, resolver, data plane, sources and local API."""
        if not sys.platform.startswith("linux"):
            raise AgentError(f"netsody run is not supported on this platform ({sys.platform})")
        self.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._lock_state_dir()
        logger.info("netsody agent %s starting, state directory %s", __version__, self.state_dir)
        try:
            self.identity = await asyncio.to_thread(load_or_create_identity, self.state_dir)
        except IdentityError as exc:
            raise AgentError(f"cannot load the identity: {exc}") from exc
        logger.info("node id %s", self.pk)
        self.settings = load_settings(self.state_dir)
        self._open_tun()
        await self._start_resolver()
        await self._start_dataplane()
        self._apply_task = asyncio.create_task(self._apply_loop(), name="apply")
        self._expire_task = asyncio.create_task(self._expire_loop(), name="expire-learned")
        for state in self._wanted_sources().values():
            self._add_source(state)
        self.request_apply()
        self.api = LocalApiServer(self.state_dir, handlers(self))
        await self.api.start()
        logger.info("netsody agent started")

    async def run(self) -> None:
        """Start, wait for SIGTERM or SIGINT, stop. SIGHUP reloads (see `reload`)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        try:
            await self.start()
            await self._stop.wait()
            logger.info("shutdown requested")
        finally:
            await self.stop()

    def _on_hangup(self) -> None:
        logger.info("SIGHUP received: reloading the settings and the configuration")
        self._reload_task = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> None:
        """Read the settings file again, restart changed sources and apply the configuration."""
        try:
            self.settings = load_settings(self.state_dir)
        except AgentError as exc:
            logger.error("reload failed, keeping the current settings: %s", exc)
            return
        await self.sync_sources()

    def request_stop(self) -> None:
        """Make `run()` return after a clean shutdown."""
        self._stop.set()

    async def stop(self) -> None:
        """Remove everything the agent installed and close the TUN device."""
        if self.api is not None:
            await self.api.stop()
        for state in list(self.sources.values()):
            await self.runner.stop(state)
        self.sources.clear()
        await self._stop_apply_loop()
        if self._expire_task is not None:
            self._expire_task.cancel()
            await asyncio.gather(self._expire_task, return_exceptions=True)
        self.gateway_listeners.stop()

        if self._report_task is not None:
            self._report_task.cancel()
            await asyncio.gather(self._report_task, return_exceptions=True)
        if self.dataplane is not None:
            try:
                await self.dataplane.stop()
            except Exception:
                logger.exception("stopping the data plane failed")

        if self.reconciler is not None:
            try:
                errors = await asyncio.to_thread(self.reconciler.teardown)
            except Exception as exc:
                logger.exception("removing the installed addresses, routes and rules failed")
                errors = [str(exc)]
            for error in errors:
                logger.error("cleanup failed: %s", error)
        if self.resolver is not None:
            self.resolver.stop()
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        logger.info("netsody agent stopped")

    def _lock_state_dir(self) -> None:
        """Take `<state>/daemon.lock`, so a second daemon cannot take over the socket and TUN."""
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentError(
                f"another netsody daemon uses the state directory {self.state_dir}: stop it "
                "first or pass another --state-dir"
            ) from None
        self._lock_fd = fd

    def _open_tun(self) -> None:
        if self._os_layer is not None:
            self.reconciler = Reconciler(self._os_layer)
            return
        from netsody_agent.reconciler.linux import LinuxLinks, linux_os_layer
        from netsody_agent.tun import TunError, open_tun

        try:
            self.tun = open_tun(self.options.device)
            self.tun.set_mtu(self.options.mtu)
            self.tun.set_up(True)
        except TunError as exc:
            raise AgentError(str(exc)) from exc
        self.gateway_listeners.device = self.tun.name
        layer = linux_os_layer(self.tun.name, self.state_dir)
        assert isinstance(layer.links, LinuxLinks)
        self.reconciler = Reconciler(layer)

    async def _start_resolver(self) -> None:
        resolver = DnsResolver(
            self.options.dns_host, self.options.dns_port, self.records, self.forwarder
        )
        try:
            await resolver.start()
        except OSError as exc:
            self.resolver_error = (
                f"cannot listen on {self.options.dns_host}:{self.options.dns_port}: {exc}"
            )
            logger.error("DNS resolver not started: %s", self.resolver_error)
            return
        self.resolver = resolver

    async def _start_dataplane(self) -> None:
        factory = self._dataplane_factory
        if factory is None:
            try:
                from netsody_agent.dataplane import DataPlane

                factory = DataPlane
            except ImportError as exc:
                self.dataplane_error = f"data plane unavailable: {exc}"
                logger.error("%s; peers will not be reached", self.dataplane_error)
                return
        try:
            self.dataplane = factory(
                self.identity,
                self.tun,
                super_peers=list(self.settings.super_peers),
                listen_port=self.options.listen_port,
                super_peer_cafile=self.options.super_peer_ca,
            )
            await self.dataplane.start()
            for pk, host, port in self.options.peer_endpoints:
                self.dataplane.set_peer_endpoints(pk, [(host, port)])
        except Exception as exc:
            self.dataplane = None
            self.dataplane_error = f"data plane failed to start: {exc}"
            logger.exception("data plane failed to start")

    # Sources

    def _wanted_sources(self) -> dict[str, SourceState]:
        """Return a fresh state for every source the settings ask for, by source id."""
        wanted: dict[str, SourceState] = {}
        settings = self.settings
        if settings.controller and settings.node_credential:
            client = ControllerClient(settings.controller, credential=settings.node_credential)
            wanted[CONTROLLER_SOURCE_ID] = SourceState(ControllerSource(client))
        for net in settings.manual_networks:
            if net.enabled:
                wanted[net.source_id] = SourceState(_manual_source(net.source_id, net.url))
        return wanted

    def _add_source(self, state: SourceState) -> None:
        self.sources[state.source.source_id] = state
        self.runner.restore(state)
        self.runner.start(state)

    async def sync_sources(self) -> None:
        """Start and stop sources after a settings change, keeping unchanged ones running."""
        wanted = self._wanted_sources()
        for source_id in list(self.sources):
            if source_id not in wanted or _source_changed(
                self.sources[source_id], wanted[source_id]
            ):
                await self.runner.stop(self.sources.pop(source_id))
        for source_id, state in wanted.items():
            if source_id in self.sources:
                await state.source.close()
            else:
                self._add_source(state)
        self.request_apply()

    def update_settings(self, settings: Settings) -> None:
        """Store new settings."""
        save_settings(self.state_dir, settings)
        self.settings = settings

    def validate(self, snapshot: Snapshot) -> list[AppliedNetwork]:
        """Parse and compile each document of `snapshot`; raise `ConfigSourceError` on failure."""
        networks = []
        for item in snapshot.networks:
            try:
                document = parse_document(item.document)
                compiled = compile_for_node(document, self.pk)
            except DocumentError as exc:
                raise ConfigSourceError(
                    f"network {item.name or item.network_id} is invalid: {exc}"
                ) from exc
            except (PolicyError, ValueError) as exc:
                raise ConfigSourceError(
                    f"network {item.name or item.network_id} cannot be compiled for node "
                    f"{self.pk[:12]}: {exc}"
                ) from exc
            unsafe = unsafe_overlay_reason(document.network)
            if unsafe is not None:
                raise ConfigSourceError(
                    f"network {item.name or item.network_id} is not installed: {unsafe}"
                )
            name = item.name or document.name
            networks.append(AppliedNetwork(item.network_id, name, document.network, compiled))
        return networks

    # Apply

    def request_apply(self) -> None:
        """Ask the apply loop to reconcile with the current configuration soon."""
        self._apply_done.clear()
        self._apply_wanted.set()

    async def wait_applied(self) -> None:
        """Wait until the last requested apply ran (callers bound the wait)."""
        await self._apply_done.wait()

    async def _stop_apply_loop(self) -> None:
        # NOTE: cancelling a task does not stop the thread of a running reconciler apply, so the
        # loop is asked to exit and the running apply finishes before the teardown starts.
        task = self._apply_task
        if task is None:
            return
        self._stopping = True
        self._apply_wanted.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), APPLY_STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.error("the running apply did not finish within %d s", APPLY_STOP_TIMEOUT_SECONDS)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _apply_loop(self) -> None:
        while True:
            await self._apply_wanted.wait()
            if self._stopping:
                return
            self._apply_wanted.clear()
            try:
                await self._apply()
            except Exception:
                logger.exception("applying the configuration failed")
            if not self._apply_wanted.is_set():
                self._apply_done.set()

    def _enabled_networks(self, protected: set[IPv4Address]) -> list[AppliedNetwork]:
        """Return the networks to apply: the first of any with overlapping subnets, in order.

        A network whose subnet covers a `protected` address is left out too. SECURITY: in two
        overlapping subnets a node of one network may hold the overlay address of a node of the
        other, and its packets would pass as that node's.
        """
        networks: list[AppliedNetwork] = []
        for state in self.sources.values():
            for net in state.networks:
                conflict = route_conflict(net.subnet, protected)
                if conflict is not None:
                    logger.warning("network %s skipped: %s", net.name, conflict)
                    continue
                other = next((n for n in networks if n.subnet.overlaps(net.subnet)), None)
                if other is not None:
                    logger.warning(
                        "network %s skipped: its subnet %s overlaps %s of network %s",
                        net.name,
                        net.subnet,
                        other.subnet,
                        other.name,
                    )
                    continue
                networks.append(net)
        return networks

    async def _apply(self) -> None:
        assert self.reconciler is not None
        protected = self.protected_addresses()
        networks = self._enabled_networks(protected)
        compiled = [net.compiled for net in networks]
        self._adopt_learned(networks)
        dns_server = self.options.dns_host if self.resolver is not None else None
        desired, records = build_desired(
            networks,
            mtu=self.options.mtu,
            dns_server=dns_server,
            protected=protected,
        )
        errors = await asyncio.to_thread(self.reconciler.apply, desired)
        self.records.replace(records)
        errors += await self.gateway_listeners.sync(
            {network.ip for network in compiled if network.domain_gateway_duties}
        )
        # NOTE: a new data plane configuration starts with empty flow tables, so it is only
        # applied when the networks changed, not when only learned addresses did. The data
        # plane reads learned addresses from the compiled networks directly.
        changed = not _same_objects(compiled, self._dataplane_networks)
        if self.dataplane is not None and changed:
            try:
                await self.dataplane.apply(compiled)
                self._dataplane_networks = compiled
            except Exception as exc:
                logger.exception("data plane apply failed")
                errors.append(f"data plane: {exc}")
        report = changed or errors != self.apply_errors
        self.applied = networks
        self.apply_errors = errors
        controller = self.sources.get(CONTROLLER_SOURCE_ID)
        self.applied_revision = (
            controller.snapshot.revision if controller and controller.snapshot else None
        )
        logger.log(
            logging.INFO if report else logging.DEBUG,
            "applied configuration: %d network(s), controller revision %s, %d error(s)",
            len(networks),
            self.applied_revision,
            len(errors),
        )
        if controller is not None and report:
            self._report_status()

    # Domain resources

    def _adopt_learned(self, networks: list[AppliedNetwork]) -> None:
        """Carry learned addresses over to new compiled forms of the same networks."""
        for net in networks:
            old = self._compiled_by_id.get(net.network_id)
            if old is not None and old is not net.compiled and old.network == net.compiled.network:
                net.compiled.adopt_learned(old)
        self._compiled_by_id = {net.network_id: net.compiled for net in networks}
        self.domain_networks = [net.compiled for net in networks]

    async def _learned_changed(self) -> None:
        """Install the routes or rules of newly learned addresses before a DNS answer goes out."""
        self.request_apply()
        try:
            await asyncio.wait_for(self.wait_applied(), LEARN_APPLY_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning(
                "routes for learned addresses were not installed within %d s",
                LEARN_APPLY_TIMEOUT_SECONDS,
            )

    def _gateway_resolver(self, address: Any) -> GatewayResolver:
        def network() -> Any:
            return next((n for n in self.domain_networks if n.ip == address), None)

        resolv_conf = self.options.resolv_conf
        return GatewayResolver(
            network,
            self._learned_changed,
            nameservers=lambda: read_nameservers(resolv_conf),
            protected=self.protected_addresses,
        )

    def protected_addresses(self) -> set[IPv4Address]:
        """Return the IPv4 addresses the agent reaches through the underlay.

        No overlay network, route or learned address may cover them (see
        `desired.route_conflict`): the super peers and the controller (when given as address
        literals or already resolved by the data plane), the peers' endpoints and this host's
        own addresses.
        """
        protected = {
            address
            for url in (self.settings.controller, *self.settings.super_peers)
            if (address := _ipv4_host(url)) is not None
        }
        underlay = getattr(self.dataplane, "underlay_addresses", None)
        if underlay is not None:
            protected.update(underlay())
        device = getattr(self.tun, "name", self.options.device)
        protected.update(IPv4Address(address) for address in local_ipv4_addresses({device}))
        return protected

    async def _expire_loop(self) -> None:
        """Forget learned addresses whose TTL ran out, and remove their routes and rules."""
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL_SECONDS)
            now = time.monotonic()
            expired = [network.learned.expire(now) for network in self.domain_networks]
            if any(expired):
                logger.debug("learned addresses expired; reconciling")
                self.request_apply()

    def _report_status(self) -> None:
        if self._report_task is not None and not self._report_task.done():
            self._report_task.cancel()
        self._report_task = asyncio.create_task(self._send_status(), name="report-status")

    async def _send_status(self) -> None:
        settings = self.settings
        if not settings.controller or not settings.node_credential:
            return
        client = ControllerClient(settings.controller, credential=settings.node_credential)
        try:
            await client.report_status(self.controller_status())
        except ControllerError as exc:
            logger.warning("reporting status to the controller failed: %s", exc)
        finally:
            await client.close()

    def controller_status(self) -> dict[str, Any]:
        """Return the body of `POST /api/agent/status`."""
        errors = list(self.apply_errors)
        errors += [s.error for s in self.sources.values() if s.error]
        peers = []
        for peer in self.dataplane_status().get("peers", []):
            if isinstance(peer, dict) and "pk" in peer:
                peers.append({"pk": peer["pk"], "path": peer.get("path", "none")})
        return {
            "revision": self.applied_revision,
            "error": "; ".join(errors) or None,
            "os": os_name(),
            "agent_version": __version__,
            "addresses": [str(net.compiled.ip) for net in self.applied],
            "peers": peers,
        }

    def dataplane_status(self) -> dict[str, Any]:
        """Return the data plane's status, or an empty one when it is not running."""
        if self.dataplane is None:
            return {}
        try:
            return dict(self.dataplane.status())
        except Exception:
            logger.exception("reading the data plane status failed")
            return {}


def _same_objects(current: list[Any], previous: list[Any] | None) -> bool:
    """Return whether two lists hold the very same objects in the same order."""
    if previous is None or len(current) != len(previous):
        return False
    return all(a is b for a, b in zip(current, previous, strict=True))


def _manual_source(source_id: str, url: str) -> Source:
    if url.startswith("file:"):
        return FileSource(source_id, url)
    return HttpsSource(source_id, url)


def _source_changed(current: SourceState, wanted: SourceState) -> bool:
    """A controller source must restart when the controller URL or credential changed."""
    old, new = current.source, wanted.source
    if isinstance(old, ControllerSource) and isinstance(new, ControllerSource):
        return old.client.base != new.client.base or old.client.credential != new.client.credential
    return False


def _ipv4_host(url: str | None) -> IPv4Address | None:
    """Return the host of `url` when it is an IPv4 address literal, else None."""
    if not url:
        return None
    host = urlsplit(url if "//" in url else f"//{url}").hostname
    try:
        return IPv4Address(host or "")
    except ValueError:
        return None
