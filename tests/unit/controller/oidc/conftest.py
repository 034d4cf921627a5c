"""Fixtures: the development OpenID provider served on loopback in a thread, and a test clock."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from netsody_controller.devidp import (
    DEVICE_CODE_GRANT,
    DevIdpSettings,
    RunningDevIdp,
    default_clients,
    start_dev_idp,
)
from netsody_controller.oidc import OidcProvider

CONTROLLER_URL = "http://127.0.0.1:8080"


class ManualClock:
    """A clock that moves only when a test advances it (Unix seconds)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def dev_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevIdp]:
    """A provider with RS256 keys and default lifetimes, shared by a module's tests."""
    settings = DevIdpSettings(clients=default_clients((CONTROLLER_URL,)))
    with start_dev_idp(tmp_path_factory.mktemp("idp"), settings=settings) as running:
        yield running


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_idp(tmp_path: Path) -> Iterator[Callable[..., RunningDevIdp]]:
    """Start a provider of one test with its own settings; stopped at the end of the test."""
    started: list[RunningDevIdp] = []

    def start(clock: Callable[[], float] | None = None, **overrides: object) -> RunningDevIdp:
        values: dict[str, object] = {
            "clients": default_clients((CONTROLLER_URL,)),
            "algorithm": "ES256",
        }
        values.update(overrides)
        running = start_dev_idp(
            tmp_path / f"idp{len(started)}", settings=DevIdpSettings(**values), clock=clock
        )
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def make_provider() -> Iterator[Callable[..., OidcProvider]]:
    """Create `OidcProvider`s that are closed at the end of the test."""
    providers: list[OidcProvider] = []

    def create(discovery_url: str, audience: str, **options: object) -> OidcProvider:
        provider = OidcProvider(discovery_url, audience=audience, http_timeout=5, **options)
        providers.append(provider)
        return provider

    yield create
    for provider in providers:
        provider.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture
def poll(http: httpx.Client) -> Callable[[RunningDevIdp, str], httpx.Response]:
    """Return a function that polls the token endpoint once with a device code of the agent."""

    def poll_once(idp: RunningDevIdp, device_code: str) -> httpx.Response:
        return http.post(
            f"{idp.base_url}/token",
            data={
                "grant_type": DEVICE_CODE_GRANT,
                "device_code": device_code,
                "client_id": "netsody-agent",
            },
        )

    return poll_once
