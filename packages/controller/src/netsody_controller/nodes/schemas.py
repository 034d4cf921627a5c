"""Schemas of devices and nodes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal

from django.utils import timezone
from ninja import Schema
from pydantic import Field

from netsody_controller.networks.schemas import GroupName

# A node counts as online when its agent was seen within this time. A running agent fetches
# its configuration at least every 30 seconds (the longest long poll), which refreshes it.
ONLINE_WINDOW = timedelta(seconds=60)


def is_online(last_seen_at: datetime | None) -> bool:
    return last_seen_at is not None and timezone.now() - last_seen_at <= ONLINE_WINDOW


class PeerPathOut(Schema):
    pk: str
    path: Literal["direct", "relay-h3", "relay-h2", "none"]


class DeviceOut(Schema):
    id: uuid.UUID
    pk: str
    hostname: str
    os: str
    agent_version: str
    online: bool
    last_seen_at: datetime | None
    created_at: datetime


class NodeIn(Schema):
    device_id: uuid.UUID
    hostname: str | None = Field(default=None, max_length=63)
    groups: list[GroupName] | None = Field(default=None, max_length=64)


class NodePatch(Schema):
    hostname: str | None = Field(default=None, max_length=63)
    groups: list[GroupName] | None = Field(default=None, max_length=64)


class NodeOut(Schema):
    id: uuid.UUID
    device_id: uuid.UUID
    pk: str
    hostname: str
    ip: str
    groups: list[str]
    os: str
    agent_version: str
    online: bool
    last_seen_at: datetime | None
    applied_revision: int | None
    error: str | None
    addresses: list[str]
    peers: list[PeerPathOut]
    created_at: datetime


def device_out(device: object) -> dict[str, object]:
    return {
        "id": device.id,
        "pk": device.pk_hex,
        "hostname": device.hostname,
        "os": device.os,
        "agent_version": device.agent_version,
        "online": is_online(device.last_seen_at),
        "last_seen_at": device.last_seen_at,
        "created_at": device.created_at,
    }


def node_out(node: object) -> dict[str, object]:
    device = node.device
    return {
        "id": node.id,
        "device_id": device.id,
        "pk": device.pk_hex,
        "hostname": node.hostname,
        "ip": node.ip,
        "groups": node.groups,
        "os": device.os,
        "agent_version": device.agent_version,
        "online": is_online(device.last_seen_at),
        "last_seen_at": device.last_seen_at,
        "applied_revision": device.applied_revision,
        "error": device.error or None,
        "addresses": device.addresses,
        "peers": device.peers,
        "created_at": node.created_at,
    }
