"""Schemas of the agent API (challenge, pair, join, config, status)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from ninja import Schema
from pydantic import Field, StringConstraints

PkHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, StringConstraints(max_length=128)]


class ChallengeOut(Schema):
    challenge: str
    expires_in: int


class _ProofIn(Schema):
    pk: PkHex
    pow_nonce: int = Field(ge=0, le=2**64 - 1)
    challenge: str = Field(max_length=128)
    signature: str = Field(max_length=256, description="base64url Ed25519 signature")
    hostname: str = Field(max_length=255)
    os: ShortText = ""
    agent_version: ShortText = ""


class PairIn(_ProofIn):
    """Signature over "netsody-pair:" + challenge + ":" + pk."""


class PairOut(Schema):
    node_credential: str
    device_id: uuid.UUID


class JoinIn(_ProofIn):
    """Signature over "netsody-join:" + challenge + ":" + pk."""

    join_key: str = Field(max_length=256)


class JoinOut(Schema):
    node_credential: str
    network_id: uuid.UUID


class NetworkConfigOut(Schema):
    id: uuid.UUID
    name: str
    document: str


class ConfigOut(Schema):
    revision: int
    networks: list[NetworkConfigOut]


class PeerStatusIn(Schema):
    pk: PkHex
    path: Literal["direct", "relay-h3", "relay-h2", "none"]


class StatusIn(Schema):
    revision: int | None = Field(default=None, ge=0, le=2**63 - 1)
    error: str | None = Field(default=None, max_length=8192)
    os: ShortText = ""
    agent_version: ShortText = ""
    addresses: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=64
    )
    peers: list[PeerStatusIn] = Field(default_factory=list, max_length=10000)
