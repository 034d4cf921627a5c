"""Real Netsody processes on the namespace topology: services, agents and an administrator.

The controller runs in development mode (SQLite, its development OpenID provider bound to the
services address) in the services namespace, the super peer in its own namespace with a
self-signed certificate, and one `netsody run` daemon per device. The administrator signs in
with the authorization code grant and PKCE, and devices with the device authorization grant,
both through the provider's HTML pages as a person would.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx
from topology import SERVICES_ADDRESS, SP_ADDRESS, Topology

REPO = Path(__file__).resolve().parents[3]
POW_ENV = {"NETSODY_POW_DIFFICULTY": "8"}
CONTROLLER_PORT = 8080
IDP_PORT = 9001
SP_PORT = 8443
PROXY_PORTS = "49152-49407"
CONTROLLER_URL = f"http://{SERVICES_ADDRESS}:{CONTROLLER_PORT}"
API_URL = f"{CONTROLLER_URL}/api"
IDP_URL = f"http://{SERVICES_ADDRESS}:{IDP_PORT}"
SP_URL = f"https://{SP_ADDRESS}:{SP_PORT}/"
CONTROLLER_CLIENT_ID = "netsody-controller"
AGENT_CLIENT_ID = "netsody-agent"
ADMIN_EMAIL = "admin@example.test"
START_TIMEOUT = 90.0
AGENT_DNS_ADDRESS = "127.0.0.153"


class HarnessError(RuntimeError):
    """A Netsody process did not start, or a sign-in did not complete."""


def command(name: str) -> str:
    """Return the console script `name` of the running environment."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise HarnessError(f"{name} is not installed in this environment")
    return found


def wait_for(check: Callable[[], bool], what: str, *, timeout: float = START_TIMEOUT) -> float:
    """Poll `check` every 0.2 s until it is true; return the seconds it took.

    Raises HarnessError naming `what` after `timeout` seconds.
    """
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise HarnessError(f"{what}: still false after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - start


def _load_dev_launcher() -> Any:
    spec = importlib.util.spec_from_file_location(
        "netsody_dev_launcher", REPO / "scripts" / "dev.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class body runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def superpeer_certificate(topology: Topology) -> Path:
    """Return the super peer's self-signed certificate, made on first use."""
    cert, _ = _load_dev_launcher().ensure_certificate(topology.workdir / "superpeer", SP_ADDRESS)
    return Path(cert)


@functools.cache
def agent_run_supports(option: str) -> bool:
    """Return whether `netsody run --help` lists `option`."""
    result = subprocess.run(
        [command("netsody"), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return option in result.stdout


# Services


@dataclass
class Services:
    """The controller (with its OpenID provider) and the super peer of one topology."""

    topology: Topology
    controller: subprocess.Popen[bytes] | None = None
    superpeer: subprocess.Popen[bytes] | None = None

    def start_controller(self) -> None:
        argv = [
            *(command("netsody-controller"), "dev"),
            *("--host", SERVICES_ADDRESS, "--port", str(CONTROLLER_PORT)),
            *("--idp-host", SERVICES_ADDRESS, "--idp-port", str(IDP_PORT)),
            *("--state-dir", str(self.topology.workdir / "controller"), "--super-peer", SP_URL),
        ]
        self.controller = self.topology.spawn("services", argv, name="controller", env=POW_ENV)
        wait_for(self.controller_healthy, "controller /healthz returns 200")

    def controller_healthy(self) -> bool:
        if self.controller is not None and self.controller.poll() is not None:
            log = self.topology.log_path("controller").read_text(errors="replace")[-3000:]
            raise HarnessError(
                f"the controller exited with code {self.controller.returncode}:\n{log}"
            )
        try:
            return self.http("GET", f"{CONTROLLER_URL}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop_controller(self) -> None:
        if self.controller is not None:
            self.topology.stop(self.controller)
            self.controller = None

    def start_superpeer(self) -> None:
        cert = superpeer_certificate(self.topology)
        key = cert.with_name("key.pem")
        argv = [
            command("netsody-sp"),
            *("--listen", f"{SP_ADDRESS}:{SP_PORT}", "--cert", str(cert), "--key", str(key)),
            *("--proxy-public-addresses", SP_ADDRESS, "--proxy-ports", PROXY_PORTS),
        ]
        self.superpeer = self.topology.spawn("sp", argv, name="super-peer", env=POW_ENV)
        wait_for(self.superpeer_listening, "super peer accepts TCP connections")

    def superpeer_listening(self) -> bool:
        if self.superpeer is not None and self.superpeer.poll() is not None:
            log = self.topology.log_path("super-peer").read_text(errors="replace")[-3000:]
            raise HarnessError(
                f"the super peer exited with code {self.superpeer.returncode}:\n{log}"
            )
        sock = self.topology.socket("sp", socket.SOCK_STREAM)
        sock.settimeout(1)
        try:
            sock.connect((SP_ADDRESS, SP_PORT))
        except OSError:
            return False
        finally:
            sock.close()
        return True

    def stop_superpeer(self) -> None:
        if self.superpeer is not None:
            self.topology.stop(self.superpeer)
            self.superpeer = None

    def http(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one HTTP request from the services namespace."""

        def send() -> httpx.Response:
            with httpx.Client(timeout=15) as client:
                return client.request(method, url, **kwargs)

        return self.topology.call("services", send, timeout=30)

    def approve_device(self, verification_uri: str, user_code: str, email: str) -> None:
        """Complete a device authorization through the provider's verification page."""
        from netsody_controller.devidp.browser import approve_device_code

        self.topology.call("services", approve_device_code, verification_uri, user_code, email)


# Administrator


def sign_in_with_pkce(services: Services, email: str) -> str:
    """Sign in through the provider's authorization page (code + PKCE); return the access token."""
    from netsody_controller.devidp.browser import read_form

    def flow() -> str:
        with httpx.Client(timeout=15) as client:
            discovery = client.get(f"{IDP_URL}/.well-known/openid-configuration").json()
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            redirect_uri = f"{CONTROLLER_URL}/callback"
            state = secrets.token_urlsafe(16)
            query = {
                "response_type": "code",
                "client_id": CONTROLLER_CLIENT_ID,
                "redirect_uri": redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
            page = client.get(f"{discovery['authorization_endpoint']}?{urlencode(query)}")
            page.raise_for_status()
            action, hidden = read_form(page.text)
            if action is None:
                raise HarnessError(f"the authorization page has no form:\n{page.text[:500]}")
            answer = client.post(
                urljoin(str(page.url), action),
                data={**hidden, "email": email, "name": "Admin", "action": "approve"},
            )
            location = answer.headers.get("location", "")
            params = parse_qs(urlparse(location).query)
            if answer.status_code not in (302, 303) or params.get("state") != [state]:
                raise HarnessError(
                    f"sign-in did not redirect back: {answer.status_code} {location}"
                )
            token = client.post(
                discovery["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": params["code"][0],
                    "redirect_uri": redirect_uri,
                    "client_id": CONTROLLER_CLIENT_ID,
                    "code_verifier": verifier,
                },
            )
            token.raise_for_status()
            return str(token.json()["access_token"])

    return services.topology.call("services", flow, timeout=60)


@dataclass
class Admin:
    """An administrator calling the controller API with a real access token."""

    services: Services
    token: str

    def call(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        response = self.services.http(
            method, f"{API_URL}{path}", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        if expect is not None and response.status_code != expect:
            raise HarnessError(
                f"{method} {path} returned {response.status_code}, expected {expect}: "
                f"{response.text}"
            )
        return response.json() if response.content else None


# Agents


@dataclass
class Agent:
    """One `netsody run` daemon in a device namespace, and its CLI."""

    topology: Topology
    device: str
    process: subprocess.Popen[bytes] | None = None
    pk: str = ""
    node: dict[str, Any] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return f"dev-{self.device}"

    @property
    def hostname(self) -> str:
        return f"dev-{self.device}"

    @property
    def env(self) -> dict[str, str]:
        # SSL_CERT_FILE makes Python's default TLS context trust the self-signed super peer.
        return {
            **POW_ENV,
            "NETSODY_STATE_DIR": str(self.topology.workdir / f"agent-{self.device}"),
            "SSL_CERT_FILE": str(superpeer_certificate(self.topology)),
        }

    def start(self) -> None:
        # Without systemd-resolved the agent cannot wire the system resolver itself, so point
        # this namespace's resolv.conf (bind-mounted by `ip netns exec`) at its resolver.
        resolv = Path("/etc/netns") / self.topology.ns(self.role) / "resolv.conf"
        resolv.write_text(f"nameserver {AGENT_DNS_ADDRESS}\n")
        argv = [command("netsody"), "run", "--dns-address", f"{AGENT_DNS_ADDRESS}:53"]
        if agent_run_supports("--super-peer-ca"):
            argv += ["--super-peer-ca", str(superpeer_certificate(self.topology))]
        self.process = self.topology.spawn(
            self.role, argv, name=f"agent-{self.device}", env=self.env
        )
        wait_for(self.responds, f"netsody status in {self.role}")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            self.topology.stop(self.process, sig=9 if kill else 15)
            self.process = None

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.topology.run(
            self.role, command("netsody"), *args, check=False, timeout=timeout, env=self.env
        )

    def responds(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.topology.log_path(f"agent-{self.device}").read_text(errors="replace")[-3000:]
            raise HarnessError(
                f"the agent in {self.role} exited with code {self.process.returncode}:\n{log}"
            )
        return self.cli("status", "--json").returncode == 0

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        if result.returncode != 0:
            raise HarnessError(f"netsody status in {self.role} failed: {result.stderr}")
        return json.loads(result.stdout)

    def login(self, services: Services, email: str) -> None:
        """Run `netsody login` and approve its code on the provider's verification page."""
        argv = [
            *("ip", "netns", "exec", self.topology.ns(self.role), command("netsody"), "login"),
            *("--controller", API_URL, "--auth-url", IDP_URL, "--auth-client-id", AGENT_CLIENT_ID),
            *("--super-peer", SP_URL),
        ]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**_os_environ(), **self.env},
        )
        assert process.stdout is not None
        output = []
        prompt = re.compile(r"open (?P<uri>\S+) and enter the code (?P<code>\S+)")
        match = None
        for line in process.stdout:
            output.append(line)
            match = prompt.search(line)
            if match:
                break
        if match is None:
            process.wait(10)
            raise HarnessError(f"netsody login printed no verification code:\n{''.join(output)}")
        services.approve_device(match["uri"], match["code"], email)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        if process.returncode != 0:
            raise HarnessError(
                f"netsody login exited with {process.returncode}:\n{''.join(output)}{rest}"
            )

    def join(self, join_key: str) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "join",
            "--controller",
            API_URL,
            "--join-key",
            join_key,
            "--super-peer",
            SP_URL,
            timeout=60,
        )

    def ping(self, target: str, *, count: int = 1, wait: int = 2) -> bool:
        result = self.topology.run(
            self.role,
            "ping",
            "-c",
            str(count),
            "-W",
            str(wait),
            target,
            check=False,
            timeout=wait * count + 10,
        )
        return result.returncode == 0


def _os_environ() -> dict[str, str]:
    import os

    return dict(os.environ)
