"""The protocol logic of the development OpenID provider, free of HTTP.

`DevIdp` issues JWT access tokens (RFC 9068 layout), ID tokens and refresh tokens through the
authorization code grant with PKCE (RFC 6749 section 4.1, RFC 7636) and the device authorization
grant (RFC 8628). It keeps grants in memory; keys and users live in the state directory.
"""

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from netsody_controller.devidp.store import (
    SUPPORTED_ALGORITHMS,
    DevUser,
    SigningKeys,
    UserStore,
)

logger = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CONTROLLER_CLIENT_ID = "netsody-controller"
AGENT_CLIENT_ID = "netsody-agent"
DEFAULT_SCOPE = "openid profile email"
# RFC 8628 section 6.1: a user code from 20 consonants (no vowels, so no words), 8 characters.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
# RFC 7636 section 4.1: 43 to 128 unreserved characters.
CODE_VERIFIER_PATTERN = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 section 5.2): `error` code, description, HTTP status."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class DevClient:
    """A registered public client: its id, redirect URIs (exact match) and grant types."""

    client_id: str
    redirect_uris: tuple[str, ...] = ()
    grant_types: frozenset[str] = frozenset({"authorization_code", "refresh_token"})


@dataclass(frozen=True)
class DevIdpSettings:
    """Lifetimes (seconds), the device polling interval and the registered clients.

    The clients default to `default_clients()` (controller at http://127.0.0.1:8080).
    """

    clients: tuple[DevClient, ...] = field(default_factory=lambda: default_clients())
    algorithm: str = "RS256"
    access_token_lifetime: int = 3600
    refresh_token_lifetime: int = 30 * 24 * 3600
    authorization_code_lifetime: int = 120
    device_code_lifetime: int = 600
    device_interval: int = 5
    # RFC 8628 section 3.5 prescribes 5 seconds; tests may lower it.
    slow_down_increment: int = 5


def default_clients(
    controller_urls: Iterable[str] = ("http://127.0.0.1:8080",),
) -> tuple[DevClient, ...]:
    """Return the two default public clients.

    `netsody-controller` (dashboard and Swagger UI, authorization code with PKCE) may redirect to
    `<controller>/callback` and `<controller>/swagger-ui/oauth2-redirect.html` of each URL;
    `netsody-agent` uses the device authorization grant.
    """
    redirect_uris = tuple(
        f"{url.rstrip('/')}{path}"
        for url in controller_urls
        for path in ("/callback", "/swagger-ui/oauth2-redirect.html")
    )
    return (
        DevClient(CONTROLLER_CLIENT_ID, redirect_uris),
        DevClient(
            AGENT_CLIENT_ID,
            grant_types=frozenset({DEVICE_CODE_GRANT, "refresh_token"}),
        ),
    )


@dataclass
class DeviceGrant:
    """A pending device authorization (RFC 8628 section 3.2)."""

    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int
    last_poll: float | None = None
    decision: str = "pending"
    user: DevUser | None = None


@dataclass
class AuthorizationCode:
    """An issued authorization code and the authorization request it belongs to."""

    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    nonce: str | None
    user: DevUser
    expires_at: float


@dataclass
class RefreshGrant:
    """The client, scope and user of an issued refresh token."""

    client_id: str
    scope: str
    user: DevUser
    expires_at: float


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request (RFC 6749 section 4.1.1 plus PKCE)."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str
    nonce: str | None
    params: Mapping[str, str] = field(repr=False)


class RedirectError(Exception):
    """An authorization error that is sent back to the client's redirect URI."""

    def __init__(self, request: AuthorizationRequest, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.request = request
        self.error = error
        self.description = description


def _origin(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return parts.scheme, parts.netloc


def normalize_user_code(text: str) -> str:
    """Upper-case `text` and drop everything but letters, so `bcdf-ghjk` matches `BCDFGHJK`."""
    return "".join(character for character in text.upper() if character.isalpha())


def format_user_code(code: str) -> str:
    """Format a user code for display as two groups of four (`BCDF-GHJK`)."""
    return f"{code[:4]}-{code[4:]}"


class DevIdp:
    """A development-only OpenID provider: anyone who reaches it can sign in as anyone.

    Driven by the HTTP layer in `netsody_controller.devidp.app`; tests may also call
    `issue_access_token` and `rotate_signing_key` directly. `clock` returns Unix seconds and
    drives every expiry, so tests can move time forward.
    """

    def __init__(
        self,
        issuer: str,
        state_dir: Path,
        settings: DevIdpSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.settings = settings or DevIdpSettings()
        self.clock = clock
        state_dir.mkdir(parents=True, exist_ok=True)
        self.keys = SigningKeys(state_dir, self.settings.algorithm)
        self.users = UserStore(state_dir)
        self._clients = {client.client_id: client for client in self.settings.clients}
        self._lock = threading.Lock()
        self._device_grants: dict[str, DeviceGrant] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self._refresh_grants: dict[str, RefreshGrant] = {}
        self._form_secret = secrets.token_bytes(32)

    # Metadata

    def discovery_document(self) -> dict[str, Any]:
        """Return the discovery document (OpenID Connect Discovery 1.0, section 3)."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "device_authorization_endpoint": f"{base}/device_authorization",
            "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/jwks",
            "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.keys.algorithm],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "email", "email_verified", "name", "preferred_username"],
            "dev_only": True,
            "dev_only_warning": "Development-only OpenID provider: it signs in anyone as anyone.",
        }

    def client(self, client_id: str) -> DevClient:
        """Return the registered client, or raise `OAuthError("invalid_client")`."""
        client = self._clients.get(client_id)
        if client is None:
            raise OAuthError(
                "invalid_client",
                f"Unknown client_id {client_id!r}; registered: {', '.join(sorted(self._clients))}",
                status=401,
            )
        return client

    def rotate_signing_key(self) -> str:
        """Make a new key the signing key (the old one stays in the JWKS); return its kid."""
        return str(self.keys.rotate().kid)

    # Tokens

    def issue_access_token(
        self,
        *,
        email: str,
        client_id: str,
        scope: str = DEFAULT_SCOPE,
        email_verified: bool = True,
        lifetime: int | None = None,
        not_before: float | None = None,
    ) -> str:
        """Sign in `email` (creating the user) and return an access token for `client_id`.

        For tests of token validation; the HTTP endpoints issue tokens only through the grants.
        """
        user = self.users.sign_in(email, email_verified=email_verified)
        return self._access_token(user, client_id, scope, lifetime=lifetime, not_before=not_before)

    def _sign(self, claims: dict[str, Any], *, media_type: str) -> str:
        key = self.keys.current
        algorithm = self.keys.algorithm
        header = {"alg": algorithm, "kid": key.kid, "typ": media_type}
        # joserfc signs EdDSA only when the algorithm is listed explicitly.
        return jwt.encode(header, claims, key, algorithms=[algorithm])

    def _access_token(
        self,
        user: DevUser,
        client_id: str,
        scope: str,
        *,
        lifetime: int | None = None,
        not_before: float | None = None,
    ) -> str:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": user.subject,
            "aud": client_id,
            "client_id": client_id,
            "iat": now,
            "nbf": int(not_before) if not_before is not None else now,
            "exp": now + (self.settings.access_token_lifetime if lifetime is None else lifetime),
            "jti": secrets.token_urlsafe(16),
            "scope": scope,
            "email": user.email,
        }
        return self._sign(claims, media_type="at+jwt")

    def _token_response(
        self, user: DevUser, client_id: str, scope: str, *, nonce: str | None = None
    ) -> dict[str, Any]:
        """Build the token endpoint's success response (RFC 6749 section 5.1)."""
        now = self.clock()
        response: dict[str, Any] = {
            "access_token": self._access_token(user, client_id, scope),
            "token_type": "Bearer",
            "expires_in": self.settings.access_token_lifetime,
            "scope": scope,
        }
        if "openid" in scope.split():
            id_claims = {
                "iss": self.issuer,
                "aud": client_id,
                "iat": int(now),
                "exp": int(now) + self.settings.access_token_lifetime,
                "auth_time": int(now),
                **user.claims(),
            }
            if nonce:
                id_claims["nonce"] = nonce
            response["id_token"] = self._sign(id_claims, media_type="JWT")
        if "refresh_token" in self.client(client_id).grant_types:
            refresh_token = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh_grants[refresh_token] = RefreshGrant(
                    client_id, scope, user, now + self.settings.refresh_token_lifetime
                )
            response["refresh_token"] = refresh_token
        logger.info("Issued tokens", extra={"client_id": client_id, "subject": user.subject})
        return response

    def verify_access_token(self, token: str) -> DevUser:
        """Return the user of an access token this provider issued, or raise `OAuthError`."""
        try:
            keys = KeySet.import_key_set(self.keys.jwks())  # type: ignore[arg-type]
            claims = jwt.decode(token, keys, algorithms=list(SUPPORTED_ALGORITHMS)).claims
        except (JoseError, ValueError) as error:
            raise OAuthError(
                "invalid_token", f"The token is invalid: {error}", status=401
            ) from error
        if claims.get("iss") != self.issuer or claims.get("exp", 0) <= self.clock():
            raise OAuthError("invalid_token", "The token is expired or foreign", status=401)
        user = self.users.by_subject(str(claims.get("sub")))
        if user is None:
            raise OAuthError("invalid_token", "The token's user no longer exists", status=401)
        return user

    # Token endpoint

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Handle a token request (RFC 6749 section 3.2) and return the JSON response."""
        grant_type = form.get("grant_type", "")
        client = self.client(form.get("client_id", ""))
        if grant_type not in client.grant_types:
            raise OAuthError(
                "unauthorized_client",
                f"Client {client.client_id!r} may not use grant type {grant_type!r}",
            )
        if grant_type == "authorization_code":
            return self._exchange_code(client, form)
        if grant_type == "refresh_token":
            return self._refresh(client, form)
        if grant_type == DEVICE_CODE_GRANT:
            return self._poll_device(client, form.get("device_code", ""))
        raise OAuthError("unsupported_grant_type", f"Grant type {grant_type!r} is not supported")

    def _refresh(self, client: DevClient, form: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            # Refresh tokens rotate: each is used once (RFC 9700 section 4.14.2).
            grant = self._refresh_grants.pop(form.get("refresh_token", ""), None)
        if grant is None or grant.client_id != client.client_id or grant.expires_at <= self.clock():
            raise OAuthError("invalid_grant", "The refresh token is invalid, used or expired")
        return self._token_response(grant.user, client.client_id, grant.scope)

    # Device authorization grant (RFC 8628)

    def start_device_authorization(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Handle a device authorization request (RFC 8628 section 3.1 and 3.2)."""
        client = self.client(form.get("client_id", ""))
        if DEVICE_CODE_GRANT not in client.grant_types:
            raise OAuthError(
                "unauthorized_client",
                f"Client {client.client_id!r} may not use the device authorization grant",
            )
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        grant = DeviceGrant(
            device_code=secrets.token_urlsafe(32),
            user_code=user_code,
            client_id=client.client_id,
            scope=form.get("scope") or DEFAULT_SCOPE,
            expires_at=self.clock() + self.settings.device_code_lifetime,
            interval=self.settings.device_interval,
        )
        with self._lock:
            self._purge_expired_locked()
            self._device_grants[grant.device_code] = grant
        display_code = format_user_code(user_code)
        return {
            "device_code": grant.device_code,
            "user_code": display_code,
            "verification_uri": f"{self.issuer}/device",
            "verification_uri_complete": f"{self.issuer}/device?user_code={display_code}",
            "expires_in": self.settings.device_code_lifetime,
            "interval": grant.interval,
        }

    def pending_device_grant(self, user_code: str) -> DeviceGrant | None:
        """Return the pending, unexpired device grant with `user_code`, or None."""
        code = normalize_user_code(user_code)
        with self._lock:
            for grant in self._device_grants.values():
                if (
                    hmac.compare_digest(grant.user_code, code)
                    and grant.decision == "pending"
                    and grant.expires_at > self.clock()
                ):
                    return grant
        return None

    def decide_device_grant(self, grant: DeviceGrant, user: DevUser | None) -> None:
        """Approve the grant for `user`, or deny it when `user` is None."""
        with self._lock:
            grant.user = user
            grant.decision = "approved" if user is not None else "denied"
        logger.info(
            "Device authorization decided",
            extra={"client_id": grant.client_id, "decision": grant.decision},
        )

    def _poll_device(self, client: DevClient, device_code: str) -> dict[str, Any]:
        """Handle one poll of the token endpoint (RFC 8628 section 3.4 and 3.5)."""
        now = self.clock()
        with self._lock:
            grant = self._device_grants.get(device_code)
            if grant is None or grant.client_id != client.client_id:
                raise OAuthError("invalid_grant", "Unknown or already used device_code")
            if now >= grant.expires_at:
                del self._device_grants[device_code]
                raise OAuthError("expired_token", "The device code expired; start the login again")
            too_fast = grant.last_poll is not None and now - grant.last_poll < grant.interval
            grant.last_poll = now
            if too_fast:
                grant.interval += self.settings.slow_down_increment
                raise OAuthError(
                    "slow_down", f"Polled too fast; wait {grant.interval} seconds between polls"
                )
            if grant.decision == "pending":
                raise OAuthError("authorization_pending", "The user has not decided yet")
            del self._device_grants[device_code]
        if grant.decision == "denied" or grant.user is None:
            raise OAuthError("access_denied", "The user denied the device authorization")
        return self._token_response(grant.user, client.client_id, grant.scope)

    def _purge_expired_locked(self) -> None:
        # Expired grants are kept for one more lifetime so a late poll still gets expired_token.
        cutoff = self.clock() - self.settings.device_code_lifetime
        for code in [c for c, g in self._device_grants.items() if g.expires_at < cutoff]:
            del self._device_grants[code]
        for code in [c for c, g in self._codes.items() if g.expires_at < self.clock()]:
            del self._codes[code]

    # Authorization code grant with PKCE

    def parse_authorization_request(self, params: Mapping[str, str]) -> AuthorizationRequest:
        """Validate an authorization request.

        Raises `OAuthError` when the client or redirect URI is invalid (shown to the user, never
        redirected, RFC 6749 section 4.1.2.1), and `RedirectError` for the other errors.
        """
        client = self.client(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise OAuthError(
                "invalid_request",
                f"redirect_uri {redirect_uri!r} is not registered for client "
                f"{client.client_id!r}; registered: {', '.join(client.redirect_uris) or 'none'}",
            )
        request = AuthorizationRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=params.get("scope") or DEFAULT_SCOPE,
            state=params.get("state"),
            code_challenge=params.get("code_challenge", ""),
            nonce=params.get("nonce"),
            params=dict(params),
        )
        if params.get("response_type") != "code":
            raise RedirectError(request, "unsupported_response_type", "Only response_type=code")
        if "authorization_code" not in client.grant_types:
            raise RedirectError(request, "unauthorized_client", "Client may not use this grant")
        # SECURITY: public clients must use PKCE with S256 (RFC 9700 section 2.1.1). The plain
        # method would reveal the verifier to anyone who can read the request.
        if not request.code_challenge:
            raise RedirectError(request, "invalid_request", "code_challenge is required (PKCE)")
        if params.get("code_challenge_method") != "S256":
            raise RedirectError(request, "invalid_request", "code_challenge_method must be S256")
        # OpenID Connect Core 1.0, section 3.1.2.1: the provider keeps no browser session, so a
        # request that forbids showing the sign-in page cannot succeed.
        if "none" in params.get("prompt", "").split():
            raise RedirectError(request, "login_required", "No sign-in session exists")
        return request

    def issue_authorization_code(self, request: AuthorizationRequest, user: DevUser) -> str:
        """Store and return a single-use authorization code for `user`."""
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._purge_expired_locked()
            self._codes[code] = AuthorizationCode(
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                scope=request.scope,
                code_challenge=request.code_challenge,
                nonce=request.nonce,
                user=user,
                expires_at=self.clock() + self.settings.authorization_code_lifetime,
            )
        return code

    def _exchange_code(self, client: DevClient, form: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant.expires_at <= self.clock():
            raise OAuthError("invalid_grant", "The authorization code is invalid, used or expired")
        if grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The authorization code was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = form.get("code_verifier", "")
        if not CODE_VERIFIER_PATTERN.match(verifier):
            raise OAuthError(
                "invalid_grant", "code_verifier must be 43 to 128 unreserved characters (RFC 7636)"
            )
        expected = create_s256_code_challenge(verifier)
        if not hmac.compare_digest(expected, grant.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return self._token_response(grant.user, client.client_id, grant.scope, nonce=grant.nonce)

    def logout_redirect(self, params: Mapping[str, str]) -> str | None:
        """Return where to send the browser after sign-out, or None to show a page.

        Only a `post_logout_redirect_uri` on the origin of a registered redirect URI is
        followed, so the endpoint cannot be used as an open redirect.
        """
        target = params.get("post_logout_redirect_uri", "")
        origins = {
            _origin(uri) for client in self._clients.values() for uri in client.redirect_uris
        }
        if not target or _origin(target) not in origins:
            return None
        state = params.get("state")
        if state is None:
            return target
        separator = "&" if "?" in target else "?"
        return f"{target}{separator}{urlencode({'state': state})}"

    # Form tokens

    def form_token(self, purpose: str) -> str:
        """Return the hidden form field value that a POST for `purpose` must carry back."""
        digest = hmac.new(self._form_secret, purpose.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def check_form_token(self, purpose: str, value: str) -> bool:
        """Return whether `value` is the form token for `purpose`."""
        return hmac.compare_digest(self.form_token(purpose), value)
