"""Access token validation and userinfo lookups against one OpenID Connect provider.

The provider is found through its discovery document (OpenID Connect Discovery 1.0, section 4).
Tokens are JWTs (RFC 7519) signed with a key from the provider's JWKS (RFC 7517). The module
imports no Django, so the API, the tasks and the tests use it alike.

Audience rule (the `audience` argument, `OAUTH_AUDIENCE` or `OAUTH_AGENT_AUDIENCE`):
- when the token has an `aud` claim (a string or a list), it must contain the audience;
- when the token has no `aud` claim, its `azp` or `client_id` claim must equal the audience,
  because several providers issue access tokens to public clients that name the client only there.
A token whose `aud` names other parties only is rejected even when `azp` matches, because such a
token was issued for another API.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import extract_compact

from netsody_controller.oidc.errors import (
    EmailNotVerifiedError,
    OidcError,
    ProviderConfigurationError,
    ProviderUnavailableError,
    TokenAlgorithmNotAllowedError,
    TokenExpiredError,
    TokenInvalidError,
    TokenInvalidSignatureError,
    TokenNotYetValidError,
    TokenRejectedByProviderError,
    TokenUnknownKeyError,
    TokenWrongAudienceError,
    TokenWrongIssuerError,
    UserInfoSubjectMismatchError,
)

logger = logging.getLogger(__name__)

# SECURITY: asymmetric algorithms only. `none` and the HMAC family (HS*) are never accepted,
# because an HMAC key would have to be shared with every verifier, and accepting HS* next to RSA
# opens the algorithm confusion attack (the public key used as an HMAC secret).
# "Ed25519" is the fully specified name of EdDSA over Ed25519 (RFC 9864).
ALLOWED_ALGORITHMS = ("RS256", "ES256", "EdDSA", "Ed25519")
_KEY_TYPES_BY_ALGORITHM = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP", "Ed25519": "OKP"}
_KEY_CLASSES = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}

DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
MAX_TOKEN_LENGTH = 16 * 1024
DEFAULT_JWKS_REFETCH_INTERVAL_SECONDS = 60.0
DEFAULT_JWKS_MAX_AGE_SECONDS = 3600.0
DEFAULT_DISCOVERY_MAX_AGE_SECONDS = 3600.0
# After a failed discovery fetch with nothing cached, requests fail fast for this long instead of
# each waiting for the provider's timeout.
DISCOVERY_RETRY_DELAY_SECONDS = 5.0


@dataclass(frozen=True)
class ProviderMetadata:
    """The fields of a provider's discovery document that Netsody uses."""

    issuer: str
    jwks_uri: str
    userinfo_endpoint: str | None
    authorization_endpoint: str | None
    token_endpoint: str | None
    device_authorization_endpoint: str | None
    document: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class TokenClaims:
    """The claims of a validated access token."""

    subject: str
    issuer: str
    audience: tuple[str, ...]
    expires_at: int
    issued_at: int | None
    scopes: tuple[str, ...]
    client_id: str | None
    email: str | None
    claims: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class UserInfo:
    """A userinfo response (OpenID Connect Core 1.0, section 5.3.2).

    `email_verified` is None when the provider does not send the claim.
    """

    subject: str
    email: str | None
    email_verified: bool | None
    name: str | None
    picture: str | None
    claims: Mapping[str, Any] = field(repr=False)


class OidcProvider:
    """One OpenID provider: its discovery document, its JWKS and its userinfo endpoint.

    Nothing is fetched in the constructor; the discovery document and the JWKS are loaded on
    first use and cached. A token that names an unknown key id triggers a JWKS refetch, at most
    one per `jwks_refetch_interval` seconds, so a flood of forged key ids cannot make the
    controller hammer the provider. A refresh that fails keeps the keys already known. All
    methods are thread-safe; the `a`-prefixed variants run the same code in a worker thread.
    """

    def __init__(
        self,
        discovery_url: str,
        *,
        audience: str,
        http_timeout: float = 10.0,
        leeway: int = 30,
        jwks_refetch_interval: float = DEFAULT_JWKS_REFETCH_INTERVAL_SECONDS,
        jwks_max_age: float = DEFAULT_JWKS_MAX_AGE_SECONDS,
        discovery_max_age: float = DEFAULT_DISCOVERY_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
        http_client: httpx.Client | None = None,
    ) -> None:
        if not audience:
            raise ValueError("audience must be a non-empty client id or API identifier")
        self.discovery_url = discovery_url
        self.audience = audience
        self.leeway = leeway
        self.jwks_refetch_interval = jwks_refetch_interval
        self.jwks_max_age = jwks_max_age
        self.discovery_max_age = discovery_max_age
        self._clock = clock
        self._http = http_client or httpx.Client(timeout=http_timeout, follow_redirects=False)
        self._metadata_lock = threading.Lock()
        self._keys_lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_loaded_at = 0.0
        self._metadata_failure: tuple[float, OidcError] | None = None
        self._keys: dict[str, Any] = {}
        self._keys_loaded_at: float | None = None
        self._last_unknown_kid_refetch: float | None = None

    def __repr__(self) -> str:
        return f"OidcProvider({self.discovery_url!r}, audience={self.audience!r})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    # Discovery and keys

    @property
    def metadata(self) -> ProviderMetadata:
        """The discovery document, fetched on first use and refreshed after `discovery_max_age`.

        Raises `ProviderUnavailableError` or `ProviderConfigurationError` when no usable document
        was ever loaded, and repeats that error without a fetch for
        `DISCOVERY_RETRY_DELAY_SECONDS`. A failed refresh keeps the previous document.
        """
        with self._metadata_lock:
            now = time.monotonic()
            stale = now - self._metadata_loaded_at >= self.discovery_max_age
            if self._metadata is None and self._metadata_failure is not None:
                failed_at, error = self._metadata_failure
                if now - failed_at < DISCOVERY_RETRY_DELAY_SECONDS:
                    raise type(error)(error.detail) from error
            if self._metadata is None or stale:
                try:
                    self._metadata = self._fetch_metadata()
                    self._metadata_loaded_at = now
                    self._metadata_failure = None
                except OidcError as error:
                    if self._metadata is None:
                        self._metadata_failure = (now, error)
                        raise
                    logger.warning(
                        "Refreshing the OpenID discovery document failed; keeping the cached one",
                        extra={"discovery_url": self.discovery_url},
                        exc_info=True,
                    )
            return self._metadata

    def _fetch_metadata(self) -> ProviderMetadata:
        document = self._get_json(self.discovery_url, resource="discovery document")
        missing = [name for name in ("issuer", "jwks_uri") if not document.get(name)]
        if missing:
            raise ProviderConfigurationError(
                f"The discovery document at {self.discovery_url} lacks {', '.join(missing)}; "
                "check that the URL points at an OpenID provider's openid-configuration"
            )
        issuer = str(document["issuer"])
        # SECURITY: OpenID Connect Discovery 1.0, section 4.3: the issuer in the document must be
        # the URL the document was fetched from, minus the well-known suffix. This stops a
        # document served at one URL from vouching for tokens of another issuer.
        if self.discovery_url.endswith(DISCOVERY_SUFFIX):
            expected = self.discovery_url[: -len(DISCOVERY_SUFFIX)]
            if issuer.rstrip("/") != expected.rstrip("/"):
                raise ProviderConfigurationError(
                    f"The discovery document at {self.discovery_url} names issuer {issuer!r}, "
                    f"expected {expected!r}; set the discovery URL to "
                    f"{issuer.rstrip('/')}{DISCOVERY_SUFFIX}"
                )
        logger.info("Loaded OpenID discovery document", extra={"issuer": issuer})
        return ProviderMetadata(
            issuer=issuer,
            jwks_uri=str(document["jwks_uri"]),
            userinfo_endpoint=_optional_str(document, "userinfo_endpoint"),
            authorization_endpoint=_optional_str(document, "authorization_endpoint"),
            token_endpoint=_optional_str(document, "token_endpoint"),
            device_authorization_endpoint=_optional_str(document, "device_authorization_endpoint"),
            document=document,
        )

    def _key_for(self, kid: str | None, algorithm: str) -> Any:
        """Return the verification key for `kid`, refetching the JWKS when it is unknown."""
        jwks_uri = self.metadata.jwks_uri
        with self._keys_lock:
            now = time.monotonic()
            if self._keys_loaded_at is None or now - self._keys_loaded_at >= self.jwks_max_age:
                self._refresh_keys_locked(jwks_uri, now, required=self._keys_loaded_at is None)
            key = self._select_key_locked(kid, algorithm)
            if key is None and self._may_refetch_locked(now):
                logger.info(
                    "Token names an unknown key id; refetching the JWKS", extra={"kid": kid}
                )
                self._last_unknown_kid_refetch = now
                self._refresh_keys_locked(jwks_uri, now, required=False)
                key = self._select_key_locked(kid, algorithm)
        if key is None:
            raise TokenUnknownKeyError(
                f"The token is signed with key id {kid!r}, which the identity provider's JWKS "
                "does not contain"
            )
        return key

    def _may_refetch_locked(self, now: float) -> bool:
        # Only refetches caused by unknown key ids count, so the first rotation after a start
        # is picked up at once.
        return self._last_unknown_kid_refetch is None or (
            now - self._last_unknown_kid_refetch >= self.jwks_refetch_interval
        )

    def _refresh_keys_locked(self, jwks_uri: str, now: float, *, required: bool) -> None:
        try:
            document = self._get_json(jwks_uri, resource="JWKS")
            self._keys = _import_keys(document, jwks_uri)
            self._keys_loaded_at = now
        except OidcError:
            if required:
                raise
            logger.warning(
                "Refreshing the JWKS failed; keeping the cached keys",
                extra={"jwks_uri": jwks_uri},
                exc_info=True,
            )

    def _select_key_locked(self, kid: str | None, algorithm: str) -> Any:
        key_type = _KEY_TYPES_BY_ALGORITHM[algorithm]
        if kid is not None:
            key = self._keys.get(kid)
            return key if key is not None and key.key_type == key_type else None
        # NOTE: a token without `kid` is accepted only when exactly one key of its type exists.
        candidates = [key for key in self._keys.values() if key.key_type == key_type]
        return candidates[0] if len(candidates) == 1 else None

    # Token validation

    def validate_access_token(self, token: str) -> TokenClaims:
        """Validate a bearer access token and return its claims.

        Checks, in this order: the JWT form, the algorithm allow-list, the signature against the
        provider's JWKS, the issuer, `exp`, `nbf` and `iat` (with `leeway` seconds of clock skew),
        and the audience (see the module docstring). Raises a `TokenInvalidError` subclass for a
        token to reject, or `ProviderUnavailableError` / `ProviderConfigurationError` when the
        provider's keys cannot be loaded.

        NOTE: an ID token issued to the audience's client passes the same checks, because
        providers mark access tokens differently (`typ` "at+jwt", "JWT" or none).
        """
        header = _read_header(token)
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenAlgorithmNotAllowedError(
                f"The token is signed with algorithm {algorithm!r}; "
                f"accepted algorithms are {', '.join(ALLOWED_ALGORITHMS)}"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenInvalidError("The token header has a kid that is not a string")
        key = self._key_for(kid, algorithm)
        try:
            claims = dict(jwt.decode(token, key, algorithms=[algorithm]).claims)
        except BadSignatureError as error:
            raise TokenInvalidSignatureError(
                "The token signature does not verify with the identity provider's key"
            ) from error
        except (JoseError, ValueError) as error:
            raise TokenInvalidError(f"The token could not be decoded: {error}") from error
        return self._check_claims(claims)

    async def avalidate_access_token(self, token: str) -> TokenClaims:
        """Run `validate_access_token` in a worker thread (for async views)."""
        return await asyncio.to_thread(self.validate_access_token, token)

    def _check_claims(self, claims: dict[str, Any]) -> TokenClaims:
        issuer = self.metadata.issuer
        if claims.get("iss") != issuer:
            raise TokenWrongIssuerError(
                f"The token was issued by {claims.get('iss')!r}, expected {issuer!r}"
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenInvalidError("The token has no sub (subject) claim")

        now = self._clock()
        expires_at = _numeric_claim(claims, "exp", required=True)
        assert expires_at is not None
        if now > expires_at + self.leeway:
            raise TokenExpiredError(f"The token expired at {int(expires_at)} (now {int(now)})")
        for name in ("nbf", "iat"):
            value = _numeric_claim(claims, name, required=False)
            if value is not None and value > now + self.leeway:
                raise TokenNotYetValidError(
                    f"The token's {name} is {int(value)}, in the future (now {int(now)}); "
                    "check the clocks of the controller and the identity provider"
                )
        audience = self._check_audience(claims)

        issued_at = _numeric_claim(claims, "iat", required=False)
        client_id = claims.get("client_id") or claims.get("azp")
        email = claims.get("email")
        return TokenClaims(
            subject=subject,
            issuer=issuer,
            audience=audience,
            expires_at=int(expires_at),
            issued_at=None if issued_at is None else int(issued_at),
            scopes=_scopes(claims),
            client_id=client_id if isinstance(client_id, str) else None,
            email=email if isinstance(email, str) else None,
            claims=claims,
        )

    def _check_audience(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        raw = claims.get("aud")
        if raw is None:
            # SECURITY: providers that omit `aud` name the client in `azp` or `client_id`;
            # accept exactly that client and nothing broader.
            if self.audience in (claims.get("azp"), claims.get("client_id")):
                return ()
            raise TokenWrongAudienceError(
                f"The token has no aud claim and its azp/client_id is not {self.audience!r}"
            )
        audience = (raw,) if isinstance(raw, str) else raw
        if not isinstance(audience, list | tuple) or not all(isinstance(a, str) for a in audience):
            raise TokenInvalidError("The token's aud claim is neither a string nor a list")
        if self.audience not in audience:
            raise TokenWrongAudienceError(
                f"The token is for audience {', '.join(audience) or '(empty)'}, "
                f"expected {self.audience!r}"
            )
        return tuple(audience)

    # Userinfo

    def fetch_userinfo(self, token: str, *, claims: TokenClaims | None = None) -> UserInfo:
        """Fetch the user's profile from the userinfo endpoint with `token`.

        `claims` are the token's validated claims; when None the token is validated first.
        Raises `UserInfoSubjectMismatchError` when the response names another subject,
        `EmailNotVerifiedError` when it carries `email_verified=false`, and
        `TokenRejectedByProviderError` when the provider responds with 401 or 403.
        """
        if claims is None:
            claims = self.validate_access_token(token)
        endpoint = self.metadata.userinfo_endpoint
        if endpoint is None:
            raise ProviderConfigurationError(
                f"The discovery document at {self.discovery_url} has no userinfo_endpoint"
            )
        document = self._get_json(endpoint, resource="userinfo", token=token)
        if document.get("sub") != claims.subject:
            # SECURITY: OpenID Connect Core 1.0, section 5.3.2: a response for another subject
            # must not be used.
            raise UserInfoSubjectMismatchError(
                "The userinfo response names another subject than the access token"
            )
        info = _userinfo(document)
        if info.email_verified is False:
            raise EmailNotVerifiedError(
                f"The email address {info.email or '(none)'} is not verified at the identity "
                "provider; verify it there (or ask its administrator to mark it verified) "
                "and sign in again"
            )
        return info

    async def afetch_userinfo(self, token: str, *, claims: TokenClaims | None = None) -> UserInfo:
        """Run `fetch_userinfo` in a worker thread (for async views)."""
        return await asyncio.to_thread(self.fetch_userinfo, token, claims=claims)

    # HTTP

    def _get_json(self, url: str, *, resource: str, token: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._http.get(url, headers=headers)
        except httpx.HTTPError as error:
            raise ProviderUnavailableError(
                f"The identity provider's {resource} at {url} could not be fetched: "
                f"{type(error).__name__}: {error}"
            ) from error
        if token is not None and response.status_code in (401, 403):
            raise TokenRejectedByProviderError(
                f"The identity provider rejected the token at its {resource} endpoint "
                f"(HTTP {response.status_code})"
            )
        if response.status_code >= 500:
            raise ProviderUnavailableError(
                f"The identity provider's {resource} at {url} returned HTTP {response.status_code}"
            )
        if response.status_code != 200:
            raise ProviderConfigurationError(
                f"The identity provider's {resource} at {url} returned HTTP "
                f"{response.status_code}; check the provider URL"
            )
        try:
            document = response.json()
        except ValueError as error:
            content_type = response.headers.get("content-type", "(none)")
            raise ProviderConfigurationError(
                f"The identity provider's {resource} at {url} is not JSON "
                f"(content type {content_type})"
            ) from error
        if not isinstance(document, dict):
            raise ProviderConfigurationError(
                f"The identity provider's {resource} at {url} is not a JSON object"
            )
        return document


def _read_header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or not token:
        raise TokenInvalidError("The bearer token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalidError(f"The bearer token is longer than {MAX_TOKEN_LENGTH} characters")
    if token.count(".") != 2:
        raise TokenInvalidError(
            "The bearer token is not a JWT (expected three dot-separated parts)"
        )
    try:
        return dict(extract_compact(token.encode("ascii")).protected)
    except (JoseError, ValueError, UnicodeError) as error:
        raise TokenInvalidError(f"The token header could not be decoded: {error}") from error


def _import_keys(document: Mapping[str, Any], jwks_uri: str) -> dict[str, Any]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ProviderConfigurationError(f"The JWKS at {jwks_uri} has no keys list")
    keys: dict[str, Any] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        key_class: Any = _KEY_CLASSES.get(str(entry.get("kty")))
        if key_class is None:
            continue
        try:
            key = key_class.import_key(entry)
        except (JoseError, ValueError, TypeError):
            logger.warning("Skipping unusable JWKS entry", extra={"jwks_index": index})
            continue
        keys[str(entry.get("kid") or f"#{index}")] = key
    return keys


def _optional_str(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    return str(value) if value else None


def _numeric_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenInvalidError(f"The token has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenInvalidError(f"The token's {name} claim is not a number")
    return float(value)


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return tuple(raw.split())
    if isinstance(raw, list):
        return tuple(str(item) for item in raw)
    return ()


def _userinfo(document: Mapping[str, Any]) -> UserInfo:
    email = document.get("email")
    name = document.get("name") or document.get("preferred_username")
    picture = document.get("picture")
    return UserInfo(
        subject=str(document["sub"]),
        email=email if isinstance(email, str) else None,
        email_verified=_boolean_claim(document.get("email_verified")),
        name=name if isinstance(name, str) else None,
        picture=picture if isinstance(picture, str) else None,
        claims=dict(document),
    )


def _boolean_claim(value: Any) -> bool | None:
    # NOTE: some providers (Amazon Cognito among them) send booleans as the strings "true"/"false".
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None
