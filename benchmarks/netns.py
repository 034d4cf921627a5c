"""Two network namespaces joined by a veth pair, shared by the benchmarks that run as root.

The benchmark scripts run as `hatch run python benchmarks/<name>.py`, so Python puts this
directory first on `sys.path` and they import this module as `netns`.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

SIDES = ("a", "b")


class Bench:
    """The namespace pair and the processes started in it.

    Namespaces are named `ns<prefix>-<random>-a` and `-b`, and the veth ends
    `ns<first letter of prefix><random>a` and `b`, so several runs can coexist and the interface
    names stay within the kernel's 15 characters. `underlay` maps each side to the IPv4 address
    (a /24) of its veth end.
    """

    def __init__(self, workdir: Path, underlay: dict[str, str], *, prefix: str) -> None:
        suffix = secrets.token_hex(3)
        self.namespaces = {side: f"ns{prefix}-{suffix}-{side}" for side in SIDES}
        self.veth = {side: f"ns{prefix[0]}{suffix}{side}" for side in SIDES}
        self.underlay = underlay
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []

    def run(self, side: str, *command: str, check: bool = True, timeout: float = 60) -> str:
        result = subprocess.run(
            ["ip", "netns", "exec", self.namespaces[side], *command],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {side} failed: {result.stderr.strip()}")
        return result.stdout

    def popen(self, side: str, *command: str, env: dict | None = None) -> subprocess.Popen:
        """Start `command` in the namespace. `ip netns exec` execs it, so the PID is its own."""
        log = (self.workdir / f"{side}-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[side], *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        self.processes.append(process)
        return process

    def setup(self) -> None:
        for side in SIDES:
            subprocess.run(["ip", "netns", "add", self.namespaces[side]], check=True)
        subprocess.run(
            ["ip", "link", "add", self.veth["a"], "type", "veth", "peer", "name", self.veth["b"]],
            check=True,
        )
        for side in SIDES:
            subprocess.run(
                ["ip", "link", "set", self.veth[side], "netns", self.namespaces[side]], check=True
            )
            self.run(side, "ip", "addr", "add", f"{self.underlay[side]}/24", "dev", self.veth[side])
            self.run(side, "ip", "link", "set", self.veth[side], "mtu", "1500", "up")
            self.run(side, "ip", "link", "set", "lo", "up")

    def stop(self, process: subprocess.Popen) -> None:
        """Terminate `process`, kill it after 10 s, and forget it."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process in self.processes:
            self.processes.remove(process)

    def stop_processes(self) -> None:
        for process in list(self.processes):
            self.stop(process)

    def teardown(self) -> None:
        self.stop_processes()
        for namespace in self.namespaces.values():
            subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)
        subprocess.run(["ip", "link", "delete", self.veth["a"]], check=False, capture_output=True)
