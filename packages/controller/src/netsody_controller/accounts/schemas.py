"""Schemas of users."""

from __future__ import annotations

import uuid

from ninja import Schema


class UserOut(Schema):
    """A user as other members see them."""

    id: uuid.UUID
    email: str
    name: str
    picture: str
