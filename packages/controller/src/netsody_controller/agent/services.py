"""Operations of the agent endpoints: challenges, proof checks, pairing, joining, config and
status."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import secrets
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from netsody_common.identity import pow_difficulty_from_env, verify_pow, verify_signature
from netsody_controller import revisions
from netsody_controller.accounts.models import User
from netsody_controller.agent.schemas import JoinIn, PairIn, StatusIn
from netsody_controller.credentials import derive_credential
from netsody_controller.errors import ErrorCode, InvalidRequestError, UnauthenticatedError
from netsody_controller.keys import services as keys
from netsody_controller.networks.documents import node_view
from netsody_controller.nodes.models import Device, Node
from netsody_controller.nodes.services import add_node, sanitize_hostname
from netsody_controller.policies.models import Policy

logger = logging.getLogger(__name__)

CHALLENGE_TTL_SECS = 120
CHALLENGE_BYTES = 32
PAIR_PREFIX = "netsody-pair:"
JOIN_PREFIX = "netsody-join:"
# Config fetches refresh `last_seen_at` at most this often, to spare the database a write per poll.
LAST_SEEN_REFRESH = timedelta(seconds=20)


def _challenge_key(challenge: str) -> str:
    return f"agent-challenge:{challenge}"


def issue_challenge() -> str:
    """Create a single-use challenge valid for CHALLENGE_TTL_SECS, stored in the shared cache."""
    challenge = base64.urlsafe_b64encode(secrets.token_bytes(CHALLENGE_BYTES)).rstrip(b"=").decode()
    cache.set(_challenge_key(challenge), 1, timeout=CHALLENGE_TTL_SECS)
    return challenge


def _decode_signature(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            "signature is not base64url: send the 64-byte Ed25519 signature in base64url",
            ErrorCode.SIGNATURE_INVALID,
        ) from None


def verify_proof(body: PairIn | JoinIn, prefix: str) -> None:
    """Check the proof of work, consume the challenge and verify the signature.

    Raises InvalidRequestError for a weak proof of work, and UnauthenticatedError for an
    unknown, expired or used challenge or a wrong signature.
    """
    difficulty = pow_difficulty_from_env()
    if not verify_pow(body.pk, body.pow_nonce, difficulty):
        raise InvalidRequestError(
            f"pow_nonce {body.pow_nonce} is not a proof of work of {difficulty} bits for this "
            "public key. Generate the identity again",
            ErrorCode.PROOF_OF_WORK_INVALID,
        )
    signature = _decode_signature(body.signature)
    # SECURITY: the challenge is consumed before the signature is checked, so every challenge
    # allows exactly one attempt.
    if not cache.delete(_challenge_key(body.challenge)):
        raise UnauthenticatedError(
            "The challenge is unknown, expired or already used. Request a new one from "
            "POST /api/agent/challenge",
            ErrorCode.CHALLENGE_INVALID,
        )
    message = f"{prefix}{body.challenge}:{body.pk}".encode()
    if not verify_signature(body.pk, message, signature):
        raise UnauthenticatedError(
            "The signature does not verify with the public key. Sign "
            f'"{prefix}<challenge>:<pk>" with the device key',
            ErrorCode.SIGNATURE_INVALID,
        )


def credential_for(device: Device) -> str:
    return derive_credential(settings.CONTROLLER_SECRET, device.id, device.credential_generation)


@transaction.atomic
def pair(user: User, body: PairIn) -> Device:
    """Pair a device with a user. Pairing again issues a new credential and revokes the old one."""
    verify_proof(body, PAIR_PREFIX)
    device = Device.objects.select_for_update().filter(pk_hex=body.pk).first()
    if device is None:
        device = Device(pk_hex=body.pk, credential_generation=0)
    else:
        device.credential_generation += 1
    device.user = user
    device.pow_nonce = body.pow_nonce
    device.hostname = sanitize_hostname(body.hostname)
    device.os = body.os
    device.agent_version = body.agent_version
    device.save()
    logger.info("device paired", extra={"node_id": device.pk_hex, "user_id": str(user.id)})
    return device


@transaction.atomic
def join(body: JoinIn) -> tuple[Device, uuid.UUID]:
    """Add a device to the join key's network, using one of the key's uses."""
    key = keys.find_live_key(body.join_key)
    verify_proof(body, JOIN_PREFIX)
    device, created = Device.objects.get_or_create(
        pk_hex=body.pk,
        defaults={
            "pow_nonce": body.pow_nonce,
            "hostname": sanitize_hostname(body.hostname),
            "os": body.os,
            "agent_version": body.agent_version,
        },
    )
    if not created and Node.objects.filter(network_id=key.network_id, device=device).exists():
        return device, key.network_id
    keys.consume_use(key)
    add_node(key.network_id, device, groups=key.groups)
    logger.info(
        "device joined", extra={"node_id": device.pk_hex, "network_id": str(key.network_id)}
    )
    return device, key.network_id


def current_revision(device_id: uuid.UUID) -> int:
    """Return the revision of a device's configuration: the newest of its own and its networks'."""
    row = (
        Device.objects.filter(id=device_id)
        .annotate(network_revision=Max("nodes__network__revision"))
        .values_list("revision", "network_revision")
        .first()
    )
    if row is None:
        raise UnauthenticatedError(
            "The device was removed. Pair or join again", ErrorCode.INVALID_TOKEN
        )
    return max(row[0], row[1] or 0)


def network_ids(device_id: uuid.UUID) -> list[uuid.UUID]:
    return list(Node.objects.filter(device_id=device_id).values_list("network_id", flat=True))


def config_body(device_id: uuid.UUID) -> dict[str, Any]:
    """Return the configuration of a device: its revision and the view of each of its networks."""
    revision = current_revision(device_id)
    nodes = Node.objects.filter(device_id=device_id).select_related("network", "device")
    networks = []
    for node in sorted(nodes, key=lambda item: (item.network.name, str(item.network_id))):
        networks.append(
            {
                "id": node.network_id,
                "name": node.network.name,
                "document": node_view(node.network, node.device.pk_hex),
            }
        )
    return {"revision": revision, "networks": networks}


def touch(device: Device) -> None:
    """Record that the device was seen, at most once per LAST_SEEN_REFRESH."""
    now = timezone.now()
    if device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_REFRESH:
        Device.objects.filter(id=device.id).update(last_seen_at=now)


def _addresses(items: list[str]) -> list[str]:
    """Return the IP addresses among reported addresses, with any port removed."""
    found = []
    for item in items:
        text = item.strip()
        if text.startswith("[") and "]" in text:
            text = text[1 : text.index("]")]
        elif text.count(":") == 1:
            text = text.split(":", 1)[0]
        try:
            found.append(str(ipaddress.ip_address(text)))
        except ValueError:
            logger.debug("ignored a reported address that is not an IP", extra={"value": item})
    return list(dict.fromkeys(found))


@transaction.atomic
def record_status(device: Device, body: StatusIn) -> None:
    """Store an agent's status report, bumping the revision when facts read by conditions change."""
    device = Device.objects.select_for_update().get(id=device.id)
    addresses = _addresses(body.addresses)
    facts_changed = (device.os, device.agent_version, device.addresses) != (
        body.os,
        body.agent_version,
        addresses,
    )
    device.os = body.os
    device.agent_version = body.agent_version
    device.addresses = addresses
    device.applied_revision = body.revision
    device.error = body.error or ""
    device.peers = [peer.model_dump() for peer in body.peers]
    device.last_seen_at = timezone.now()
    device.save()
    if body.error:
        logger.warning("agent reported an error", extra={"node_id": device.pk_hex})
    if facts_changed:
        # NOTE: a new revision makes every node of the network fetch a freshly computed view,
        # so agents whose addresses change often cost the whole network a recompute each time.
        affected = _networks_with_conditions(device.id)
        if affected:
            revisions.networks_changed(affected)


def _networks_with_conditions(device_id: uuid.UUID) -> list[uuid.UUID]:
    """Return the device's networks with a policy that has conditions, because only their
    views depend on node facts."""
    ids = network_ids(device_id)
    with_conditions = Policy.objects.filter(network_id__in=ids).exclude(conditions={})
    return list(with_conditions.values_list("network_id", flat=True).distinct())
