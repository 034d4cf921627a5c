"""Calls from the identity provider: Zitadel dropping cached sign-ins after a user changes.

A Zitadel action or webhook posts to `/api/hooks/zitadel/invalidate-cache` with
`Authorization: Bearer <ZITADEL_CACHE_INVALIDATE_SECRET>` and `{"subject": "<user id>"}`, or
`{"all": true}`. The endpoint returns 404 while the variable is empty.
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field, model_validator

from netsody_controller.auth import invalidate_user_cache
from netsody_controller.errors import ForbiddenError, NotFoundError, UnauthenticatedError
from netsody_controller.schemas import error_responses

logger = logging.getLogger(__name__)

router = Router(tags=["hooks"])


class InvalidateIn(Schema):
    """The user whose cached sign-ins to drop (their OpenID subject), or every user."""

    subject: str | None = Field(default=None, min_length=1, max_length=255)
    all: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> InvalidateIn:
        if (self.subject is None) == (not self.all):
            raise ValueError("send either subject or all=true")
        return self


class InvalidateOut(Schema):
    """How many cached entries the receiving process dropped (the others drop theirs lazily)."""

    dropped: int


def shared_secret_auth(request: HttpRequest) -> bool:
    """Accept a request that carries ZITADEL_CACHE_INVALIDATE_SECRET as its bearer token.

    Runs before the body is read, so a disabled endpoint returns 404 whatever the body.
    """
    secret = settings.ZITADEL_CACHE_INVALIDATE_SECRET
    if not secret:
        raise NotFoundError(
            "Cache invalidation is off: set ZITADEL_CACHE_INVALIDATE_SECRET to enable it"
        )
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise UnauthenticatedError(
            "Send the shared secret as Authorization: Bearer <ZITADEL_CACHE_INVALIDATE_SECRET>"
        )
    # SECURITY: constant-time comparison, so response times reveal nothing about the secret.
    if not hmac.compare_digest(presented.strip().encode(), secret.encode()):
        logger.warning("cache invalidation with a wrong secret rejected")
        raise ForbiddenError("The cache invalidation secret does not match")
    return True


@router.post(
    "/zitadel/invalidate-cache",
    auth=shared_secret_auth,
    response={200: InvalidateOut, **error_responses(400, 401, 403, 404, 422, 503)},
    summary="Drop cached sign-ins of a user or of everyone (Zitadel action or webhook)",
)
def invalidate_cache(request: HttpRequest, body: InvalidateIn) -> object:
    dropped = invalidate_user_cache(None if body.all else body.subject)
    logger.info(
        "user cache invalidated",
        extra={"subject": body.subject or "*", "dropped": dropped},
    )
    return {"dropped": dropped}
