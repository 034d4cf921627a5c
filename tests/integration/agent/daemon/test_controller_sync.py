"""`netsody join`, `netsody login` and configuration sync against a real controller.

The controller (`netsody-controller serve`, PostgreSQL and Redis from the integration fixtures)
and the development OpenID provider run on the host's loopback. The daemon runs in its own
namespace and reaches the controller through `loopback_bridge.py`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from netsody_controller.devidp import (
    AGENT_CLIENT_ID,
    CONTROLLER_CLIENT_ID,
    DevIdpSettings,
    default_clients,
    start_dev_idp,
)
from netsody_controller.devidp.browser import approve_device_code

from .conftest import AgentNamespace, wait_for

pytestmark = [pytest.mark.root, pytest.mark.docker]

BRIDGE = Path(__file__).with_name("loopback_bridge.py")
BRIDGE_PORT = 8080
CONTROLLER_URL = f"http://127.0.0.1:{BRIDGE_PORT}/api"
START_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    settings = DevIdpSettings(clients=default_clients(), device_interval=1)
    with start_dev_idp(tmp_path_factory.mktemp("idp"), settings=settings) as running:
        yield running


def _fresh_database(postgres_url: str) -> str:
    name = f"netsody_agent_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def controller(postgres_url, redis_url, idp, tmp_path_factory) -> Iterator[str]:
    """Start `netsody-controller serve`; yield its loopback URL."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    state = tmp_path_factory.mktemp("controller")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _fresh_database(postgres_url),
        "REDIS_URL": redis_url,
        "NETSODY_CONTROLLER_SECRET_PATH": str(state / "controller_secret"),
        "OAUTH_CLIENT_ID": CONTROLLER_CLIENT_ID,
        "OAUTH_PATH": idp.discovery_url,
        "OAUTH_AUDIENCE": CONTROLLER_CLIENT_ID,
        "OAUTH_AGENT_PATH": idp.discovery_url,
        "OAUTH_AGENT_AUDIENCE": AGENT_CLIENT_ID,
        "NETSODY_POW_DIFFICULTY": "8",
        "NETSODY_LOG_LEVEL": "warning",
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(port),
    }
    cli = [sys.executable, "-m", "netsody_controller.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = (state / "controller.log").open("wb")
    process = subprocess.Popen([*cli, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _healthy(url) or process.poll() is not None, "the controller", START_TIMEOUT
        )
        assert process.poll() is None, (state / "controller.log").read_text()[-3000:]
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def bridge(controller: str, agent_ns: AgentNamespace, tmp_path: Path) -> Iterator[None]:
    """Make the controller reachable at 127.0.0.1:8080 inside the agent's namespace."""
    sock = tmp_path / "bridge.sock"
    port = urlsplit(controller).port
    processes = [
        subprocess.Popen(
            [sys.executable, str(BRIDGE), "unix-to-tcp", str(sock), str(port)],
            stdout=subprocess.PIPE, text=True,
        ),
        subprocess.Popen(
            ["ip", "netns", "exec", agent_ns.namespace, sys.executable, str(BRIDGE),
             "tcp-to-unix", str(BRIDGE_PORT), str(sock)],
            stdout=subprocess.PIPE, text=True,
        ),
    ]  # fmt: skip
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        yield
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


class User:
    """A controller user calling the API with a development provider token."""

    def __init__(self, controller: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=f"{controller}/api", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def call(self, method: str, path: str, body: object = None, status: int = 200) -> object:
        response = self.http.request(method, path, json=body)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


@pytest.fixture
def user(controller: str, idp) -> Iterator[User]:
    email = f"owner-{secrets.token_hex(3)}@example.test"
    client = User(
        controller, idp.idp.issue_access_token(email=email, client_id=CONTROLLER_CLIENT_ID)
    )
    client.email = email
    client.call("GET", "/me")
    yield client
    client.http.close()


def tun_addresses(agent: AgentNamespace) -> list[str]:
    result = agent.exec("ip", "-j", "addr", "show", "dev", "netsody", check=False)
    if result.returncode != 0:
        return []
    link = json.loads(result.stdout)[0]
    return [a["local"] for a in link["addr_info"] if a["family"] == "inet"]


def resolves(agent: AgentNamespace, name: str) -> list[str]:
    script = (
        "import socket, sys\n"
        "from netsody_agent.dns import build_query, parse_a_answers\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)\n"
        "s.sendto(build_query(sys.argv[1]), ('127.0.0.153', 53))\n"
        "print(' '.join(str(a) for a in parse_a_answers(s.recv(512))[1]))\n"
    )
    return agent.exec(sys.executable, "-c", script, name).stdout.split()


def node_of(user: User, network_id: str, pk: str) -> Callable[[], dict]:
    def find() -> dict:
        nodes = user.call("GET", f"/networks/{network_id}/nodes")
        return next((node for node in nodes if node["pk"] == pk), {})

    return find


def test_join_applies_and_follows_controller(agent_ns, bridge, user) -> None:
    network = user.call("POST", "/networks", {"name": "office", "subnet": "10.20.0.0/24"}, 201)
    key = user.call("POST", f"/networks/{network['id']}/join-keys", {"name": "ci"}, 201)
    agent_ns.start()

    joined = agent_ns.netsody("join", "--controller", CONTROLLER_URL, "--join-key", key["secret"])
    assert "Joined network" in joined.stdout

    wait_for(lambda: bool(tun_addresses(agent_ns)), "the overlay address from the controller")
    node = node_of(user, network["id"], agent_ns.identity.pk)
    wait_for(lambda: node().get("applied_revision") is not None, "the status report")
    assert node()["addresses"] == tun_addresses(agent_ns)
    assert node()["os"] == "linux"
    assert node()["error"] is None

    # A change in the controller reaches the agent through the long poll.
    user.call("PATCH", f"/networks/{network['id']}/nodes/{node()['id']}", {"hostname": "renamed"})
    wait_for(lambda: resolves(agent_ns, "renamed.netsody.me") == tun_addresses(agent_ns),
             "the new hostname")  # fmt: skip
    status = agent_ns.status()
    assert status["logged_in"] is True
    assert status["controller"] == CONTROLLER_URL

    agent_ns.netsody("logout")
    assert tun_addresses(agent_ns) == []
    assert agent_ns.stop() == 0


def test_failed_login_keeps_the_node_credential(agent_ns, bridge, user) -> None:
    network = user.call("POST", "/networks", {"name": "kept", "subnet": "10.21.0.0/24"}, 201)
    key = user.call("POST", f"/networks/{network['id']}/join-keys", {"name": "ci"}, 201)
    agent_ns.start()
    agent_ns.netsody("join", "--controller", CONTROLLER_URL, "--join-key", key["secret"])
    wait_for(lambda: bool(tun_addresses(agent_ns)), "the overlay address from the controller")

    # A mistyped controller or provider fails the login and leaves the device logged in.
    unreachable = "http://127.0.0.1:1"
    login = agent_ns.netsody(
        "login", "--controller", f"{unreachable}/api", "--auth-url", unreachable,
        "--auth-client-id", "netsody-agent", check=False,
    )  # fmt: skip
    assert login.returncode != 0
    joined = agent_ns.netsody("join", "--controller", f"{unreachable}/api", "--join-key", "nsj_x",
                              check=False)  # fmt: skip
    assert joined.returncode != 0
    status = agent_ns.status()
    assert status["logged_in"] is True
    assert status["controller"] == CONTROLLER_URL
    assert tun_addresses(agent_ns)
    assert agent_ns.stop() == 0


def test_login_with_device_flow_pairs(agent_ns, bridge, user, idp) -> None:
    agent_ns.start()
    # The command runs on the host: it reaches the daemon through the socket file and the
    # provider on the host's loopback. The daemon pairs through the bridge.
    login = subprocess.Popen(
        [sys.executable, "-m", "netsody_agent.cli", "login", "--state-dir", str(agent_ns.state_dir),
         "--controller", CONTROLLER_URL, "--auth-url", idp.base_url,
         "--auth-client-id", AGENT_CLIENT_ID, "--super-peer", "https://sp.example.test/"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert login.stdout is not None
        prompt = login.stdout.readline()
        match = re.search(r"open (\S+) and enter the code (\S+)", prompt)
        assert match, prompt
        approve_device_code(match.group(1), match.group(2), user.email)
        out, err = login.communicate(timeout=60)
    finally:
        if login.poll() is None:
            login.kill()
    assert login.returncode == 0, err
    device_id = re.search(r"device id (\S+)", out)
    assert device_id, out

    network = user.call("POST", "/networks", {"name": "home", "subnet": "10.30.0.0/24"}, 201)
    user.call("POST", f"/networks/{network['id']}/nodes", {"device_id": device_id.group(1)}, 201)
    wait_for(lambda: bool(tun_addresses(agent_ns)), "the overlay address after pairing")
    assert tun_addresses(agent_ns)[0].startswith("10.30.0.")
    status = agent_ns.status()
    assert status["auth_url"] == idp.base_url
    assert status["super_peers"] == ["https://sp.example.test"]
    assert agent_ns.stop() == 0
