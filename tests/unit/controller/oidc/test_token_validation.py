"""Access token validation against the development provider served on loopback."""

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from netsody_controller.devidp import RunningDevIdp, start_dev_idp
from netsody_controller.oidc import (
    EmailNotVerifiedError,
    OidcProvider,
    ProviderConfigurationError,
    ProviderUnavailableError,
    TokenAlgorithmNotAllowedError,
    TokenExpiredError,
    TokenInvalidError,
    TokenInvalidSignatureError,
    TokenNotYetValidError,
    TokenUnknownKeyError,
    TokenWrongAudienceError,
    TokenWrongIssuerError,
    UserInfoSubjectMismatchError,
)

pytestmark = pytest.mark.timeout(60)

ProviderFactory = Callable[..., OidcProvider]


def _sign_with_idp_key(idp: RunningDevIdp, claims: dict[str, object]) -> str:
    key = idp.idp.keys.current
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def _claims(idp: RunningDevIdp, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": idp.base_url,
        "sub": "subject-1",
        "aud": "netsody-controller",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _b64(document: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def test_valid_token_accepted(dev_idp: RunningDevIdp, make_provider: ProviderFactory) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-controller")

    claims = provider.validate_access_token(token)

    assert claims.issuer == dev_idp.base_url
    assert claims.audience == ("netsody-controller",)
    assert claims.email == "ada@example.com"
    assert claims.client_id == "netsody-controller"
    assert claims.scopes == ("openid", "profile", "email")
    assert claims.subject


async def test_valid_token_accepted_async(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-controller")

    claims = await provider.avalidate_access_token(token)
    info = await provider.afetch_userinfo(token, claims=claims)

    assert info.subject == claims.subject


def test_forged_signature_rejected(dev_idp: RunningDevIdp, make_provider: ProviderFactory) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    forger = RSAKey.generate_key(2048, parameters={"kid": dev_idp.idp.keys.current.kid})
    token = jwt.encode({"alg": "RS256", "kid": forger.kid}, _claims(dev_idp), forger)

    with pytest.raises(TokenInvalidSignatureError) as caught:
        provider.validate_access_token(token)
    assert caught.value.code == "token_invalid_signature"
    assert caught.value.http_status == 401


def test_tampered_payload_rejected(dev_idp: RunningDevIdp, make_provider: ProviderFactory) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    header, _, signature = _sign_with_idp_key(dev_idp, _claims(dev_idp)).split(".")
    tampered = f"{header}.{_b64(_claims(dev_idp, sub='someone-else'))}.{signature}"

    with pytest.raises(TokenInvalidSignatureError):
        provider.validate_access_token(tampered)


def test_other_client_audience_rejected(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-agent")

    with pytest.raises(TokenWrongAudienceError) as caught:
        provider.validate_access_token(token)
    assert caught.value.code == "token_wrong_audience"
    assert "netsody-agent" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        pytest.param({"aud": ["api", "netsody-controller"]}, True, id="aud-list-contains"),
        pytest.param({"aud": ["api", "other"]}, False, id="aud-list-without"),
        pytest.param({"aud": None, "azp": "netsody-controller"}, True, id="no-aud-azp-matches"),
        pytest.param({"aud": None, "client_id": "netsody-controller"}, True, id="no-aud-client-id"),
        pytest.param({"aud": None, "azp": "other"}, False, id="no-aud-azp-other"),
        pytest.param({"aud": None}, False, id="no-aud-no-azp"),
        pytest.param({"aud": "api", "azp": "netsody-controller"}, False, id="aud-other-azp-ours"),
    ],
)
def test_audience_rule(
    dev_idp: RunningDevIdp,
    make_provider: ProviderFactory,
    overrides: dict[str, object],
    accepted: bool,
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = _sign_with_idp_key(dev_idp, _claims(dev_idp, **overrides))

    if accepted:
        assert provider.validate_access_token(token).subject == "subject-1"
    else:
        with pytest.raises(TokenWrongAudienceError):
            provider.validate_access_token(token)


def test_expired_token_rejected(dev_idp: RunningDevIdp, make_provider: ProviderFactory) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(
        email="ada@example.com", client_id="netsody-controller", lifetime=-120
    )

    with pytest.raises(TokenExpiredError) as caught:
        provider.validate_access_token(token)
    assert caught.value.code == "token_expired"


def test_expiry_within_leeway_accepted(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(
        email="ada@example.com", client_id="netsody-controller", lifetime=-5
    )

    assert provider.validate_access_token(token).email == "ada@example.com"


def test_not_before_in_future_rejected(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(
        email="ada@example.com", client_id="netsody-controller", not_before=time.time() + 600
    )

    with pytest.raises(TokenNotYetValidError) as caught:
        provider.validate_access_token(token)
    assert caught.value.code == "token_not_yet_valid"


def test_missing_exp_rejected(dev_idp: RunningDevIdp, make_provider: ProviderFactory) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = _sign_with_idp_key(dev_idp, _claims(dev_idp, exp=None))

    with pytest.raises(TokenInvalidError, match="no exp claim"):
        provider.validate_access_token(token)


def test_foreign_issuer_rejected(dev_idp: RunningDevIdp, make_provider: ProviderFactory) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = _sign_with_idp_key(dev_idp, _claims(dev_idp, iss="http://127.0.0.1:1"))

    with pytest.raises(TokenWrongIssuerError):
        provider.validate_access_token(token)


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
def test_disallowed_algorithm_rejected(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory, algorithm: str
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    if algorithm == "none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(dev_idp))}."
    else:
        secret = OctKey.import_key(b"a shared secret of thirty-two by")
        token = jwt.encode({"alg": "HS256"}, _claims(dev_idp), secret)

    with pytest.raises(TokenAlgorithmNotAllowedError) as caught:
        provider.validate_access_token(token)
    assert caught.value.code == "token_algorithm_not_allowed"


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "x" * 20000])
def test_malformed_token_rejected(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory, token: str
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")

    with pytest.raises(TokenInvalidError):
        provider.validate_access_token(token)


def test_rotated_key_picked_up_after_refetch(
    make_idp: Callable[..., RunningDevIdp], make_provider: ProviderFactory
) -> None:
    idp = make_idp(algorithm="RS256")
    jwks_requests: list[str] = []
    client = httpx.Client(
        timeout=5,
        event_hooks={"request": [lambda request: jwks_requests.append(request.url.path)]},
    )
    provider = make_provider(idp.discovery_url, "netsody-agent", http_client=client)
    old_token = idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-agent")
    provider.validate_access_token(old_token)

    idp.idp.rotate_signing_key()
    new_token = idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-agent")

    assert provider.validate_access_token(new_token).email == "ada@example.com"
    assert provider.validate_access_token(old_token).email == "ada@example.com"
    assert jwks_requests.count("/jwks") == 2


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_other_allowed_algorithms_accepted(
    make_idp: Callable[..., RunningDevIdp], make_provider: ProviderFactory, algorithm: str
) -> None:
    idp = make_idp(algorithm=algorithm)
    provider = make_provider(idp.discovery_url, "netsody-agent")
    token = idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-agent")

    assert provider.validate_access_token(token).email == "ada@example.com"
    assert provider.fetch_userinfo(token).email == "ada@example.com"


def test_unknown_key_refetch_rate_limited(
    make_idp: Callable[..., RunningDevIdp], make_provider: ProviderFactory
) -> None:
    idp = make_idp(algorithm="ES256")
    jwks_requests: list[str] = []
    client = httpx.Client(
        timeout=5,
        event_hooks={"request": [lambda request: jwks_requests.append(request.url.path)]},
    )
    provider = make_provider(
        idp.discovery_url, "netsody-agent", http_client=client, jwks_refetch_interval=3600
    )
    provider.validate_access_token(
        idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-agent")
    )
    idp.idp.rotate_signing_key()
    provider.validate_access_token(
        idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-agent")
    )

    idp.idp.rotate_signing_key()
    third_key_token = idp.idp.issue_access_token(email="ada@example.com", client_id="netsody-agent")

    with pytest.raises(TokenUnknownKeyError) as caught:
        provider.validate_access_token(third_key_token)
    assert caught.value.code == "token_unknown_key"
    assert jwks_requests.count("/jwks") == 2


def test_userinfo_returns_profile(dev_idp: RunningDevIdp, make_provider: ProviderFactory) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(
        email="grace@example.com", client_id="netsody-controller"
    )

    info = provider.fetch_userinfo(token)

    assert info.email == "grace@example.com"
    assert info.email_verified is True
    assert info.name == "grace"


def test_userinfo_unverified_email_rejected(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    token = dev_idp.idp.issue_access_token(
        email="unverified@example.com", client_id="netsody-controller", email_verified=False
    )

    with pytest.raises(EmailNotVerifiedError) as caught:
        provider.fetch_userinfo(token)
    assert caught.value.code == "email_not_verified"
    assert caught.value.http_status == 403
    assert "unverified@example.com is not verified at the identity provider" in str(caught.value)


def test_userinfo_other_subject_rejected(
    dev_idp: RunningDevIdp, make_provider: ProviderFactory
) -> None:
    provider = make_provider(dev_idp.discovery_url, "netsody-controller")
    first = dev_idp.idp.issue_access_token(email="one@example.com", client_id="netsody-controller")
    second = dev_idp.idp.issue_access_token(email="two@example.com", client_id="netsody-controller")

    with pytest.raises(UserInfoSubjectMismatchError):
        provider.fetch_userinfo(second, claims=provider.validate_access_token(first))


def test_unreachable_provider_unavailable(make_provider: ProviderFactory) -> None:
    provider = make_provider("http://127.0.0.1:9/.well-known/openid-configuration", "x")

    with pytest.raises(ProviderUnavailableError) as caught:
        provider.validate_access_token(f"{_b64({'alg': 'RS256'})}.{_b64({})}.c2ln")
    assert caught.value.code == "provider_unavailable"
    assert caught.value.http_status == 503


def test_discovery_issuer_mismatch_rejected(tmp_path: Path, make_provider: ProviderFactory) -> None:
    with start_dev_idp(tmp_path, issuer="http://127.0.0.1:1") as idp:
        discovery_url = f"{idp.local_url}/.well-known/openid-configuration"
        provider = make_provider(discovery_url, "netsody-controller")
        with pytest.raises(ProviderConfigurationError, match="names issuer"):
            provider.metadata  # noqa: B018 - the property fetches the document


def test_failed_discovery_not_refetched_at_once(make_provider: ProviderFactory) -> None:
    requests: list[str] = []
    client = httpx.Client(
        timeout=5, event_hooks={"request": [lambda request: requests.append(str(request.url))]}
    )
    provider = make_provider(
        "http://127.0.0.1:9/.well-known/openid-configuration", "x", http_client=client
    )

    for _ in range(3):
        with pytest.raises(ProviderUnavailableError):
            provider.metadata  # noqa: B018 - the property fetches the document

    assert len(requests) == 1
