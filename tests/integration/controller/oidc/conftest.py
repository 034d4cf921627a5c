"""Helpers to run the development provider and dev mode as real processes on loopback."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

READY_TIMEOUT_SECONDS = 120.0
# Low proof-of-work difficulty, so identities generate at once in tests.
POW_DIFFICULTY = 8


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 at the time of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Process:
    """A child process whose output goes to a log file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, text=True
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_url(self, url: str) -> None:
        """Poll `url` until it returns 200; fail the test when the process exits first."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if self.popen.poll() is not None:
                pytest.fail(f"process exited with {self.popen.returncode}:\n{self.output()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url} not ready in {READY_TIMEOUT_SECONDS:.0f} s:\n{self.output()}")
            time.sleep(0.3)

    def stop(self) -> int:
        """Interrupt the process (as Ctrl+C does) and return its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()
        return self.popen.returncode


@pytest.fixture
def free_port_factory() -> Callable[[], int]:
    return free_port


@pytest.fixture
def run_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start Python modules as child processes; every one is stopped at the end of the test."""
    started: list[Process] = []

    def start(
        module: str,
        *args: str,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> Process:
        log_path = tmp_path / f"{module.rsplit('.', 1)[-1]}-{len(started)}.log"
        argv = [*(wrapper or []), sys.executable, "-m", module, *args]
        process = Process(argv, log_path, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def dev_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One `netsody-controller dev` process shared by this module's tests."""
    state_dir = tmp_path_factory.mktemp("dev")
    port, idp_port = free_port(), free_port()
    argv = [sys.executable, "-m", "netsody_controller.cli", "dev", "--port", str(port)]
    argv += ["--idp-port", str(idp_port), "--state-dir", str(state_dir)]
    argv += ["--super-peer", "https://127.0.0.1:8443/"]
    env = {**os.environ, "NETSODY_POW_DIFFICULTY": str(POW_DIFFICULTY)}
    process = Process(argv, state_dir / "dev.log", env)
    try:
        process.wait_for_url(f"http://127.0.0.1:{port}/healthz")
        yield {
            "process": process,
            "api": f"http://127.0.0.1:{port}/api",
            "idp": f"http://127.0.0.1:{idp_port}",
            "state_dir": state_dir,
            "pow_difficulty": POW_DIFFICULTY,
        }
    finally:
        process.stop()
