"""Join keys: creation, revocation, and the atomic use of one when a device joins."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from netsody_controller.errors import (
    ErrorCode,
    InvalidRequestError,
    NotFoundError,
    UnauthenticatedError,
)
from netsody_controller.keys.models import JoinKey
from netsody_controller.networks.models import Membership

logger = logging.getLogger(__name__)

KEY_PREFIX = "nsj_"
SECRET_BYTES = 32
HINT_LENGTH = 12


def hash_secret(secret: str) -> str:
    """Return the stored form of a join key: SHA-256 in hex.

    NOTE: a plain hash suffices because the secret has 256 random bits. A slow password hash
    would only protect low-entropy secrets.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def create_join_key(
    membership: Membership,
    *,
    name: str,
    groups: list[str],
    expires_at: datetime | None,
    max_uses: int | None,
) -> tuple[JoinKey, str]:
    """Create a join key and return it with its secret (shown once, stored hashed)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequestError(f"expires_at {expires_at.isoformat()} is in the past")
    secret = KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    key = JoinKey.objects.create(
        network_id=membership.network_id,
        name=name,
        secret_hash=hash_secret(secret),
        hint=secret[:HINT_LENGTH],
        groups=list(dict.fromkeys(groups)),
        expires_at=expires_at,
        max_uses=max_uses,
        created_by_id=membership.user_id,
    )
    logger.info("join key created", extra={"network_id": str(membership.network_id)})
    return key, secret


def revoke_join_key(network_id: uuid.UUID, key_id: uuid.UUID) -> JoinKey:
    key = JoinKey.objects.filter(network_id=network_id, id=key_id).first()
    if key is None:
        raise NotFoundError(f"Join key {key_id} not found in network {network_id}")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def _live() -> Q:
    return Q(revoked_at__isnull=True) & (
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )


def _usable() -> Q:
    return _live() & (Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")))


def _rejected() -> UnauthenticatedError:
    # SECURITY: one message for unknown, revoked, expired and used-up keys, so a caller learns
    # nothing about keys they do not hold.
    return UnauthenticatedError(
        "The join key is invalid, expired, revoked or used up. Ask the network's administrator "
        "for a new one",
        ErrorCode.JOIN_KEY_INVALID,
    )


def find_live_key(secret: str) -> JoinKey:
    """Return the join key with this secret unless revoked or expired (it may be used up, which
    `consume_use` checks), or raise UnauthenticatedError."""
    key = JoinKey.objects.filter(_live(), secret_hash=hash_secret(secret)).first()
    if key is None:
        raise _rejected()
    return key


def consume_use(key: JoinKey) -> None:
    """Count one use of the key, atomically: fails when a concurrent join took the last use.

    Runs as one `UPDATE ... WHERE uses < max_uses`, so two joins cannot both take the last use.
    """
    with transaction.atomic():
        updated = JoinKey.objects.filter(_usable(), id=key.id).update(uses=F("uses") + 1)
    if updated != 1:
        raise _rejected()
