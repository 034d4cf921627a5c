"""Schemas of users."""

from __future__ import annotations

import uuid

from ninja import Schema


class UserOut(Schema):
    """A user as other members see them.

    `picture` is the provider's picture URL; `picture_url` is the controller's path of the
    stored copy (`/api/users/{id}/picture`), or null while none is stored.
    """

    id: uuid.UUID
    email: str
    name: str
    picture: str
    picture_url: str | None

    @staticmethod
    def resolve_picture_url(user: object) -> str | None:
        if not getattr(user, "picture_key", ""):
            return None
        return f"/api/users/{user.id}/picture"
