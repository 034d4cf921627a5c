"""Schemas of join keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from ninja import Schema
from pydantic import Field

from netsody_controller.networks.schemas import GroupName


class JoinKeyIn(Schema):
    name: str = Field(default="", max_length=255)
    groups: list[GroupName] = Field(default_factory=list, max_length=64)
    expires_at: datetime | None = None
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)


class JoinKeyOut(Schema):
    id: uuid.UUID
    name: str
    hint: str
    groups: list[str]
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    revoked_at: datetime | None
    created_at: datetime


class JoinKeyCreatedOut(JoinKeyOut):
    """A new join key; `secret` is shown only in this response and never stored."""

    secret: str
