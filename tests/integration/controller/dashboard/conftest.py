"""A `netsody-controller dev` process and a headless Chromium for the dashboard tests.

The controller runs in development mode on 127.0.0.1 with its development OpenID provider, so
the browser signs in through the provider's real sign-in page. Tests skip when Chromium,
chromedriver or selenium is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("NETSODY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("NETSODY_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 20.0
SUPER_PEER = "https://127.0.0.1:8443/"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class DevController:
    """A running development controller: its base URL, provider URL and log file."""

    url: str
    idp_url: str
    log_path: Path

    @property
    def login_command(self) -> str:
        return (
            f"netsody login --controller {self.url}/api --auth-url {self.idp_url} "
            f"--auth-client-id netsody-agent --super-peer {SUPER_PEER}"
        )


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"controller exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"controller not ready in {READY_TIMEOUT_SECONDS:.0f} s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def dev_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevController]:
    """One `netsody-controller dev` process for the module, stopped by its PID afterwards."""
    state_dir = tmp_path_factory.mktemp("dashboard-dev")
    port, idp_port = _free_port(), _free_port()
    argv = [sys.executable, "-m", "netsody_controller.cli", "dev", "--port", str(port)]
    argv += ["--idp-port", str(idp_port), "--state-dir", str(state_dir)]
    argv += ["--super-peer", SUPER_PEER]
    log_path = state_dir / "controller.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    controller = DevController(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{idp_port}", log_path)
    try:
        _wait_ready(process, controller.url, log_path)
        yield controller
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium driven through chromedriver, with the browser console log kept."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.skip(f"{path} is missing; install chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
