"""Schemas of networks, memberships, groups, invitations and network documents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from ninja import Schema
from pydantic import Field, StringConstraints

from netsody_controller.accounts.schemas import UserOut

NetworkName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=63)]
GroupName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
AssignableRole = Literal["admin", "editor", "member"]
AnyRole = Literal["owner", "admin", "editor", "member"]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
]


class NetworkIn(Schema):
    name: NetworkName
    subnet: str = Field(max_length=18, examples=["10.1.0.0/24"])


class NetworkPatch(Schema):
    name: NetworkName | None = None
    subnet: str | None = Field(default=None, max_length=18)


class NetworkOut(Schema):
    id: uuid.UUID
    name: str
    subnet: str
    revision: int
    role: AnyRole
    owner: UserOut
    created_at: datetime


class MemberIn(Schema):
    email: Email
    role: AssignableRole = "member"
    default_groups: list[GroupName] = Field(default_factory=list, max_length=64)


class MemberPatch(Schema):
    role: AssignableRole | None = None
    default_groups: list[GroupName] | None = Field(default=None, max_length=64)


class MemberOut(Schema):
    user: UserOut
    role: AnyRole
    default_groups: list[str]
    created_at: datetime


class TransferIn(Schema):
    user_id: uuid.UUID


class GroupOut(Schema):
    """A group with how many nodes, policies and resources use it."""

    name: str
    nodes: int
    policies: int
    resources: int


class InvitationIn(Schema):
    email: Email
    role: AssignableRole = "member"


class InvitationOut(Schema):
    id: uuid.UUID
    email: str
    role: AnyRole
    created_at: datetime
    expires_at: datetime
    email_sent_at: datetime | None
    revoked_at: datetime | None
    enrollment_url: str | None = Field(
        description="Authentik enrollment link of the invited person, null without Authentik"
    )

    @staticmethod
    def resolve_enrollment_url(invitation: object) -> str | None:
        return getattr(invitation, "enrollment_url", "") or None


class DocumentIn(Schema):
    """A network document (TOML text)."""

    document: str = Field(max_length=4 * 1024 * 1024)


class DocumentOut(Schema):
    document: str
