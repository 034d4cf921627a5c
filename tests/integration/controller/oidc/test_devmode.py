"""`netsody-controller dev` end to end: device login, pairing, and token audiences."""

import base64
import re
from typing import Any

import httpx
import pytest

from netsody_common.identity import Identity
from netsody_controller.devidp.browser import approve_device_code

pytestmark = pytest.mark.timeout(300)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _device_login(idp: str, email: str, *, email_verified: bool = True) -> str:
    """Log in through the device flow of the agent client, as `netsody login` does."""
    with httpx.Client(timeout=10) as http:
        grant = http.post(f"{idp}/device_authorization", data={"client_id": "netsody-agent"})
        grant.raise_for_status()
        body = grant.json()
        approve_device_code(
            body["verification_uri"], body["user_code"], email, email_verified=email_verified
        )
        tokens = http.post(
            f"{idp}/token",
            data={
                "grant_type": DEVICE_CODE_GRANT,
                "device_code": body["device_code"],
                "client_id": "netsody-agent",
            },
        )
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access_token"])


def _pair_body(http: httpx.Client, api: str, identity: Identity) -> dict[str, Any]:
    challenge = http.post(f"{api}/agent/challenge").json()["challenge"]
    message = f"netsody-pair:{challenge}:{identity.pk}".encode()
    signature = base64.urlsafe_b64encode(identity.sign(message)).decode().rstrip("=")
    return {
        "pk": identity.pk,
        "pow_nonce": identity.pow_nonce,
        "challenge": challenge,
        "signature": signature,
        "hostname": "laptop",
        "os": "linux",
        "agent_version": "0.1.0",
    }


def test_dev_mode_prints_login_command(dev_controller: dict[str, Any]) -> None:
    output = dev_controller["process"].output()

    expected = (
        f"netsody login --controller {dev_controller['api']} --auth-url {dev_controller['idp']} "
        "--auth-client-id netsody-agent --super-peer https://127.0.0.1:8443/"
    )
    assert expected in output
    assert "DEVELOPMENT-ONLY OPENID PROVIDER" in output
    assert (dev_controller["state_dir"] / "controller.sqlite3").exists()
    assert re.search(r"Applying \w+\.0001_initial", output)


def test_device_login_pairs_device(dev_controller: dict[str, Any]) -> None:
    api = dev_controller["api"]
    token = _device_login(dev_controller["idp"], "ada@example.com")
    identity = Identity.generate(dev_controller["pow_difficulty"], progress=False)

    with httpx.Client(timeout=30) as http:
        body = _pair_body(http, api, identity)
        paired = http.post(
            f"{api}/agent/pair", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert paired.status_code == 200, paired.text
        credential = paired.json()["node_credential"]
        config = http.get(
            f"{api}/agent/config",
            params={"wait": 0},
            headers={"Authorization": f"Bearer {credential}"},
        )

    assert credential.startswith("nsn_")
    assert config.status_code == 200, config.text
    assert "revision" in config.json()


def test_unverified_email_cannot_pair(dev_controller: dict[str, Any]) -> None:
    api = dev_controller["api"]
    token = _device_login(dev_controller["idp"], "eve@example.com", email_verified=False)
    identity = Identity.generate(dev_controller["pow_difficulty"], progress=False)

    with httpx.Client(timeout=30) as http:
        response = http.post(
            f"{api}/agent/pair",
            json=_pair_body(http, api, identity),
            headers={"Authorization": f"Bearer {token}"},
        )

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "email_not_verified"
    assert "not verified at the identity provider" in response.json()["detail"]


def test_agent_token_rejected_on_user_api(dev_controller: dict[str, Any]) -> None:
    token = _device_login(dev_controller["idp"], "ada@example.com")

    response = httpx.get(
        f"{dev_controller['api']}/networks",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "token_wrong_audience"
