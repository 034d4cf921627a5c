"""Operations on users, used by sign-in and the API."""

from __future__ import annotations

import logging

from django.conf import settings

from netsody_controller.accounts import pictures
from netsody_controller.accounts.models import User
from netsody_controller.errors import NotFoundError
from netsody_controller.networks.models import Membership

logger = logging.getLogger(__name__)


def queue_picture_fetch(user: User) -> bool:
    """Queue a fetch of the user's picture when its source changed. Never raises.

    Sign-in calls this, so a broker that is down is logged and otherwise ignored.
    """
    # NOTE: without a broker (development), a task would run inside the sign-in request and
    # could wait for the picture host's timeout, so pictures need REDIS_URL and a worker.
    if not settings.S3_BUCKET or settings.CELERY_TASK_ALWAYS_EAGER:
        return False
    source = pictures.picture_source(user)
    if not source or source == user.picture_source:
        return False
    from netsody_controller.accounts.tasks import fetch_profile_picture_task

    try:
        # retry=False: a broker that is down must not hold up the sign-in request.
        fetch_profile_picture_task.apply_async(args=[str(user.id)], retry=False)
    except Exception as error:
        logger.error(
            "queueing a profile picture fetch failed",
            extra={"user_id": str(user.id), "error": str(error)},
        )
        return False
    return True


def visible_user(viewer: User, user_id: object) -> User:
    """Return the user `user_id` if `viewer` may see them: themselves or a fellow member.

    SECURITY: a user who shares no network with the viewer is reported as not found, so user
    ids cannot be probed.
    """
    # NOTE: read from the database, not the sign-in cache, whose copy predates a stored picture.
    visible = str(viewer.id) == str(user_id) or (
        Membership.objects.filter(user_id=user_id, network__memberships__user_id=viewer.id).exists()
    )
    user = User.objects.filter(id=user_id).first() if visible else None
    if user is None:
        raise NotFoundError(f"User {user_id} not found")
    return user
