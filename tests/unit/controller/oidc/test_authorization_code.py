"""The authorization code grant with PKCE (RFC 7636) of the development provider."""

import base64
import hashlib
import secrets
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from netsody_controller.devidp import RunningDevIdp
from netsody_controller.devidp.browser import read_form
from netsody_controller.oidc import OidcProvider

pytestmark = pytest.mark.timeout(60)

REDIRECT_URI = "http://127.0.0.1:8080/swagger-ui/oauth2-redirect.html"


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _authorize_params(challenge: str, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "netsody-controller",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile email",
        "state": "state-123",
        "nonce": "nonce-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return params


def _sign_in(
    http: httpx.Client, idp: RunningDevIdp, params: dict[str, str], *, action: str = "approve"
) -> dict[str, list[str]]:
    """Load the sign-in page, submit its form, and return the redirect's query parameters."""
    page = http.get(f"{idp.base_url}/authorize", params=params)
    assert page.status_code == 200, page.text
    action_path, hidden = read_form(page.text)
    assert action_path == "authorize"
    response = http.post(
        f"{idp.base_url}/authorize",
        data={**hidden, "email": "ada@example.com", "name": "Ada", "action": action},
    )
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return parse_qs(location.query)


def _exchange(http: httpx.Client, idp: RunningDevIdp, code: str, verifier: str) -> httpx.Response:
    return http.post(
        f"{idp.base_url}/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "netsody-controller",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )


def test_pkce_flow_issues_valid_token(
    dev_idp: RunningDevIdp, http: httpx.Client, make_provider: Callable[..., OidcProvider]
) -> None:
    verifier, challenge = _pkce_pair()

    result = _sign_in(http, dev_idp, _authorize_params(challenge))
    response = _exchange(http, dev_idp, result["code"][0], verifier)

    assert result["state"] == ["state-123"]
    assert result["iss"] == [dev_idp.base_url]
    assert response.status_code == 200, response.text
    tokens = response.json()
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    assert provider.validate_access_token(tokens["access_token"]).email == "ada@example.com"
    id_claims = provider.validate_access_token(tokens["id_token"]).claims
    assert id_claims["nonce"] == "nonce-456"
    assert id_claims["name"] == "Ada"


def test_wrong_verifier_rejected_and_code_spent(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    verifier, challenge = _pkce_pair()
    code = _sign_in(http, dev_idp, _authorize_params(challenge))["code"][0]

    wrong = _exchange(http, dev_idp, code, secrets.token_urlsafe(48))
    retried = _exchange(http, dev_idp, code, verifier)

    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert "code_verifier does not match" in wrong.json()["error_description"]
    assert retried.json()["error"] == "invalid_grant"


def test_code_reuse_rejected(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    verifier, challenge = _pkce_pair()
    code = _sign_in(http, dev_idp, _authorize_params(challenge))["code"][0]

    assert _exchange(http, dev_idp, code, verifier).status_code == 200
    assert _exchange(http, dev_idp, code, verifier).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        pytest.param({"code_challenge": ""}, "code_challenge is required", id="no-challenge"),
        pytest.param({"code_challenge_method": "plain"}, "must be S256", id="plain-method"),
        pytest.param({"response_type": "token"}, "Only response_type=code", id="implicit"),
    ],
)
def test_invalid_request_redirects_error(
    dev_idp: RunningDevIdp, http: httpx.Client, overrides: dict[str, str], description: str
) -> None:
    _, challenge = _pkce_pair()

    response = http.get(
        f"{dev_idp.base_url}/authorize", params=_authorize_params(challenge, **overrides)
    )

    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert description in query["error_description"][0]
    assert query["state"] == ["state-123"]


def test_unregistered_redirect_uri_not_followed(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    _, challenge = _pkce_pair()
    params = _authorize_params(challenge, redirect_uri="http://127.0.0.1:9999/steal")

    response = http.get(f"{dev_idp.base_url}/authorize", params=params)

    assert response.status_code == 400
    assert "location" not in response.headers
    assert "is not registered" in response.text


def test_denied_sign_in_redirects_access_denied(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    _, challenge = _pkce_pair()

    result = _sign_in(http, dev_idp, _authorize_params(challenge), action="deny")

    assert result["error"] == ["access_denied"]
    assert "code" not in result


def test_discovery_document_fields(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    document = http.get(dev_idp.discovery_url).json()

    for name in (
        "issuer",
        "jwks_uri",
        "userinfo_endpoint",
        "authorization_endpoint",
        "token_endpoint",
        "device_authorization_endpoint",
    ):
        assert document[name].startswith(dev_idp.base_url), name
    assert document["issuer"] == dev_idp.base_url
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["dev_only"] is True


def test_pages_carry_dev_only_banner(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    for path in ("/", "/device"):
        page = http.get(f"{dev_idp.base_url}{path}")
        assert "DEVELOPMENT ONLY" in page.text, path


def test_logout_redirects_to_registered_origin(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    target = "http://127.0.0.1:8080/"

    response = http.get(
        f"{dev_idp.base_url}/logout",
        params={"post_logout_redirect_uri": target, "state": "s1"},
    )

    assert response.status_code == 302
    assert response.headers["location"] == f"{target}?state=s1"


def test_logout_ignores_foreign_redirect(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    response = http.get(
        f"{dev_idp.base_url}/logout",
        params={"post_logout_redirect_uri": "http://127.0.0.1:9999/"},
    )

    assert response.status_code == 200
    assert "location" not in response.headers
    assert "signed out" in response.text


def test_preflight_allows_bearer_header(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    response = http.request(
        "OPTIONS",
        f"{dev_idp.base_url}/userinfo",
        headers={
            "Origin": "http://127.0.0.1:8080",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "Authorization" in response.headers["access-control-allow-headers"]


def test_prompt_none_requires_login(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    _, challenge = _pkce_pair()

    response = http.get(
        f"{dev_idp.base_url}/authorize", params=_authorize_params(challenge, prompt="none")
    )

    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["login_required"]


def test_login_hint_prefills_email(dev_idp: RunningDevIdp, http: httpx.Client) -> None:
    _, challenge = _pkce_pair()
    params = _authorize_params(challenge, login_hint="ada@example.com")

    page = http.get(f"{dev_idp.base_url}/authorize", params=params)

    assert 'name="email" value="ada@example.com"' in page.text
