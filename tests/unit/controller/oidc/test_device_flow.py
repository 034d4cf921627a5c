"""The device authorization grant (RFC 8628) of the development provider, end to end over HTTP."""

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from netsody_controller.devidp import DevIdpSettings, RunningDevIdp, start_dev_idp
from netsody_controller.devidp.browser import DeviceApprovalError, approve_device_code
from netsody_controller.oidc import EmailNotVerifiedError, OidcProvider

pytestmark = pytest.mark.timeout(60)

Poll = Callable[[RunningDevIdp, str], httpx.Response]


def _start(http: httpx.Client, idp: RunningDevIdp, client_id: str = "netsody-agent") -> dict:
    response = http.post(f"{idp.base_url}/device_authorization", data={"client_id": client_id})
    assert response.status_code == 200, response.text
    return response.json()


def _error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    return response.json()["error"]


def test_device_authorization_response_fields(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client
) -> None:
    idp = make_idp(device_interval=3, device_code_lifetime=90)

    grant = _start(http, idp)

    assert grant["verification_uri"] == f"{idp.base_url}/device"
    assert grant["verification_uri_complete"].startswith(f"{idp.base_url}/device?user_code=")
    assert grant["interval"] == 3
    assert grant["expires_in"] == 90
    assert len(grant["user_code"]) == 9
    assert grant["user_code"][4] == "-"


def test_pending_then_approved_token_validates(
    make_idp: Callable[..., RunningDevIdp],
    http: httpx.Client,
    poll: Poll,
    clock: Callable[[], float],
    make_provider: Callable[..., OidcProvider],
) -> None:
    idp = make_idp(clock=clock)
    grant = _start(http, idp)

    assert _error(poll(idp, grant["device_code"])) == "authorization_pending"
    approve_device_code(grant["verification_uri"], grant["user_code"], "ada@example.com")
    clock.advance(grant["interval"])
    response = poll(idp, grant["device_code"])

    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert {"access_token", "id_token", "refresh_token", "expires_in"} <= tokens.keys()
    provider = make_provider(idp.discovery_url, "netsody-agent", clock=clock)
    claims = provider.validate_access_token(tokens["access_token"])
    assert claims.email == "ada@example.com"
    assert provider.fetch_userinfo(tokens["access_token"], claims=claims).email_verified is True


def test_device_code_single_use(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client, poll: Poll, clock: Callable
) -> None:
    idp = make_idp(clock=clock)
    grant = _start(http, idp)
    approve_device_code(grant["verification_uri_complete"], grant["user_code"], "ada@example.com")
    assert poll(idp, grant["device_code"]).status_code == 200
    clock.advance(grant["interval"])

    assert _error(poll(idp, grant["device_code"])) == "invalid_grant"


def test_polling_too_fast_slows_down(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client, poll: Poll, clock: Callable
) -> None:
    idp = make_idp(clock=clock, device_interval=5)
    grant = _start(http, idp)

    assert _error(poll(idp, grant["device_code"])) == "authorization_pending"
    clock.advance(2)
    slowed = poll(idp, grant["device_code"])
    assert _error(slowed) == "slow_down"
    assert "10 seconds" in slowed.json()["error_description"]
    clock.advance(6)
    assert _error(poll(idp, grant["device_code"])) == "slow_down"
    clock.advance(15)
    assert _error(poll(idp, grant["device_code"])) == "authorization_pending"


def test_denied_device_gets_access_denied(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client, poll: Poll, clock: Callable
) -> None:
    idp = make_idp(clock=clock)
    grant = _start(http, idp)

    page = approve_device_code(
        grant["verification_uri"], grant["user_code"], "ada@example.com", approve=False
    )

    assert "Device denied" in page
    assert _error(poll(idp, grant["device_code"])) == "access_denied"
    clock.advance(grant["interval"])
    assert _error(poll(idp, grant["device_code"])) == "invalid_grant"


def test_expired_device_code(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client, poll: Poll, clock: Callable
) -> None:
    idp = make_idp(clock=clock, device_code_lifetime=30)
    grant = _start(http, idp)
    clock.advance(31)

    with pytest.raises(DeviceApprovalError, match="unknown, expired or already used"):
        approve_device_code(grant["verification_uri"], grant["user_code"], "ada@example.com")
    assert _error(poll(idp, grant["device_code"])) == "expired_token"


def test_unknown_user_code_rejected_on_page(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client
) -> None:
    idp = make_idp()
    _start(http, idp)

    with pytest.raises(DeviceApprovalError, match="BBBB-BBBB"):
        approve_device_code(f"{idp.base_url}/device", "BBBB-BBBB", "ada@example.com")


def test_user_code_typed_loosely_accepted(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client, poll: Poll, clock: Callable
) -> None:
    idp = make_idp(clock=clock)
    grant = _start(http, idp)
    loose = grant["user_code"].replace("-", " ").lower()

    approve_device_code(grant["verification_uri"], loose, "ada@example.com")

    assert poll(idp, grant["device_code"]).status_code == 200


def test_unverified_email_checkbox(
    make_idp: Callable[..., RunningDevIdp],
    http: httpx.Client,
    poll: Poll,
    clock: Callable,
    make_provider: Callable[..., OidcProvider],
) -> None:
    idp = make_idp(clock=clock)
    grant = _start(http, idp)
    approve_device_code(
        grant["verification_uri"], grant["user_code"], "eve@example.com", email_verified=False
    )
    token = poll(idp, grant["device_code"]).json()["access_token"]
    provider = make_provider(idp.discovery_url, "netsody-agent", clock=clock)

    with pytest.raises(EmailNotVerifiedError, match="not verified at the identity provider"):
        provider.fetch_userinfo(token)


def test_controller_client_cannot_use_device_grant(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client
) -> None:
    idp = make_idp()

    response = http.post(
        f"{idp.base_url}/device_authorization", data={"client_id": "netsody-controller"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_unknown_client_rejected(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client
) -> None:
    idp = make_idp()

    response = http.post(f"{idp.base_url}/device_authorization", data={"client_id": "nobody"})

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_same_user_keeps_subject(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client, poll: Poll, clock: Callable
) -> None:
    idp = make_idp(clock=clock)
    subjects = []
    for _ in range(2):
        grant = _start(http, idp)
        approve_device_code(grant["verification_uri"], grant["user_code"], "Ada@Example.com")
        token = poll(idp, grant["device_code"]).json()["access_token"]
        userinfo = http.get(
            f"{idp.base_url}/userinfo", headers={"Authorization": f"Bearer {token}"}
        ).json()
        subjects.append(userinfo["sub"])

    assert subjects[0] == subjects[1]


def test_refresh_token_rotates(
    make_idp: Callable[..., RunningDevIdp], http: httpx.Client, poll: Poll, clock: Callable
) -> None:
    idp = make_idp(clock=clock)
    grant = _start(http, idp)
    approve_device_code(grant["verification_uri"], grant["user_code"], "ada@example.com")
    refresh_token = poll(idp, grant["device_code"]).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": "netsody-agent"}

    first = http.post(f"{idp.base_url}/token", data={**form, "refresh_token": refresh_token})
    reused = http.post(f"{idp.base_url}/token", data={**form, "refresh_token": refresh_token})

    assert first.status_code == 200
    assert first.json()["refresh_token"] != refresh_token
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_settings_default_to_both_clients(http: httpx.Client, tmp_path: Path) -> None:
    with start_dev_idp(tmp_path / "defaults", settings=DevIdpSettings(device_interval=1)) as idp:
        grant = _start(http, idp)

    assert grant["interval"] == 1
    assert {client.client_id for client in idp.idp.settings.clients} == {
        "netsody-agent",
        "netsody-controller",
    }
