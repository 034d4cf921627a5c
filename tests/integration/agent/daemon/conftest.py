"""A network namespace running `netsody run` as a real process.

The namespace starts with IPv4 forwarding off, so the tests see the daemon switch it on for a
gateway duty and back off afterwards. Teardown stops the daemon by PID (SIGTERM, then SIGKILL)
and deletes the namespace, which deletes the TUN device and every rule inside it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netsody_common.identity import Identity

DIFFICULTY = 8
DNS_ADDRESS = "127.0.0.153:53"
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.1


def run(*command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)


@dataclass
class AgentNamespace:
    """A namespace with one agent daemon; helpers run commands inside it."""

    namespace: str
    state_dir: Path
    log_path: Path
    identity: Identity
    process: subprocess.Popen | None = None

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.namespace, *command, check=check)

    def netsody(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the `netsody` command in the namespace against this agent's state directory."""
        return self.exec(
            sys.executable, "-m", "netsody_agent.cli", *args, "--state-dir", str(self.state_dir),
            check=check,
        )  # fmt: skip

    def start(self, *extra: str) -> None:
        """Start `netsody run` with `extra` options and wait for its local API."""
        env = {**os.environ, "NETSODY_POW_DIFFICULTY": str(DIFFICULTY)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, sys.executable, "-m", "netsody_agent.cli",
                 "run", "--state-dir", str(self.state_dir), "--dns-address", DNS_ADDRESS,
                 "--log-level", "DEBUG", *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        socket_path = self.state_dir / "netsody.sock"
        wait_for(lambda: socket_path.exists() or self.process.poll() is not None, "the local API")
        if self.process.poll() is not None:
            pytest.fail(f"netsody run exited early:\n{self.log()}")

    def stop(self) -> int:
        """Send SIGTERM and return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT_SECONDS)
        finally:
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict:
        return json.loads(self.netsody("status", "--json").stdout)

    def ip_forward(self) -> str:
        return self.exec("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()


def new_agent(directory: Path) -> AgentNamespace:
    """Create a namespace (loopback up, IPv4 forwarding off) and an identity for one agent."""
    namespace = f"nsd-daemon-{secrets.token_hex(3)}"
    run("ip", "netns", "add", namespace)
    state_dir = directory / "state"
    state_dir.mkdir(parents=True)
    identity = Identity.generate(DIFFICULTY, progress=False)
    identity.save(state_dir / "identity.key")
    agent = AgentNamespace(namespace, state_dir, directory / "agent.log", identity)
    agent.exec("ip", "link", "set", "lo", "up")
    agent.exec("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    return agent


def remove_agent(agent: AgentNamespace) -> None:
    """Kill the daemon if it still runs and delete the namespace."""
    if agent.process is not None:
        agent.process.kill()
        agent.process.wait(timeout=WAIT_SECONDS)
    run("ip", "netns", "delete", agent.namespace, check=False)


@pytest.fixture
def agent_ns(tmp_path: Path) -> Iterator[AgentNamespace]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    agent = new_agent(tmp_path)
    try:
        yield agent
    finally:
        remove_agent(agent)
