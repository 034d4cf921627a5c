"""Fixtures for the controller against real PostgreSQL, Redis and the development OpenID provider.

The Django project is set up once per test session in this process, on a fresh database created
inside the `postgres_url` server, so tests call the API through Django's test client. Tests that
need real server processes (long polls across processes, schemathesis) start
`netsody-controller serve` with the same environment through `controller_server`.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from netsody_common.identity import Identity
from netsody_controller.devidp.provider import AGENT_CLIENT_ID, CONTROLLER_CLIENT_ID
from netsody_controller.devidp.server import RunningDevIdp, start_dev_idp

POW_DIFFICULTY = 4
SERVER_START_TIMEOUT_SECS = 60.0


@pytest.fixture(scope="session")
def dev_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevIdp]:
    with start_dev_idp(tmp_path_factory.mktemp("devidp")) as running:
        yield running


def _fresh_database(postgres_url: str) -> str:
    name = f"netsody_ctl_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def controller_env(
    postgres_url: str,
    redis_url: str,
    dev_idp: RunningDevIdp,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The environment of the controller under test (also given to served processes)."""
    state = tmp_path_factory.mktemp("controller")
    return {
        "DATABASE_URL": _fresh_database(postgres_url),
        "REDIS_URL": redis_url,
        "NETSODY_CONTROLLER_SECRET_PATH": str(state / "controller_secret"),
        "OAUTH_CLIENT_ID": CONTROLLER_CLIENT_ID,
        "OAUTH_PATH": dev_idp.discovery_url,
        "OAUTH_AUDIENCE": CONTROLLER_CLIENT_ID,
        "OAUTH_AGENT_PATH": dev_idp.discovery_url,
        "OAUTH_AGENT_AUDIENCE": AGENT_CLIENT_ID,
        "NETSODY_POW_DIFFICULTY": str(POW_DIFFICULTY),
        "NETSODY_LOG_FORMAT": "text",
        "NETSODY_LOG_LEVEL": "warning",
        "USER_CACHE_TTL_SECS": "300",
        "INVITATION_RATE_LIMIT_USER": "3",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "DJANGO_SETTINGS_MODULE": "netsody_controller.settings",
    }


@pytest.fixture(scope="session")
def django_setup(controller_env: dict[str, str]) -> None:
    """Configure Django in this process for the session and apply the migrations."""
    os.environ.update(controller_env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class ApiClient:
    """Django's test client with a bearer token; returns status, decoded JSON and headers."""

    def __init__(self, token: str | None) -> None:
        from django.test import Client

        self._client = Client()
        self.token = token

    def request(self, method: str, path: str, body: Any = None, **headers: str) -> Response:
        extra = dict(headers)
        if self.token is not None:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        call = getattr(self._client, method.lower())
        if body is None:
            response = call(path, **extra)
        else:
            response = call(path, data=body, content_type="application/json", **extra)
        content = response.content
        decoded = None
        if content and response.get("Content-Type", "").startswith("application/json"):
            decoded = response.json()
        return Response(response.status_code, decoded, dict(response.headers))

    def get(self, path: str, **headers: str) -> Response:
        return self.request("GET", path, **headers)

    def post(self, path: str, body: Any = None, **headers: str) -> Response:
        return self.request("POST", path, {} if body is None else body, **headers)

    def patch(self, path: str, body: Any, **headers: str) -> Response:
        return self.request("PATCH", path, body, **headers)

    def put(self, path: str, body: Any, **headers: str) -> Response:
        return self.request("PUT", path, body, **headers)

    def delete(self, path: str, **headers: str) -> Response:
        return self.request("DELETE", path, **headers)


@pytest.fixture
def token_for(dev_idp: RunningDevIdp) -> Callable[..., str]:
    """Return a function minting real access tokens of the development provider."""

    def mint(
        email: str, *, agent: bool = False, email_verified: bool = True, lifetime: int | None = None
    ) -> str:
        return dev_idp.idp.issue_access_token(
            email=email,
            client_id=AGENT_CLIENT_ID if agent else CONTROLLER_CLIENT_ID,
            email_verified=email_verified,
            lifetime=lifetime,
        )

    return mint


@pytest.fixture
def client_for(django_setup: None, token_for: Callable[..., str]) -> Callable[..., ApiClient]:
    """Return a function giving an API client signed in as an email address (new per test)."""
    suffix = secrets.token_hex(4)

    def make(name: str) -> ApiClient:
        client = ApiClient(token_for(f"{name}-{suffix}@example.test"))
        client.email = f"{name}-{suffix}@example.test"
        me = client.get("/api/me")
        assert me.status == 200, me.body
        client.user_id = me.body["id"]
        return client

    return make


def new_identity() -> Identity:
    return Identity.generate(POW_DIFFICULTY, progress=False)


def signed_proof(client: ApiClient, identity: Identity, prefix: str, **fields: Any) -> dict:
    """Return a pair or join body for `identity` with a fresh challenge signed with `prefix`."""
    challenge = client.post("/api/agent/challenge").body["challenge"]
    message = f"{prefix}{challenge}:{identity.pk}".encode()
    signature = base64.urlsafe_b64encode(identity.sign(message)).rstrip(b"=").decode()
    return {
        "pk": identity.pk,
        "pow_nonce": identity.pow_nonce,
        "challenge": challenge,
        "signature": signature,
        "hostname": fields.pop("hostname", "host"),
        "os": fields.pop("os", "linux"),
        "agent_version": fields.pop("agent_version", "0.1.0"),
        **fields,
    }


@pytest.fixture
def pair_device(token_for: Callable[..., str]) -> Callable[..., dict]:
    """Return a function pairing a new identity with the user of `client`."""

    def pair(client: ApiClient, hostname: str = "host", identity: Identity | None = None) -> dict:
        identity = identity or new_identity()
        agent = ApiClient(token_for(client.email, agent=True))
        body = signed_proof(agent, identity, "netsody-pair:", hostname=hostname)
        response = agent.post("/api/agent/pair", body)
        assert response.status == 200, response.body
        return {**response.body, "identity": identity}

    return pair


@pytest.fixture
def network_of(client_for: Callable[..., ApiClient]) -> Callable[..., dict]:
    """Return a function creating a network owned by `client`."""

    def create(client: ApiClient, subnet: str = "10.20.0.0/24", name: str = "office") -> dict:
        response = client.post("/api/networks", {"name": name, "subnet": subnet})
        assert response.status == 201, response.body
        return response.body

    return create


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ControllerServer:
    """A `netsody-controller serve` process on loopback."""

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **env, "APP_HOST": "127.0.0.1", "APP_PORT": str(self.port)}
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "netsody_controller.cli", "serve", "--workers", str(workers)],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(log_path)

    def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"controller exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"controller did not start: {log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture(scope="session")
def controller_server(
    django_setup: None, controller_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ControllerServer]]:
    """Return a function starting controller processes; all are stopped after the session."""
    servers: list[ControllerServer] = []
    logs = tmp_path_factory.mktemp("controller-logs")

    def start(workers: int = 1) -> ControllerServer:
        log_path = logs / f"server-{len(servers)}.log"
        server = ControllerServer(controller_env, log_path, workers=workers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass(frozen=True)
class AgentTools:
    """Helpers for agent-side requests, handed to tests as the `agent_tools` fixture."""

    client: type[ApiClient]
    new_identity: Callable[[], Identity]
    signed_proof: Callable[..., dict]


@pytest.fixture(scope="session")
def agent_tools(django_setup: None) -> AgentTools:
    return AgentTools(client=ApiClient, new_identity=new_identity, signed_proof=signed_proof)
