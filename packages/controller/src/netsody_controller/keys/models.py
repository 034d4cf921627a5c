"""Join keys: secrets that let a headless device join one network without a user."""

from __future__ import annotations

import uuid

from django.db import models


class JoinKey(models.Model):
    """A join key. Only the SHA-256 of its secret is stored, and the secret is shown once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(
        "networks.Network", on_delete=models.CASCADE, related_name="join_keys"
    )
    name = models.CharField(max_length=255, blank=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the secret, so that people can tell keys apart.
    hint = models.CharField(max_length=16)
    groups = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True)
    max_uses = models.PositiveIntegerField(null=True)
    uses = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True)
    created_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "id"]
