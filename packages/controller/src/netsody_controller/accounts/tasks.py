"""Background work on users: fetching profile pictures into object storage."""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone

from netsody_controller.accounts import pictures, storage
from netsody_controller.accounts.models import User
from netsody_controller.celery import app

logger = logging.getLogger(__name__)

# Retries with exponential backoff (2, 4, 8, ... s, capped at 10 min) while the picture host or
# the object storage fails. A picture the host serves but that is rejected is not retried.
MAX_RETRIES = 8
MAX_BACKOFF_SECS = 600


@app.task(bind=True, max_retries=MAX_RETRIES, acks_late=True)
def fetch_profile_picture_task(self, user_id: str) -> bool:
    """Fetch the user's picture from its source and store it. Return whether one was stored."""
    user = User.objects.filter(id=user_id).first()
    if user is None:
        return False
    source = pictures.picture_source(user)
    if not source:
        return False
    log_fields = {"user_id": user_id}
    try:
        picture = pictures.fetch_picture(source, max_bytes=settings.PROFILE_PICTURE_MAX_BYTES)
        key = storage.picture_key(user.id)
        storage.put_object(key, picture.content, picture.content_type)
    except pictures.PictureRejectedError as error:
        # Remember the source, so the next sign-in does not fetch the same rejected picture.
        User.objects.filter(id=user_id).update(picture_source=source)
        logger.warning("profile picture rejected", extra={**log_fields, "error": str(error)})
        return False
    except (pictures.PictureUnavailableError, storage.StorageError) as error:
        logger.warning(
            "fetching a profile picture failed. Retrying",
            extra={**log_fields, "error": str(error), "attempt": self.request.retries + 1},
        )
        if self.request.is_eager:
            # NOTE: without a broker (development), a retry would run at once, inside sign-in.
            return False
        countdown = min(MAX_BACKOFF_SECS, 2 ** (self.request.retries + 1))
        raise self.retry(exc=error, countdown=countdown) from error
    User.objects.filter(id=user_id).update(
        picture_key=key,
        picture_content_type=picture.content_type,
        picture_source=source,
        picture_updated_at=timezone.now(),
    )
    logger.info("profile picture stored", extra={**log_fields, "bytes": len(picture.content)})
    return True
