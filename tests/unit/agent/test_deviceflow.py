"""The device authorization flow client against the development OpenID provider.

The provider runs on loopback in a background thread with a clock the test controls, so
`interval`, `slow_down` and expiry are exercised without waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from netsody_agent import deviceflow
from netsody_agent.errors import DeviceFlowError
from netsody_controller.devidp import (
    AGENT_CLIENT_ID,
    DevIdpSettings,
    default_clients,
    start_dev_idp,
)
from netsody_controller.devidp.browser import approve_device_code


class Clock:
    """A clock shared by the provider and the client; `sleep` advances it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def idp(tmp_path: Path, clock: Clock) -> Iterator:
    settings = DevIdpSettings(clients=default_clients(), device_interval=5, device_code_lifetime=60)
    with start_dev_idp(tmp_path, settings=settings, clock=clock) as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def _start(
    http: httpx.Client, idp
) -> tuple[deviceflow.ProviderEndpoints, deviceflow.DeviceAuthorization]:
    endpoints = deviceflow.discover(http, idp.base_url)
    return endpoints, deviceflow.request_device_code(http, endpoints, AGENT_CLIENT_ID)


def test_discovery_finds_device_endpoint(http, idp) -> None:
    endpoints = deviceflow.discover(http, idp.base_url + "/")
    assert endpoints.issuer == idp.base_url
    assert endpoints.device_authorization_endpoint.startswith(idp.base_url)


def test_approved_login_returns_token(http, idp, clock) -> None:
    endpoints, authorization = _start(http, idp)
    assert authorization.interval == 5
    polls = []

    def sleep_then_approve(seconds: float) -> None:
        clock.sleep(seconds)
        polls.append(seconds)
        if len(polls) == 2:
            approve_device_code(
                authorization.verification_uri, authorization.user_code, "ada@example.com"
            )

    token = deviceflow.poll_for_token(
        http, endpoints, AGENT_CLIENT_ID, authorization, sleep=sleep_then_approve, clock=clock
    )
    assert token["access_token"]
    assert token["token_type"].lower() == "bearer"
    # One poll saw authorization_pending, the next one got the token, both at the interval.
    assert polls == [5, 5]


def test_slow_down_adds_five_seconds(http, idp, clock) -> None:
    endpoints, authorization = _start(http, idp)
    requested: list[float] = []

    def sleep_too_little_once(seconds: float) -> None:
        requested.append(seconds)
        # The second wait is cut short, so the provider receives a poll inside the interval.
        clock.now += 1 if len(requested) == 2 else seconds
        if len(requested) == 3:
            approve_device_code(
                authorization.verification_uri, authorization.user_code, "ada@example.com"
            )

    token = deviceflow.poll_for_token(
        http, endpoints, AGENT_CLIENT_ID, authorization, sleep=sleep_too_little_once, clock=clock
    )
    assert token["access_token"]
    assert requested == [5, 5, 10]


def test_denied_login_fails(http, idp, clock) -> None:
    endpoints, authorization = _start(http, idp)

    def sleep_then_deny(seconds: float) -> None:
        clock.sleep(seconds)
        approve_device_code(
            authorization.verification_uri,
            authorization.user_code,
            "ada@example.com",
            approve=False,
        )

    with pytest.raises(DeviceFlowError, match="the login was denied in the browser"):
        deviceflow.poll_for_token(
            http, endpoints, AGENT_CLIENT_ID, authorization, sleep=sleep_then_deny, clock=clock
        )


def test_expired_token_from_provider_fails(http, idp, clock) -> None:
    endpoints, authorization = _start(http, idp)

    def sleep_past_expiry(seconds: float) -> None:
        clock.now += 120

    # The client's own clock stays put, so only the provider's expired_token ends the flow.
    with pytest.raises(DeviceFlowError, match="the device code expired before approval"):
        deviceflow.poll_for_token(
            http, endpoints, AGENT_CLIENT_ID, authorization,
            sleep=sleep_past_expiry, clock=lambda: 0.0,
        )  # fmt: skip


def test_client_gives_up_after_expires_in(http, idp, clock) -> None:
    endpoints, authorization = _start(http, idp)
    with pytest.raises(DeviceFlowError, match="expired"):
        deviceflow.poll_for_token(
            http, endpoints, AGENT_CLIENT_ID, authorization, sleep=clock.sleep, clock=clock
        )
    assert sum(clock.sleeps) >= authorization.expires_in - authorization.interval


def test_unknown_client_id_names_the_option(http, idp) -> None:
    endpoints = deviceflow.discover(http, idp.base_url)
    with pytest.raises(DeviceFlowError, match="check --auth-client-id"):
        deviceflow.request_device_code(http, endpoints, "no-such-client")


def test_unreachable_provider_names_the_url(http) -> None:
    with pytest.raises(DeviceFlowError, match=r"127\.0\.0\.1:9/\.well-known/openid-configuration"):
        deviceflow.discover(http, "http://127.0.0.1:9")
