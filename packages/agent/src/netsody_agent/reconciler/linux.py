"""Linux implementations of the OS layer: iproute2 (`ip`), `iptables`, `/proc/sys` and
`resolvectl`.

Addresses and routes go through `ip` because the TUN device can carry one address per network,
which the single-address ioctl (SIOCSIFADDR) cannot express. Firewall rules live only in chains
of our own (`NETSODY-FWD` in the filter table, `NETSODY-NAT` in the nat table), reached by one
jump rule each from FORWARD and POSTROUTING, so removing the duty is flushing our chains.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from netsody_agent.errors import OsLayerError
from netsody_agent.reconciler.oslayer import OsLayer
from netsody_agent.reconciler.planner import DnsLink, GatewayRule

logger = logging.getLogger(__name__)

FORWARD_CHAIN = "NETSODY-FWD"
NAT_CHAIN = "NETSODY-NAT"
IP_FORWARD_PATH = Path("/proc/sys/net/ipv4/ip_forward")
COMMAND_TIMEOUT_SECONDS = 10
RESOLVED_RUNTIME_DIR = Path("/run/systemd/resolve")


def run_command(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a system tool; raise `OsLayerError` with its stderr when it fails and `check` is set."""
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OsLayerError(f"`{' '.join(args)}` failed: {exc}") from exc
    if check and result.returncode != 0:
        raise OsLayerError(f"`{' '.join(args)}` failed: {result.stderr.strip()}")
    return result


class LinuxLinks:
    """Addresses and MTU of the TUN device `device` through `ip`."""

    def __init__(self, device: str) -> None:
        self.device = device

    def _show(self) -> dict[str, object]:
        out = run_command(["ip", "-j", "addr", "show", "dev", self.device]).stdout
        entries = json.loads(out or "[]")
        if not entries:
            raise OsLayerError(f"TUN device {self.device} not found")
        return dict(entries[0])

    def observe_mtu(self) -> int | None:
        mtu = self._show().get("mtu")
        return int(mtu) if isinstance(mtu, int) else None

    def observe_addresses(self) -> frozenset[IPv4Interface]:
        infos = self._show().get("addr_info", [])
        assert isinstance(infos, list)
        return frozenset(
            IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            for info in infos
            if info.get("family") == "inet"
        )

    def set_mtu(self, mtu: int) -> None:
        run_command(["ip", "link", "set", "dev", self.device, "mtu", str(mtu), "up"])

    def bring_up(self) -> None:
        """Set the device administratively up."""
        run_command(["ip", "link", "set", "dev", self.device, "up"])

    def add_address(self, address: IPv4Interface) -> None:
        run_command(["ip", "addr", "replace", str(address), "dev", self.device])

    def remove_address(self, address: IPv4Interface) -> None:
        run_command(["ip", "addr", "del", str(address), "dev", self.device])


class LinuxRoutes:
    """Static routes into the TUN device; every `proto static` route on it belongs to us."""

    def __init__(self, device: str) -> None:
        self.device = device

    def observe(self) -> frozenset[IPv4Network]:
        result = run_command(
            ["ip", "-j", "route", "show", "dev", self.device, "proto", "static"], check=False
        )
        if result.returncode != 0:
            return frozenset()
        routes = json.loads(result.stdout or "[]")
        return frozenset(IPv4Network(_route_dst(route["dst"])) for route in routes)

    def add(self, network: IPv4Network) -> None:
        run_command(["ip", "route", "replace", str(network), "dev", self.device, "proto", "static"])

    def remove(self, network: IPv4Network) -> None:
        if network not in self.observe():
            return
        run_command(["ip", "route", "del", str(network), "dev", self.device, "proto", "static"])


def _route_dst(dst: str) -> str:
    return dst if "/" in dst else f"{dst}/32"


class LinuxFirewall:
    """IPv4 forwarding and the NETSODY-FWD / NETSODY-NAT chains through `iptables`.

    Whether the agent switched forwarding on is kept in `owned_marker` (a file in the state
    directory), so a restarted agent still switches it off when the duty ends.
    """

    def __init__(self, device: str, owned_marker: Path) -> None:
        self.device = device
        self.owned_marker = owned_marker

    def observe_forwarding(self) -> tuple[bool, bool]:
        enabled = IP_FORWARD_PATH.read_text().strip() == "1"
        return enabled, self.owned_marker.exists()

    def enable_forwarding(self) -> None:
        if IP_FORWARD_PATH.read_text().strip() == "1":
            return
        self.owned_marker.write_text("1\n")
        IP_FORWARD_PATH.write_text("1\n")
        logger.info("enabled IPv4 forwarding for gateway duties")

    def restore_forwarding(self) -> None:
        IP_FORWARD_PATH.write_text("0\n")
        self.owned_marker.unlink(missing_ok=True)
        logger.info("disabled IPv4 forwarding again: no gateway duties left")

    def observe_forward_rules(self) -> frozenset[GatewayRule]:
        return frozenset(
            _parse_rule(line)
            for line in self._list("filter", FORWARD_CHAIN)
            if f"-i {self.device}" in line
        )

    def observe_nat_rules(self) -> frozenset[GatewayRule]:
        return frozenset(
            _parse_rule(line) for line in self._list("nat", NAT_CHAIN) if "MASQUERADE" in line
        )

    def add_forward_rule(self, rule: GatewayRule) -> None:
        self._ensure_chain("filter", FORWARD_CHAIN, "FORWARD")
        for spec in self._forward_specs(rule):
            run_command(["iptables", "-w", "-t", "filter", "-A", FORWARD_CHAIN, *spec])

    def remove_forward_rule(self, rule: GatewayRule) -> None:
        for spec in self._forward_specs(rule):
            run_command(["iptables", "-w", "-t", "filter", "-D", FORWARD_CHAIN, *spec], check=False)

    def add_nat_rule(self, rule: GatewayRule) -> None:
        self._ensure_chain("nat", NAT_CHAIN, "POSTROUTING")
        run_command(["iptables", "-w", "-t", "nat", "-A", NAT_CHAIN, *self._nat_spec(rule)])

    def remove_nat_rule(self, rule: GatewayRule) -> None:
        run_command(["iptables", "-w", "-t", "nat", "-D", NAT_CHAIN, *self._nat_spec(rule)])

    def remove_chains(self) -> None:
        for table, chain, parent in (
            ("filter", FORWARD_CHAIN, "FORWARD"),
            ("nat", NAT_CHAIN, "POSTROUTING"),
        ):
            if run_command(["iptables", "-w", "-t", table, "-S", chain], check=False).returncode:
                continue
            while (
                run_command(
                    ["iptables", "-w", "-t", table, "-D", parent, "-j", chain], check=False
                ).returncode
                == 0
            ):
                pass
            run_command(["iptables", "-w", "-t", table, "-F", chain])
            run_command(["iptables", "-w", "-t", table, "-X", chain])
            logger.info("removed iptables chain %s from table %s", chain, table)

    def _forward_specs(self, rule: GatewayRule) -> list[list[str]]:
        src, dst = str(rule.source), str(rule.destination)
        return [
            ["-i", self.device, "-s", src, "-d", dst, "-j", "ACCEPT"],
            [
                "-o", self.device, "-s", dst, "-d", src,
                "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT",
            ],
        ]  # fmt: skip

    def _nat_spec(self, rule: GatewayRule) -> list[str]:
        return ["-s", str(rule.source), "-d", str(rule.destination), "-j", "MASQUERADE"]

    def _list(self, table: str, chain: str) -> list[str]:
        result = run_command(["iptables", "-w", "-t", table, "-S", chain], check=False)
        if result.returncode != 0:
            return []
        return [line for line in result.stdout.splitlines() if line.startswith("-A ")]

    def _ensure_chain(self, table: str, chain: str, parent: str) -> None:
        if run_command(["iptables", "-w", "-t", table, "-S", chain], check=False).returncode:
            run_command(["iptables", "-w", "-t", table, "-N", chain])
            logger.info("created iptables chain %s in table %s", chain, table)
        jump = ["-t", table, "-C", parent, "-j", chain]
        if run_command(["iptables", "-w", *jump], check=False).returncode:
            run_command(["iptables", "-w", "-t", table, "-I", parent, "1", "-j", chain])


def _parse_rule(line: str) -> GatewayRule:
    tokens = line.split()
    values = {tokens[i]: tokens[i + 1] for i in range(len(tokens) - 1) if tokens[i] in ("-s", "-d")}
    return GatewayRule(
        IPv4Network(values.get("-s", "0.0.0.0/0")), IPv4Network(values.get("-d", "0.0.0.0/0"))
    )


class ResolvectlDns:
    """Routes `~netsody.me` and resource domain queries to the agent's resolver through
    systemd-resolved.

    The settings are per link, so systemd-resolved drops them itself when the TUN device goes.
    """

    def __init__(self, device: str, runtime_dir: Path = RESOLVED_RUNTIME_DIR) -> None:
        self.device = device
        self.runtime_dir = runtime_dir
        self._applied: DnsLink | None = None

    def available(self) -> tuple[bool, str]:
        if shutil.which("resolvectl") is None:
            return False, "resolvectl not found: point the system resolver at the agent yourself"
        if not self.runtime_dir.is_dir():
            return False, "systemd-resolved is not running: point the system resolver at the agent"
        return True, "systemd-resolved"

    def observe(self) -> DnsLink | None:
        return self._applied

    def apply(self, link: DnsLink) -> None:
        run_command(["resolvectl", "dns", self.device, link.server])
        domains = [f"~{domain}" for domain in link.routing_domains]
        run_command(["resolvectl", "domain", self.device, *domains])
        self._applied = link

    def remove(self) -> None:
        run_command(["resolvectl", "revert", self.device], check=False)
        self._applied = None


def linux_os_layer(device: str, state_dir: Path) -> OsLayer:
    """Return the Linux OS layer for the TUN device `device`."""
    return OsLayer(
        links=LinuxLinks(device),
        routes=LinuxRoutes(device),
        firewall=LinuxFirewall(device, state_dir / "ip-forward-owned"),
        dns=ResolvectlDns(device),
    )
