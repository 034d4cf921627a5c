"""Authentication of API callers: users by OIDC access token, agents by node credential.

SECURITY: the two kinds never mix. A token with the node credential prefix is rejected on user
endpoints before any OIDC work, and a token without it is rejected on node endpoints, so a
leaked credential of one kind opens nothing of the other.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache
from ninja.security import HttpBearer

from netsody_controller import oidc
from netsody_controller.accounts import services
from netsody_controller.accounts.models import User
from netsody_controller.caching import TtlCache
from netsody_controller.credentials import CredentialVerifier, looks_like_credential
from netsody_controller.errors import ErrorCode, UnauthenticatedError, UnavailableError
from netsody_controller.logsetup import NODE_ID, USER_ID
from netsody_controller.nodes.models import Device

logger = logging.getLogger(__name__)

_providers: dict[tuple[str, str], oidc.OidcProvider] = {}
_providers_lock = threading.Lock()
_user_cache: TtlCache[str, tuple[User, float]] | None = None

# Keys in the shared Django cache (Redis) with the time of the last invalidation, so every
# controller process drops its copies, not only the one that received the request.
INVALIDATED_ALL_KEY = "user-cache-invalidated:all"
INVALIDATED_SUBJECT_PREFIX = "user-cache-invalidated:subject:"
_verifier: CredentialVerifier | None = None
_state_lock = threading.Lock()


def _provider(discovery_url: str, audience: str) -> oidc.OidcProvider:
    if not discovery_url or not audience:
        raise UnavailableError(
            "User sign-in is not configured on this controller: set OAUTH_PATH and "
            "OAUTH_AUDIENCE (and OAUTH_AGENT_PATH, OAUTH_AGENT_AUDIENCE for agents)"
        )
    with _providers_lock:
        provider = _providers.get((discovery_url, audience))
        if provider is None:
            provider = oidc.OidcProvider(discovery_url, audience=audience)
            _providers[(discovery_url, audience)] = provider
        return provider


def user_cache() -> TtlCache[str, tuple[User, float]]:
    """Return this process's cache of validated tokens: the user and the wall-clock time cached."""
    global _user_cache
    with _state_lock:
        if _user_cache is None:
            limits = settings.USER_CACHE
            _user_cache = TtlCache(max_entries=limits.max_entries, ttl_secs=limits.ttl_secs)
        return _user_cache


def credential_verifier() -> CredentialVerifier:
    global _verifier
    with _state_lock:
        if _verifier is None:
            limits = settings.NODE_HMAC_CACHE
            _verifier = CredentialVerifier(
                settings.CONTROLLER_SECRET,
                max_entries=limits.max_entries,
                ttl_secs=limits.ttl_secs,
            )
        return _verifier


def authenticate_user_token(token: str, *, agent_client: bool = False) -> User:
    """Return the user an access token belongs to, creating or refreshing their record.

    `agent_client` selects the agent's OIDC client (OAUTH_AGENT_PATH, OAUTH_AGENT_AUDIENCE)
    instead of the controller's. Raises an `oidc.OidcError` for a token that must be rejected
    and for an unverified email address.
    """
    if agent_client:
        discovery, audience = settings.OAUTH_AGENT_PATH, settings.OAUTH_AGENT_AUDIENCE
    else:
        discovery, audience = settings.OAUTH_PATH, settings.OAUTH_AUDIENCE
    key = f"{audience}:{hashlib.sha256(token.encode()).hexdigest()}"
    cached = user_cache().get(key)
    if cached is not None and not _invalidated_since(cached[0].subject, cached[1]):
        return cached[0]
    provider = _provider(discovery, audience)
    claims = provider.validate_access_token(token)
    info = provider.fetch_userinfo(token, claims=claims)
    user = _upsert_user(claims, info)
    now = time.time()
    user_cache().put(key, (user, now), ttl_secs=max(0.0, claims.expires_at - now))
    return user


def _invalidated_since(subject: str, cached_at: float) -> bool:
    """Tell whether the user's cached entries were invalidated after `cached_at`.

    Only checked when ZITADEL_CACHE_INVALIDATE_SECRET enables invalidation. A cache read that
    fails counts as invalidated, so the token is validated with the provider again.
    """
    if not settings.ZITADEL_CACHE_INVALIDATE_SECRET:
        return False
    keys = [INVALIDATED_ALL_KEY, INVALIDATED_SUBJECT_PREFIX + subject]
    try:
        marks = cache.get_many(keys)
    except Exception as error:
        logger.warning("reading cache invalidations failed", extra={"error": str(error)})
        return True
    # NOTE: the mark and `cached_at` may come from different hosts, so their clocks must agree.
    return any(mark >= cached_at for mark in marks.values())


def invalidate_user_cache(subject: str | None) -> int:
    """Drop the cached tokens of the user with OpenID `subject`, or of every user when None.

    Drops this process's entries at once and records the time in the shared cache, which the
    other processes check on their next cache hit. Returns the number of entries dropped here.
    Raises UnavailableError when the shared cache cannot be written.
    """
    key = INVALIDATED_ALL_KEY if subject is None else INVALIDATED_SUBJECT_PREFIX + subject
    try:
        cache.set(key, time.time(), timeout=settings.USER_CACHE.ttl_secs + 1)
    except Exception as error:
        raise UnavailableError(
            "Recording the cache invalidation in Redis failed; check REDIS_URL and retry"
        ) from error
    if subject is None:
        dropped = len(user_cache())
        user_cache().clear()
        return dropped
    return user_cache().discard_where(lambda _, entry: entry[0].subject == subject)


def _upsert_user(claims: oidc.TokenClaims, info: oidc.UserInfo) -> User:
    fields = {
        "email": info.email or claims.email or "",
        "email_verified": info.email_verified,
        "name": info.name or "",
        "picture": info.picture or "",
    }
    user, created = User.objects.get_or_create(subject=claims.subject, defaults=fields)
    if not created and any(getattr(user, name) != value for name, value in fields.items()):
        for name, value in fields.items():
            setattr(user, name, value)
        user.save(update_fields=[*fields, "updated_at"])
    if created:
        logger.info("user signed in for the first time", extra={"user_id": str(user.id)})
    services.queue_picture_fetch(user)
    return user


def authenticate_node_credential(token: str) -> Device:
    """Return the device a node credential belongs to, or raise UnauthenticatedError."""
    parsed = credential_verifier().verify(token)
    if parsed is None:
        raise UnauthenticatedError("The node credential is invalid", ErrorCode.INVALID_TOKEN)
    device = Device.objects.filter(id=parsed.device_id).first()
    # SECURITY: a removed device, or one whose credential was reissued, is revoked even while
    # the MAC verification is still cached.
    if device is None or device.credential_generation != parsed.generation:
        credential_verifier().forget_device(parsed.device_id)
        raise UnauthenticatedError(
            "The node credential was revoked: the device was removed or paired again; "
            "run `netsody login` or join again",
            ErrorCode.INVALID_TOKEN,
        )
    return device


class UserAuth(HttpBearer):
    """Bearer authentication with a user's OIDC access token (the controller's client)."""

    agent_client = False

    def authenticate(self, request, token: str) -> User:  # type: ignore[override]
        if looks_like_credential(token):
            raise UnauthenticatedError(
                "A node credential is not accepted here. Send a user's OIDC access token",
                ErrorCode.INVALID_TOKEN,
            )
        user = authenticate_user_token(token, agent_client=self.agent_client)
        USER_ID.set(str(user.id))
        return user


class AgentUserAuth(UserAuth):
    """Bearer authentication with an access token of the agent's OIDC client (pairing)."""

    agent_client = True


class NodeAuth(HttpBearer):
    """Bearer authentication with a node credential (`nsn_...`)."""

    def authenticate(self, request, token: str) -> Device:  # type: ignore[override]
        if not looks_like_credential(token):
            raise UnauthenticatedError(
                "Agent endpoints accept only a node credential (nsn_...), not a user token",
                ErrorCode.INVALID_TOKEN,
            )
        device = authenticate_node_credential(token)
        NODE_ID.set(device.pk_hex)
        return device
