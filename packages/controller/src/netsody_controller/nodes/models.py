"""Devices (an agent's identity, paired to a user or joined with a key) and nodes (a device
in a network)."""

from __future__ import annotations

import uuid

from django.db import models


class Device(models.Model):
    """An agent's identity: its public key and what it last reported.

    A device paired by `netsody login` belongs to a user. One that joined with a join key
    belongs to nobody. Its node credential is derived from its id and `credential_generation`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        "accounts.User", on_delete=models.CASCADE, null=True, related_name="devices"
    )
    pk_hex = models.CharField(max_length=64, unique=True)
    pow_nonce = models.DecimalField(max_digits=20, decimal_places=0, null=True)
    hostname = models.CharField(max_length=63)
    os = models.CharField(max_length=64, blank=True)
    agent_version = models.CharField(max_length=64, blank=True)
    credential_generation = models.PositiveIntegerField(default=0)
    # Revision of the last change to which networks this device is in.
    revision = models.BigIntegerField(default=0)
    last_seen_at = models.DateTimeField(null=True)
    applied_revision = models.BigIntegerField(null=True)
    error = models.TextField(blank=True)
    addresses = models.JSONField(default=list)
    peers = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Device({self.id}, {self.hostname})"


class Node(models.Model):
    """A device's place in a network: hostname and IP (both assigned, unique) and groups."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey("networks.Network", on_delete=models.CASCADE, related_name="nodes")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="nodes")
    hostname = models.CharField(max_length=63)
    ip = models.GenericIPAddressField(protocol="IPv4")
    groups = models.JSONField(default=list)
    added_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["network", "ip"], name="node_unique_ip"),
            # Hostnames are stored lowercase, so this is case-insensitive uniqueness.
            models.UniqueConstraint(fields=["network", "hostname"], name="node_unique_hostname"),
            models.UniqueConstraint(fields=["network", "device"], name="node_unique_device"),
        ]

    def __str__(self) -> str:
        return f"Node({self.id}, {self.hostname}, {self.ip})"
