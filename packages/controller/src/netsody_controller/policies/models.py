"""Policies (who may reach what, how) and resources (destinations behind a gateway node)."""

from __future__ import annotations

import uuid

from django.db import models


class Policy(models.Model):
    """Sources may reach destinations, restricted by rules and conditions.

    `sources` is `{"groups": [...], "nodes": [node id, ...]}`; `destinations` adds
    `"resources": [resource id, ...]`. `rules` is a list of `{"protocol", "ports"}`, and
    `conditions` holds the keys of the document's `[policy.conditions]` table.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(
        "networks.Network", on_delete=models.CASCADE, related_name="policies"
    )
    name = models.CharField(max_length=255, blank=True)
    position = models.PositiveIntegerField(default=0)
    sources = models.JSONField(default=dict)
    destinations = models.JSONField(default=dict)
    rules = models.JSONField(default=list)
    conditions = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "created_at", "id"]


class Resource(models.Model):
    """An IPv4 address, subnet, domain or `*.` wildcard domain reached through a gateway node."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(
        "networks.Network", on_delete=models.CASCADE, related_name="resources"
    )
    name = models.CharField(max_length=255, blank=True)
    dest = models.CharField(max_length=253)
    gateway = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="+")
    groups = models.JSONField(default=list)
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["network", "dest"], name="resource_unique_dest"),
        ]
