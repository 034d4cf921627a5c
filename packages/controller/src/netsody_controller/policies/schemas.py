"""Schemas of policies and resources."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import Field

from netsody_controller.networks.schemas import GroupName

Port = int | str


class SourcesSchema(Schema):
    groups: list[GroupName] = Field(default_factory=list, max_length=256)
    nodes: list[uuid.UUID] = Field(default_factory=list, max_length=1024)


class DestinationsSchema(SourcesSchema):
    resources: list[uuid.UUID] = Field(default_factory=list, max_length=1024)


class RuleSchema(Schema):
    """Traffic a policy permits: a protocol and ports ("22", 443, "8000-8080"). None means all."""

    protocol: Literal["tcp", "udp", "icmp"]
    ports: list[Port] = Field(default_factory=list, max_length=256)


class ConditionsSchema(Schema):
    """Requirements on the node that initiates traffic. All given ones must hold."""

    source_networks_in: list[str] = Field(default_factory=list, max_length=256)
    source_networks_out: list[str] = Field(default_factory=list, max_length=256)
    min_agent_version: str | None = Field(default=None, max_length=64)
    agent_versions: list[str] = Field(default_factory=list, max_length=256)
    os_types: list[str] = Field(default_factory=list, max_length=32)


class PolicyIn(Schema):
    name: str = Field(default="", max_length=255)
    sources: SourcesSchema
    destinations: DestinationsSchema
    rules: list[RuleSchema] = Field(default_factory=list, max_length=256)
    conditions: ConditionsSchema = Field(default_factory=ConditionsSchema)


class PolicyPatch(Schema):
    name: str | None = Field(default=None, max_length=255)
    sources: SourcesSchema | None = None
    destinations: DestinationsSchema | None = None
    rules: list[RuleSchema] | None = Field(default=None, max_length=256)
    conditions: ConditionsSchema | None = None
    position: int | None = Field(default=None, ge=0, le=1_000_000)


class PolicyOut(Schema):
    id: uuid.UUID
    name: str
    position: int
    sources: SourcesSchema
    destinations: DestinationsSchema
    rules: list[RuleSchema]
    conditions: ConditionsSchema
    created_at: datetime


class ResourceIn(Schema):
    name: str = Field(default="", max_length=255)
    dest: str = Field(max_length=253, examples=["10.2.0.0/16", "*.lab.example.internal"])
    gateway_node_id: uuid.UUID
    groups: list[GroupName] = Field(default_factory=list, max_length=64)


class ResourcePatch(Schema):
    name: str | None = Field(default=None, max_length=255)
    dest: str | None = Field(default=None, max_length=253)
    gateway_node_id: uuid.UUID | None = None
    groups: list[GroupName] | None = Field(default=None, max_length=64)


class ResourceOut(Schema):
    id: uuid.UUID
    name: str
    dest: str
    gateway_node_id: uuid.UUID
    groups: list[str]
    created_at: datetime
