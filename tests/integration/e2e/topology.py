"""A small internet in network namespaces: super peer, services, NAT routers, devices and a LAN.

Every name carries a prefix unique to one run (`nse2e-<pid>-<random>`), so parallel or aborted
runs never collide, and `Topology.teardown` removes only what its own run created. No address of
the topology is reachable from the root namespace, so nothing leaves the namespaces.

    internet ns: bridge br0, 198.18.0.0/15 (the benchmarking range of RFC 2544)
      |-- sp          198.18.0.10, 198.18.0.11   super peer
      |-- services    198.18.0.20                controller and its development OpenID provider
      |-- router-a    198.18.1.1   endpoint-independent NAT   -- dev-a 10.1.0.2 -- lan-a 10.10.0.2
      |-- router-b    198.18.2.1   endpoint-independent NAT   -- dev-b 10.2.0.2
      |-- router-c    198.18.3.1   symmetric NAT              -- dev-c 10.3.0.2
      |-- router-d    198.18.4.1   endpoint-independent NAT, all UDP dropped -- dev-d 10.4.0.2

NAT behaviour (iptables in each router namespace):
- endpoint-independent mapping: plain MASQUERADE. Linux NAT keeps the source port of a flow
  whenever the translated 5-tuple is unique, so one internal socket gets the same public port
  toward every destination. Filtering is address and port dependent (conntrack lets in only
  replies), which is what simultaneous hole punching needs.
- symmetric: MASQUERADE --random-fully picks a fresh random public port for every new flow, so
  the port the super peer observes is useless to any other peer.
- Unsolicited packets to a router are dropped in INPUT. A dropped packet never confirms its
  conntrack entry, so a peer's early hole-punching packet cannot occupy the public port the
  device's own outgoing flow needs.

Python code reaches the namespaces without subprocesses: a network namespace is a property of
each thread on Linux, so `run_in_netns` runs a function in a fresh thread that joined the
namespace with setns(2) (through ctypes, since Python 3.11 has no `os.setns`). A socket keeps the
namespace it was created in, so one made by `socket_in_netns` works from any thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

INTERNET_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
SP_ADDRESS = "198.18.0.10"
SP_SECOND_ADDRESS = "198.18.0.11"
SERVICES_ADDRESS = "198.18.0.20"
NAME_PREFIX = "nse2e"
PROCESS_STOP_TIMEOUT = 10.0
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A namespace could not be entered, or the function run inside it timed out."""


def enter_netns(name: str) -> None:
    """Move the calling thread into the network namespace `name` (a file in /run/netns)."""
    fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns into network namespace {name!r} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
    """Call `fn(*args)` in a new thread inside namespace `name` and return its result.

    Raises what `fn` raised, or NetnsError when it is still running after `timeout` seconds
    (the thread is a daemon, so it cannot keep the interpreter alive).
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(name)
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetnsError(f"{getattr(fn, '__name__', fn)!r} in namespace {name!r} timed out")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def socket_in_netns(name: str, family: int, kind: int) -> socket.socket:
    """Create a socket that lives in namespace `name` and can be used from any thread."""
    return run_in_netns(name, socket.socket, family, kind, timeout=10.0)


class NatKind(enum.Enum):
    """How a device's router translates and filters traffic toward the internet."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    SYMMETRIC = "symmetric"
    UDP_BLOCKED = "udp-blocked"


@dataclass(frozen=True)
class DeviceSpec:
    """One device host behind its own router."""

    name: str
    router_public: str
    lan_prefix: str
    nat: NatKind

    @property
    def router_role(self) -> str:
        return f"router-{self.name}"

    @property
    def role(self) -> str:
        return f"dev-{self.name}"

    @property
    def router_lan_address(self) -> str:
        return f"{self.lan_prefix}.1"

    @property
    def address(self) -> str:
        return f"{self.lan_prefix}.2"


DEVICES: tuple[DeviceSpec, ...] = (
    DeviceSpec("a", "198.18.1.1", "10.1.0", NatKind.ENDPOINT_INDEPENDENT),
    DeviceSpec("b", "198.18.2.1", "10.2.0", NatKind.ENDPOINT_INDEPENDENT),
    DeviceSpec("c", "198.18.3.1", "10.3.0", NatKind.SYMMETRIC),
    DeviceSpec("d", "198.18.4.1", "10.4.0", NatKind.UDP_BLOCKED),
)

# The LAN behind dev-a: dev-a is its gateway, lan-a runs no agent.
LAN_GATEWAY_DEVICE = "a"
LAN_NETWORK = ipaddress.IPv4Network("10.10.0.0/24")
LAN_GATEWAY_ADDRESS = "10.10.0.1"
LAN_HOST_ADDRESS = "10.10.0.2"


class TopologyError(RuntimeError):
    """A command that builds or inspects the topology failed."""


class Topology:
    """The namespaces, links and NAT rules of one test run, and the processes started in them."""

    def __init__(self, *, prefix: str | None = None, workdir: Path | None = None) -> None:
        self.prefix = prefix or f"{NAME_PREFIX}-{os.getpid()}-{secrets.token_hex(2)}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.devices = {spec.name: spec for spec in DEVICES}
        self._namespaces: list[str] = []
        self._netns_etc_dirs: list[Path] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    # Names and commands

    def ns(self, role: str) -> str:
        """Return the namespace name of a role such as "sp", "router-a" or "dev-a"."""
        return f"{self.prefix}-{role}"

    @property
    def namespaces(self) -> list[str]:
        """The namespaces this run created and has not removed yet."""
        return list(self._namespaces)

    def run(
        self,
        role: str,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace of `role` and return its completed process."""
        argv = ("ip", "netns", "exec", self.ns(role), *argv)
        return _run(argv, check=check, timeout=timeout, env=env)

    def spawn(
        self,
        role: str,
        argv: Sequence[str],
        *,
        name: str,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in the namespace of `role`; its output goes to a log file.

        `ip netns exec` replaces itself with the command, so the returned PID is the command's.
        The process is stopped by `stop` or at teardown.
        """
        log_path = self.log_path(name)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(role), *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        self._processes.append(process)
        logger.info("started %s in %s: pid %d", name, role, process.pid)
        return process

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def stop(self, process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM) -> int:
        """Stop one process started by `spawn` by its PID and return its exit code."""
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(PROCESS_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(PROCESS_STOP_TIMEOUT)
        if process in self._processes:
            self._processes.remove(process)
        return process.returncode

    def call(self, role: str, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """Call a Python function in a thread inside the namespace of `role`."""
        return run_in_netns(self.ns(role), fn, *args, timeout=timeout)

    def socket(self, role: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """Create an IPv4 socket that lives in the namespace of `role`."""
        return socket_in_netns(self.ns(role), socket.AF_INET, kind)

    def pids(self, role: str) -> list[int]:
        """Return the PIDs of every process inside the namespace of `role`."""
        result = _run(["ip", "netns", "pids", self.ns(role)], check=False, timeout=10)
        return [int(pid) for pid in result.stdout.split()]

    # Building

    def build(self) -> Topology:
        """Create every namespace, link, address, route and NAT rule; roll back on failure."""
        try:
            self._build_internet()
            self._build_server("sp", [SP_ADDRESS, SP_SECOND_ADDRESS])
            self._build_server("services", [SERVICES_ADDRESS])
            for spec in DEVICES:
                self._build_router(spec)
                self._build_device(spec)
            self._build_lan()
        except BaseException:
            self.teardown()
            raise
        logger.info("topology %s built", self.prefix)
        return self

    def _add_namespace(self, role: str) -> str:
        name = self.ns(role)
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        # `ip netns exec` bind-mounts files from /etc/netns/<name>/ over /etc, so a process that
        # rewrites /etc/resolv.conf inside the namespace changes only this copy.
        etc_dir = Path("/etc/netns") / name
        etc_dir.mkdir(parents=True, exist_ok=True)
        self._netns_etc_dirs.append(etc_dir)
        (etc_dir / "resolv.conf").write_text(f"# resolv.conf of network namespace {name}\n")
        self.run(role, "ip", "link", "set", "lo", "up")
        return name

    def _build_internet(self) -> None:
        self._add_namespace("internet")
        self.run("internet", "ip", "link", "add", "br0", "type", "bridge")
        self.run("internet", "ip", "link", "set", "br0", "up")

    def _attach_to_internet(self, role: str, port_name: str, addresses: Sequence[str]) -> None:
        """Link the namespace of `role` (interface `wan`) to the internet bridge."""
        self.run(
            "internet",
            *("ip", "link", "add", port_name, "type", "veth"),
            *("peer", "name", "wan", "netns", self.ns(role)),
        )
        self.run("internet", "ip", "link", "set", port_name, "master", "br0", "up")
        for address in addresses:
            self.run(
                role, "ip", "addr", "add", f"{address}/{INTERNET_NETWORK.prefixlen}", "dev", "wan"
            )
        self.run(role, "ip", "link", "set", "wan", "up")

    def _build_server(self, role: str, addresses: Sequence[str]) -> None:
        self._add_namespace(role)
        self._attach_to_internet(role, role, addresses)

    def _link_lan(self, upper: str, upper_if: str, lower: str, lower_if: str) -> None:
        self.run(
            upper,
            *("ip", "link", "add", upper_if, "type", "veth"),
            *("peer", "name", lower_if, "netns", self.ns(lower)),
        )
        self.run(upper, "ip", "link", "set", upper_if, "up")
        self.run(lower, "ip", "link", "set", lower_if, "up")

    def _build_router(self, spec: DeviceSpec) -> None:
        role = spec.router_role
        self._add_namespace(role)
        self._attach_to_internet(role, role, [spec.router_public])
        self.run(role, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._apply_nat(spec)

    def _apply_nat(self, spec: DeviceSpec) -> None:
        role = spec.router_role
        masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if spec.nat is NatKind.SYMMETRIC:
            masquerade.append("--random-fully")
        rules = [
            masquerade,
            [
                "-A",
                "INPUT",
                "-i",
                "wan",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
            ["-A", "INPUT", "-i", "wan", "-j", "DROP"],
            [
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED,DNAT",
                "-j",
                "ACCEPT",
            ],
            ["-A", "FORWARD", "-i", "wan", "-j", "DROP"],
        ]
        for rule in rules:
            self.run(role, "iptables", *rule)
        if spec.nat is NatKind.UDP_BLOCKED:
            self.set_udp_blocked(spec.name, blocked=True)

    def _build_device(self, spec: DeviceSpec) -> None:
        self._add_namespace(spec.role)
        self._link_lan(spec.router_role, "lan", spec.role, "eth0")
        self.run(
            spec.router_role, "ip", "addr", "add", f"{spec.router_lan_address}/24", "dev", "lan"
        )
        self.run(spec.role, "ip", "addr", "add", f"{spec.address}/24", "dev", "eth0")
        self.run(spec.role, "ip", "route", "add", "default", "via", spec.router_lan_address)

    def _build_lan(self) -> None:
        gateway = self.devices[LAN_GATEWAY_DEVICE].role
        self._add_namespace("lan-a")
        self._link_lan(gateway, "lan0", "lan-a", "eth0")
        prefix = LAN_NETWORK.prefixlen
        self.run(gateway, "ip", "addr", "add", f"{LAN_GATEWAY_ADDRESS}/{prefix}", "dev", "lan0")
        self.run("lan-a", "ip", "addr", "add", f"{LAN_HOST_ADDRESS}/{prefix}", "dev", "eth0")
        self.run("lan-a", "ip", "route", "add", "default", "via", LAN_GATEWAY_ADDRESS)

    # Changes during a test

    def set_udp_blocked(self, device: str, *, blocked: bool) -> None:
        """Drop (or stop dropping) every UDP packet the router of `device` forwards."""
        action = "-I" if blocked else "-D"
        self.run(
            self.devices[device].router_role,
            "iptables",
            action,
            "FORWARD",
            "-p",
            "udp",
            "-j",
            "DROP",
        )

    def forward_port(self, device: str, protocol: str, port: int) -> None:
        """Forward `protocol`/`port` on the router's public address to the device behind it."""
        spec = self.devices[device]
        self.run(
            spec.router_role,
            *("iptables", "-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", protocol),
            *("--dport", str(port), "-j", "DNAT", "--to-destination", spec.address),
        )

    # Teardown

    def teardown(self) -> None:
        """Stop this run's processes and remove its namespaces and /etc/netns copies.

        Safe to call more than once and after a partial build. Every process still inside one
        of this run's namespaces was started by this run, so it is ended by PID.
        """
        for process in list(self._processes):
            self.stop(process)
        for name in reversed(self._namespaces):
            self._kill_namespace_processes(name)
            _run(["ip", "netns", "del", name], check=False, timeout=30)
        self._namespaces.clear()
        for etc_dir in self._netns_etc_dirs:
            shutil.rmtree(etc_dir, ignore_errors=True)
        self._netns_etc_dirs.clear()
        logger.info("topology %s removed", self.prefix)

    def _kill_namespace_processes(self, name: str) -> None:
        result = _run(["ip", "netns", "pids", name], check=False, timeout=10)
        pids = [int(pid) for pid in result.stdout.split()]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + PROCESS_STOP_TIMEOUT
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.1)
        for pid in pids:
            _signal(pid, signal.SIGKILL)


def existing_namespaces(prefix: str) -> list[str]:
    """Return the namespaces in /run/netns whose name starts with `prefix`."""
    result = _run(["ip", "netns", "list"], check=False, timeout=10)
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    if check and result.returncode != 0:
        raise TopologyError(
            f"command {' '.join(argv)!r} failed with exit code {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still accepts signal 0 but has already exited, so it counts as gone.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return status != "Z"
