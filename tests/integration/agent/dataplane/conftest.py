"""Two network namespaces joined by a veth pair, with data plane agents as real processes.

Underlay: 192.168.77.1 (namespace a) and 192.168.77.2 (namespace b) on the veth pair; both
addresses exist only inside the namespaces. Overlay: 10.9.0.1 and 10.9.0.2 on the TUN device
`netsody` of each namespace. Agents run `python -m netsody_agent.dataplane.run` and report their
status to a JSON file every second. Teardown stops the agents by PID and deletes the namespaces
(which deletes the veth pair and the TUN devices with them).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netsody_common.identity import Identity
from netsody_common.selfsigned import self_signed_certificate, write_pem

DIFFICULTY = 8
UNDERLAY = {"a": "192.168.77.1", "b": "192.168.77.2"}
OVERLAY = {"a": "10.9.0.1", "b": "10.9.0.2"}
LISTEN_PORT = 7000
SUPER_PEER_PORT = 8443
WAIT_SECONDS = 30.0

ALLOW_ALL = """
[[policy]]
source_groups = ["ALL"]
destination_groups = ["ALL"]
"""


def run(*command: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Agent:
    """One data plane process inside a namespace."""

    side: str
    namespace: str
    identity_path: Path
    status_path: Path
    log_path: Path
    process: subprocess.Popen | None = None

    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def peer(self) -> dict:
        peers = self.status().get("peers", [])
        return peers[0] if peers else {}


@dataclass
class Pair:
    """Namespaces a and b, their identities and the network file both agents read."""

    namespaces: dict[str, str]
    identities: dict[str, Identity]
    network_path: Path
    workdir: Path
    agents: dict[str, Agent] = field(default_factory=dict)

    def exec(self, side: str, *command: str, check: bool = True, timeout: float = 20):
        return run(
            "ip", "netns", "exec", self.namespaces[side], *command, check=check, timeout=timeout
        )

    def popen(self, side: str, *command: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.namespaces[side], *command], **kwargs)

    def write_network(self, policies: str = ALLOW_ALL) -> None:
        nodes = "".join(
            f'\n[[node]]\nhostname = "node-{side}"\nip = "{OVERLAY[side]}"\n'
            f'pk = "{self.identities[side].pk}"\n'
            for side in ("a", "b")
        )
        text = f'name = "test"\nnetwork = "10.9.0.0/24"\n{nodes}{policies}'
        temporary = self.network_path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.network_path)

    def start(self, side: str, *, super_peer: SuperPeer | None = None) -> Agent:
        """Start the agent of `side`: with a super peer it discovers its peer through it,
        without one it gets the peer's underlay address on the command line."""
        other = "b" if side == "a" else "a"
        agent = self.agents.get(side) or Agent(
            side,
            self.namespaces[side],
            self.workdir / f"{side}.key",
            self.workdir / f"{side}.status.json",
            self.workdir / f"{side}.log",
        )
        agent.status_path.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "netsody_agent.dataplane.run",
            "--network",
            str(self.network_path),
            "--identity",
            str(agent.identity_path),
            "--listen-port",
            str(LISTEN_PORT),
            "--status-file",
            str(agent.status_path),
        ]
        if super_peer is None:
            command += ["--peer", f"{self.identities[other].pk}={UNDERLAY[other]}:{LISTEN_PORT}"]
        else:
            command += ["--super-peer", super_peer.url, "--super-peer-ca", str(super_peer.cert)]
        log = agent.log_path.open("a")
        env = {**os.environ, "NETSODY_POW_DIFFICULTY": str(DIFFICULTY)}
        agent.process = self.popen(side, *command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.agents[side] = agent
        return agent

    def stop(self, side: str, *, kill: bool = False) -> None:
        """Stop the agent of `side`; `kill` sends SIGKILL, so it closes no connection."""
        agent = self.agents.get(side)
        if agent is None or agent.process is None:
            return
        if kill:
            kill_namespaced(agent.process)
        stop_process(agent.process)
        agent.process = None

    def wait_connected(self, *sides: str) -> None:
        wait_for(
            lambda: all(self.agents[side].peer().get("state") == "up" for side in sides),
            f"agents {sides} connected",
            self,
        )

    def reload(self, side: str) -> None:
        self.agents[side].process.send_signal(signal.SIGHUP)


@dataclass
class SuperPeer:
    """A `netsody-sp` process in namespace a, on the underlay address of a."""

    url: str
    cert: Path
    process: subprocess.Popen
    key: Path
    pair: Pair

    def restart(self) -> None:
        """Stop the process and start a new one on the same address and certificate."""
        stop_process(self.process)
        self.process = start_superpeer_process(self.pair, self.cert, self.key)


def write_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """Write a self-signed certificate for `address`; it is its own CA."""
    certificate, key = self_signed_certificate(address, ip_addresses=[address], days=1, ca=True)
    cert_path, key_path = directory / "sp-cert.pem", directory / "sp-key.pem"
    write_pem(certificate, key, cert_path=cert_path, key_path=key_path)
    return cert_path, key_path


def kill_namespaced(process: subprocess.Popen) -> None:
    """SIGKILL the program that `ip netns exec` runs as `process` (it execs, so same PID)."""
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for(condition, what: str, pair: Pair | None = None, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    logs = ""
    if pair is not None:
        logs = "\n".join(
            f"--- {agent.side}\n{agent.log_path.read_text()[-3000:]}"
            for agent in pair.agents.values()
            if agent.log_path.exists()
        )
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def identities(tmp_path_factory) -> dict[str, Identity]:
    return {side: Identity.generate(DIFFICULTY, progress=False) for side in ("a", "b")}


@pytest.fixture
def pair(tmp_path, identities):
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    suffix = f"{os.getpid()}-{secrets.token_hex(3)}"
    namespaces = {side: f"nsdp-{suffix}-{side}" for side in ("a", "b")}
    veth = {side: f"nsdp{secrets.token_hex(3)}{side}" for side in ("a", "b")}
    created: list[str] = []
    result = Pair(namespaces, identities, tmp_path / "network.toml", tmp_path)
    try:
        for side in ("a", "b"):
            run("ip", "netns", "add", namespaces[side])
            created.append(namespaces[side])
            identities[side].save(tmp_path / f"{side}.key")
        run("ip", "link", "add", veth["a"], "type", "veth", "peer", "name", veth["b"])
        for side in ("a", "b"):
            run("ip", "link", "set", veth[side], "netns", namespaces[side])
            result.exec(side, "ip", "addr", "add", f"{UNDERLAY[side]}/24", "dev", veth[side])
            result.exec(side, "ip", "link", "set", veth[side], "up")
            result.exec(side, "ip", "link", "set", "lo", "up")
        result.write_network()
        yield result
    finally:
        for side in list(result.agents):
            result.stop(side)
        for namespace in created:
            run("ip", "netns", "delete", namespace, check=False)
        # Only left behind when moving it into a namespace failed.
        run("ip", "link", "delete", veth["a"], check=False)


def start_superpeer_process(pair: Pair, cert: Path, key: Path) -> subprocess.Popen:
    """Start `netsody-sp` in namespace a and wait until it listens."""
    log = (pair.workdir / "sp.log").open("a")
    env = {**os.environ, "NETSODY_POW_DIFFICULTY": str(DIFFICULTY)}
    process = pair.popen(
        "a",
        sys.executable,
        "-m",
        "netsody_superpeer.cli",
        "--listen",
        f"{UNDERLAY['a']}:{SUPER_PEER_PORT}",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--proxy-public-addresses",
        UNDERLAY["a"],
        "--proxy-ports",
        "40000-40015",
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"netsody-sp exited:\n{(pair.workdir / 'sp.log').read_text()}")
        return f":{SUPER_PEER_PORT}" in pair.exec("a", "ss", "-lnu").stdout

    try:
        wait_for(listening, "the super peer to listen")
    except BaseException:
        stop_process(process)
        raise
    return process


@pytest.fixture
def superpeer(pair):
    """`netsody-sp` in namespace a on 192.168.77.1:8443, relay ports 40000-40015."""
    cert, key = write_certificate(pair.workdir, UNDERLAY["a"])
    result = SuperPeer(
        f"https://{UNDERLAY['a']}:{SUPER_PEER_PORT}",
        cert,
        start_superpeer_process(pair, cert, key),
        key,
        pair,
    )
    try:
        yield result
    finally:
        stop_process(result.process)
