"""Observe, plan, execute: the side-effecting half of the reconciler."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from netsody_agent.errors import OsLayerError
from netsody_agent.reconciler import planner as p
from netsody_agent.reconciler.oslayer import OsLayer

logger = logging.getLogger(__name__)


class Reconciler:
    """Brings the machine to a `DesiredState` through an `OsLayer`.

    `apply` returns the errors of the actions that failed. The remaining actions still run, so
    one broken route does not keep the rest of a configuration from taking effect.
    """

    def __init__(self, os_layer: OsLayer) -> None:
        self.os = os_layer
        dns_ok, dns_detail = os_layer.dns.available()
        self.dns_available = dns_ok
        self.dns_detail = dns_detail

    def observe(self) -> p.ActualState:
        """Read the current state of everything the agent manages."""
        forwarding, owned = self.os.firewall.observe_forwarding()
        return p.ActualState(
            mtu=self.os.links.observe_mtu(),
            addresses=self.os.links.observe_addresses(),
            routes=self.os.routes.observe(),
            forward_rules=self.os.firewall.observe_forward_rules(),
            nat_rules=self.os.firewall.observe_nat_rules(),
            forwarding=forwarding,
            forwarding_owned=owned,
            dns=self.os.dns.observe() if self.dns_available else None,
        )

    def apply(self, desired: p.DesiredState) -> list[str]:
        """Plan from the observed state to `desired` and execute; return error messages."""
        if not self.dns_available:
            desired = replace(desired, dns=None)
        actions = p.plan(desired, self.observe())
        return self._execute(actions)

    def teardown(self) -> list[str]:
        """Remove every address, route, rule and resolver setting the agent installed."""
        errors = self._execute(p.teardown_plan(self.observe()))
        try:
            self.os.firewall.remove_chains()
        except OsLayerError as exc:
            logger.error("removing the firewall chains failed: %s", exc)
            errors.append(str(exc))
        return errors

    def _execute(self, actions: list[p.Action]) -> list[str]:
        errors: list[str] = []
        for action in actions:
            logger.debug("reconciler action: %s", action)
            try:
                self._run(action)
            except OsLayerError as exc:
                logger.error("reconciler action %s failed: %s", action, exc)
                errors.append(f"{action}: {exc}")
        if actions:
            logger.info("reconciler applied %d changes, %d failed", len(actions), len(errors))
        return errors

    def _run(self, action: p.Action) -> None:
        handler = self._handlers()[action.kind]
        handler(action.target)

    def _handlers(self) -> dict[str, Callable[[Any], None]]:
        links, routes, fw, dns = self.os.links, self.os.routes, self.os.firewall, self.os.dns
        return {
            p.SET_MTU: links.set_mtu,
            p.ADD_ADDRESS: links.add_address,
            p.REMOVE_ADDRESS: links.remove_address,
            p.ADD_ROUTE: routes.add,
            p.REMOVE_ROUTE: routes.remove,
            p.ENABLE_FORWARDING: lambda _: fw.enable_forwarding(),
            p.RESTORE_FORWARDING: lambda _: fw.restore_forwarding(),
            p.ADD_FORWARD_RULE: fw.add_forward_rule,
            p.REMOVE_FORWARD_RULE: fw.remove_forward_rule,
            p.ADD_NAT_RULE: fw.add_nat_rule,
            p.REMOVE_NAT_RULE: fw.remove_nat_rule,
            p.SET_DNS: dns.apply,
            p.REMOVE_DNS: lambda _: dns.remove(),
        }
