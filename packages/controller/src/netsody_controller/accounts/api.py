"""The signed-in user's own record, and the profile pictures of users one shares a network with."""

from __future__ import annotations

import logging
import uuid

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Router

from netsody_controller.accounts import services, storage
from netsody_controller.accounts.schemas import UserOut
from netsody_controller.errors import NotFoundError, UnavailableError
from netsody_controller.schemas import USER_ERRORS

logger = logging.getLogger(__name__)

router = Router(tags=["users"])
users_router = Router(tags=["users"])

# Browsers may keep a picture briefly; it changes only when the provider's picture does.
PICTURE_CACHE_CONTROL = "private, max-age=300"


@router.get("", response={200: UserOut, **USER_ERRORS}, summary="The signed-in user")
def get_me(request: HttpRequest) -> object:
    return services.visible_user(request.auth, request.auth.id)


@users_router.get(
    "/{user_id}/picture",
    response={200: None, **USER_ERRORS},
    summary="A user's profile picture (image bytes)",
    description=(
        "Streams the stored copy of the picture from object storage. Visible for oneself and "
        "for users who share a network with the caller; 404 when there is no stored picture."
    ),
)
def get_picture(request: HttpRequest, user_id: uuid.UUID) -> object:
    user = services.visible_user(request.auth, user_id)
    try:
        stored = storage.open_object(user.picture_key) if user.picture_key else None
    except storage.StorageError as error:
        logger.error("reading a profile picture failed", extra={"error": str(error)})
        raise UnavailableError(
            "The object storage of profile pictures is unreachable; retry later"
        ) from error
    if stored is None:
        raise NotFoundError(f"User {user_id} has no stored profile picture")
    response = StreamingHttpResponse(stored.chunks, content_type=stored.content_type)
    response["Content-Length"] = str(stored.length)
    response["Cache-Control"] = PICTURE_CACHE_CONTROL
    response["X-Content-Type-Options"] = "nosniff"
    return response
