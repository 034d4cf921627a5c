"""Users: people who sign in through the OpenID provider."""

from __future__ import annotations

import uuid

from django.db import models


class User(models.Model):
    """A person known by their OpenID subject, with profile fields from the userinfo endpoint."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subject = models.CharField(max_length=255, unique=True)
    email = models.CharField(max_length=320, blank=True, db_index=True)
    email_verified = models.BooleanField(null=True)
    name = models.CharField(max_length=255, blank=True)
    picture = models.CharField(max_length=2048, blank=True)
    # The stored copy of the profile picture in object storage (see `pictures.py`): its object
    # key, its content type, and the URL it was fetched from (the provider's or Gravatar's).
    picture_key = models.CharField(max_length=255, blank=True)
    picture_content_type = models.CharField(max_length=64, blank=True)
    picture_source = models.CharField(max_length=2048, blank=True)
    picture_updated_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["email", "id"]

    def __str__(self) -> str:
        return f"User({self.id}, {self.email or self.subject})"
