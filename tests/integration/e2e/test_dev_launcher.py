"""`hatch run dev` (scripts/dev.py) starts the controller and a super peer, and stops both."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
READY_TIMEOUT = 120.0
STARTED = re.compile(r"^\[dev\] started (?P<name>[\w-]+) \(pid (?P<pid>\d+)\)")


@dataclass
class Launcher:
    process: subprocess.Popen[str]
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)

    def child_pids(self) -> dict[str, int]:
        found = (STARTED.match(line) for line in self.lines)
        return {match["name"]: int(match["pid"]) for match in found if match}


def free_port() -> int:
    """Return a port free on 127.0.0.1 for both TCP and UDP at the time of the call."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_until(condition, launcher: Launcher, event: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not condition():
        if launcher.process.poll() is not None:
            pytest.fail(f"the launcher exited before {event}:\n{launcher.output()}")
        if time.monotonic() > deadline:
            pytest.fail(
                f"{event} did not happen within {READY_TIMEOUT:.0f} s:\n{launcher.output()}"
            )
        time.sleep(0.5)


def process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.split(") ", 1)[1][0] == "Z"


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    ports = {name: free_port() for name in ("controller", "idp", "sp")}
    proxy = free_port()
    argv = [
        sys.executable,
        str(REPO / "scripts" / "dev.py"),
        *("--state-dir", str(tmp_path / "state")),
        *("--controller-port", str(ports["controller"])),
        *("--idp-port", str(ports["idp"])),
        *("--sp-port", str(ports["sp"])),
        *("--proxy-ports", f"{proxy}-{proxy}"),
    ]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "NETSODY_POW_DIFFICULTY": "8"},
    )
    result = Launcher(process, ports)

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            result.lines.append(line)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        yield result
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        reader.join(5)
        for pid in result.child_pids().values():
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_launcher_serves_controller_and_super_peer(launcher: Launcher) -> None:
    wait_until(lambda: "ready" in launcher.output(), launcher, "a component became ready")
    assert "not built yet" not in launcher.output()
    wait_until(lambda: port_open(launcher.ports["sp"]), launcher, "the super peer's port opened")
    wait_until(lambda: healthz_ok(launcher.ports["controller"]), launcher, "/healthz answered 200")
    wait_until(
        lambda: "netsody join" in launcher.output(), launcher, "the device commands appeared"
    )
    children = launcher.child_pids()

    launcher.process.send_signal(signal.SIGTERM)
    exit_code = launcher.process.wait(60)

    assert set(children) == {"controller", "super-peer"}
    assert exit_code == 0, launcher.output()
    assert all(process_gone(pid) for pid in children.values()), launcher.output()
    output = launcher.output()
    assert f"--controller http://127.0.0.1:{launcher.ports['controller']}/api" in output
    assert f"--super-peer https://127.0.0.1:{launcher.ports['sp']}/" in output
    assert "not built yet" not in output
    # A new user learns where `netsody` is, that namespaces need --host, and the next step.
    assert "hatch shell" in output
    assert "network namespaces cannot reach 127.0.0.1: restart with --host" in output
    assert "POST /api/networks/{id}/nodes" in output


def test_launcher_exits_nonzero_when_a_child_dies(launcher: Launcher) -> None:
    wait_until(lambda: port_open(launcher.ports["sp"]), launcher, "the super peer's port opened")
    children = launcher.child_pids()

    os.kill(children["super-peer"], signal.SIGKILL)
    exit_code = launcher.process.wait(60)

    assert exit_code == 1, launcher.output()
    assert re.search(r"^\[dev\] super-peer \(pid \d+\) exited with code", launcher.output(), re.M)
    assert all(process_gone(pid) for pid in children.values()), launcher.output()
