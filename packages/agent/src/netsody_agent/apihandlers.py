"""Local API methods of the daemon, called by the `netsody` command."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from netsody_agent import __version__
from netsody_agent.controller import ControllerClient
from netsody_agent.desired import resource_domains
from netsody_agent.errors import ControllerError, LocalApiError, SettingsError
from netsody_agent.localapi import Handler
from netsody_agent.settings import (
    ManualNetwork,
    validate_http_url,
    validate_network_url,
)
from netsody_agent.sources import CONTROLLER_SOURCE_ID
from netsody_agent.urls import redact_url

if TYPE_CHECKING:
    from netsody_agent.daemon import Daemon
    from netsody_agent.netsync import SourceState

logger = logging.getLogger(__name__)

FIRST_FETCH_TIMEOUT_SECONDS = 20.0
APPLY_TIMEOUT_SECONDS = 30.0


def handlers(daemon: Daemon) -> dict[str, Handler]:
    """Return the local API methods bound to `daemon`."""
    api = _Api(daemon)
    return {
        "status": api.status,
        "settings.update": api.update_settings,
        "login.pair": api.pair,
        "join": api.join,
        "logout": api.logout,
        "network.add": api.network_add,
        "network.remove": api.network_remove,
        "network.enable": api.network_enable,
        "network.disable": api.network_disable,
    }


def _string(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise LocalApiError(f"parameter {key!r} is missing", "bad_request")
    return value


class _Api:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        return build_status(self.daemon)

    async def update_settings(self, params: dict[str, Any]) -> dict[str, Any]:
        settings = self.daemon.settings
        changes: dict[str, Any] = {}
        try:
            if params.get("controller"):
                controller = validate_http_url(params["controller"], option="--controller")
                if controller != settings.controller:
                    # A node credential belongs to one controller, so a new controller means a
                    # new login.
                    changes.update(controller=controller, node_credential=None)
            if params.get("auth_url") or params.get("auth_client_id"):
                if not (params.get("auth_url") and params.get("auth_client_id")):
                    raise SettingsError("--auth-url and --auth-client-id must be given together")
                changes["auth_url"] = validate_http_url(params["auth_url"], option="--auth-url")
                changes["auth_client_id"] = str(params["auth_client_id"])
            if params.get("super_peers"):
                changes["super_peers"] = tuple(
                    validate_http_url(url, option="--super-peer") for url in params["super_peers"]
                )
        except SettingsError as exc:
            raise LocalApiError(str(exc), "invalid_settings") from exc
        if changes:
            self.daemon.update_settings(replace(settings, **changes))
            logger.info("settings changed: %s", ", ".join(sorted(changes)))
            if "super_peers" in changes:
                self._super_peers_changed()
            await self.daemon.sync_sources()
        return _settings_view(self.daemon)

    def _super_peers_changed(self) -> None:
        if self.daemon.dataplane is not None:
            self.daemon.dataplane.set_super_peers(list(self.daemon.settings.super_peers))

    def _controller(self, params: dict[str, Any]) -> str:
        """Return the controller of a pair or join request: the given one, else the stored one.

        It is stored only with the new credential, so a mistyped URL keeps the device logged in.
        """
        value = params.get("controller")
        if value:
            if not isinstance(value, str):
                raise LocalApiError("parameter 'controller' must be a URL", "bad_request")
            try:
                return validate_http_url(value, option="--controller")
            except SettingsError as exc:
                raise LocalApiError(str(exc), "invalid_settings") from exc
        if not self.daemon.settings.controller:
            raise LocalApiError("no controller is set: pass --controller", "invalid_settings")
        return self.daemon.settings.controller

    async def pair(self, params: dict[str, Any]) -> dict[str, Any]:
        token = _string(params, "access_token")
        controller = self._controller(params)
        client = ControllerClient(controller)
        try:
            assert self.daemon.identity is not None
            result = await client.pair(self.daemon.identity, token)
        except ControllerError as exc:
            raise LocalApiError(f"pairing with the controller failed: {exc}", "controller") from exc
        finally:
            await client.close()
        return await self._store_credential(result, controller, "paired with the controller")

    async def join(self, params: dict[str, Any]) -> dict[str, Any]:
        join_key = _string(params, "join_key")
        controller = self._controller({"controller": _string(params, "controller")})
        await self.update_settings({"super_peers": params.get("super_peers")})
        client = ControllerClient(controller)
        try:
            assert self.daemon.identity is not None
            result = await client.join(self.daemon.identity, join_key)
        except ControllerError as exc:
            raise LocalApiError(f"joining with the join key failed: {exc}", "controller") from exc
        finally:
            await client.close()
        return await self._store_credential(result, controller, "joined a network with a join key")

    async def _store_credential(
        self, result: dict[str, Any], controller: str, what: str
    ) -> dict[str, Any]:
        credential = result.get("node_credential")
        if not isinstance(credential, str) or not credential:
            raise LocalApiError("the controller returned no node credential", "controller")
        daemon = self.daemon
        daemon.update_settings(
            replace(daemon.settings, controller=controller, node_credential=credential)
        )
        logger.info("%s; node id %s", what, daemon.pk)
        await daemon.sync_sources()
        await self._wait_first_fetch(CONTROLLER_SOURCE_ID)
        extra = {k: v for k, v in result.items() if k in ("device_id", "network_id")}
        return {"pk": daemon.pk, **extra, **self._source_result(CONTROLLER_SOURCE_ID)}

    async def logout(self, params: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        daemon.update_settings(replace(daemon.settings, node_credential=None))
        daemon.runner.cache.remove(CONTROLLER_SOURCE_ID)
        await daemon.sync_sources()
        await self._wait_applied()
        logger.info("logged out: the node credential and the controller's networks are removed")
        return {"logged_out": True}

    async def network_add(self, params: dict[str, Any]) -> dict[str, Any]:
        url = self._network_url(params)
        settings = self.daemon.settings
        existing = settings.find_network(url)
        if existing is None:
            self.daemon.update_settings(settings.with_network(url))
            logger.info("manual network %s added", redact_url(url))
        source_id = ManualNetwork(url).source_id if existing is None else existing.source_id
        await self.daemon.sync_sources()
        await self._wait_first_fetch(source_id)
        return self._source_result(source_id)

    async def network_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        net = self._find(params)
        settings = self.daemon.settings
        remaining = tuple(n for n in settings.manual_networks if n != net)
        self.daemon.update_settings(replace(settings, manual_networks=remaining))
        self.daemon.runner.cache.remove(net.source_id)
        await self.daemon.sync_sources()
        await self._wait_applied()
        logger.info("manual network %s removed", redact_url(net.url))
        return {"removed": redact_url(net.url)}

    async def network_enable(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._set_enabled(params, enabled=True)

    async def network_disable(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._set_enabled(params, enabled=False)

    async def _set_enabled(self, params: dict[str, Any], *, enabled: bool) -> dict[str, Any]:
        net = self._find(params)
        settings = self.daemon.settings
        networks = tuple(
            replace(n, enabled=enabled) if n == net else n for n in settings.manual_networks
        )
        self.daemon.update_settings(replace(settings, manual_networks=networks))
        await self.daemon.sync_sources()
        if enabled:
            await self._wait_first_fetch(net.source_id)
        else:
            await self._wait_applied()
        logger.info(
            "manual network %s %s", redact_url(net.url), "enabled" if enabled else "disabled"
        )
        return {"url": redact_url(net.url), "enabled": enabled}

    def _network_url(self, params: dict[str, Any]) -> str:
        try:
            return validate_network_url(_string(params, "url"))
        except SettingsError as exc:
            raise LocalApiError(str(exc), "invalid_url") from exc

    def _find(self, params: dict[str, Any]) -> ManualNetwork:
        url = _string(params, "url")
        net = self.daemon.settings.find_network(url)
        if net is None:
            raise LocalApiError(
                f"no manual network with URL {redact_url(url)}: see `netsody status`", "not_found"
            )
        return net

    async def _wait_first_fetch(self, source_id: str) -> None:
        state = self.daemon.sources.get(source_id)
        if state is None:
            return
        try:
            await asyncio.wait_for(state.first_result.wait(), FIRST_FETCH_TIMEOUT_SECONDS)
        except TimeoutError:
            return
        await self._wait_applied()

    async def _wait_applied(self) -> None:
        try:
            await asyncio.wait_for(self.daemon.wait_applied(), APPLY_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning("the configuration was not applied within %d s", APPLY_TIMEOUT_SECONDS)

    def _source_result(self, source_id: str) -> dict[str, Any]:
        state = self.daemon.sources.get(source_id)
        if state is None:
            return {}
        return {
            "source": state.source.description,
            "networks": [net.name for net in state.networks],
            "error": state.error,
        }


def _settings_view(daemon: Daemon) -> dict[str, Any]:
    settings = daemon.settings
    return {
        "controller": settings.controller,
        "auth_url": settings.auth_url,
        "auth_client_id": settings.auth_client_id,
        "super_peers": list(settings.super_peers),
        "logged_in": settings.node_credential is not None,
    }


def _empty_source_state(state: SourceState) -> str:
    """Return the state of a source without networks: failed, fetched with none, or waiting."""
    if state.error:
        return "error"
    return "no-networks" if state.snapshot is not None else "pending"


def build_status(daemon: Daemon) -> dict[str, Any]:
    """Return the status shown by `netsody status`."""
    dataplane = daemon.dataplane_status()
    applied_ids = {net.network_id for net in daemon.applied}
    networks = []
    for state in daemon.sources.values():
        for net in state.networks:
            networks.append(
                {
                    "id": net.network_id,
                    "name": net.name,
                    "source": state.source.description,
                    "network": str(net.subnet),
                    "address": str(net.compiled.ip),
                    "state": "applied" if net.network_id in applied_ids else "pending",
                    "error": state.error,
                }
            )
        if not state.networks:
            networks.append(
                {"id": state.source.source_id, "name": "", "source": state.source.description,
                 "state": _empty_source_state(state), "error": state.error}
            )  # fmt: skip
    for manual in daemon.settings.manual_networks:
        if not manual.enabled:
            networks.append(
                {
                    "id": manual.source_id,
                    "name": "",
                    "source": redact_url(manual.url),
                    "state": "disabled",
                }
            )
    return {
        "version": __version__,
        "identity": daemon.pk,
        **_settings_view(daemon),
        "revision": daemon.applied_revision,
        "networks": networks,
        "errors": list(daemon.apply_errors),
        "dns": _dns_status(daemon),
        "super_peer_status": dataplane.get("super_peers", []),
        "peers": dataplane.get("peers", []),
        "dataplane": {k: v for k, v in dataplane.items() if k not in ("peers", "super_peers")},
        "dataplane_error": daemon.dataplane_error,
    }


def _learned_status(daemon: Daemon) -> list[dict[str, Any]]:
    """Return one entry per address learned for a domain resource, with its remaining TTL."""
    now = time.monotonic()
    entries = []
    for net in daemon.applied:
        compiled = net.compiled
        hostnames = {peer.pk: peer.hostname for peer in compiled.peers}
        for item in compiled.learned.entries():
            role = "client" if item.dest in compiled.domain_routes else "gateway"
            entries.append(
                {
                    "network": net.name,
                    "resource": item.dest,
                    "role": role,
                    "peer": hostnames.get(item.peer_pk, item.peer_pk[:12]),
                    "address": str(item.address),
                    "expires_in": max(0, int(item.expires - now)),
                }
            )
    return entries


def _dns_status(daemon: Daemon) -> dict[str, Any]:
    reconciler = daemon.reconciler
    wired = bool(reconciler and reconciler.dns_available)
    domains = sorted(
        {domain for net in daemon.applied for domain in resource_domains(net.compiled)}
    )
    return {
        "resource_domains": domains,
        "learned": _learned_status(daemon),
        "resolver": None
        if daemon.resolver is None
        else f"{daemon.resolver.host}:{daemon.resolver.port}",
        "resolver_error": daemon.resolver_error,
        "system_resolver": "wired" if wired else "not wired",
        "detail": reconciler.dns_detail if reconciler else None,
        "names": daemon.records.names(),
    }
