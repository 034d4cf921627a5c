"""Networks, the memberships of users in them with their roles, and invitations."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class Role(models.TextChoices):
    """A user's role in a network. `permissions.py` lists what each role may do."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    EDITOR = "editor", "Editor"
    MEMBER = "member", "Member"


class Network(models.Model):
    """An overlay network with a name and an IPv4 subnet. Its owner is the OWNER membership."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=63)
    subnet = models.CharField(max_length=18)
    # The revision of the last change to anything agents see of this network.
    revision = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"Network({self.id}, {self.name})"


class Membership(models.Model):
    """A user's role in a network and the groups given to the nodes they add."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    default_groups = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["network", "user"], name="membership_unique_user"),
            # Exactly one Owner per network: at most one here, at least one by the services.
            models.UniqueConstraint(
                fields=["network"], condition=Q(role="owner"), name="membership_one_owner"
            ),
        ]


class Invitation(models.Model):
    """An invitation of an email address into a network with a role."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="invitations")
    email = models.CharField(max_length=320)
    role = models.CharField(max_length=16, choices=Role.choices)
    invited_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True)
    revoked_at = models.DateTimeField(null=True)
    email_sent_at = models.DateTimeField(null=True)
    # The Authentik enrollment link, when invitations are also created in Authentik.
    enrollment_url = models.CharField(max_length=2048, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]


class RevisionCounter(models.Model):
    """The single row whose value numbers every change agents see, across all networks."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)
