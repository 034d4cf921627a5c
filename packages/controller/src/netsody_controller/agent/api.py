"""The agent API: challenge, pair, join, configuration long poll and status reports."""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from netsody_controller.agent import services
from netsody_controller.agent.schemas import (
    ChallengeOut,
    ConfigOut,
    JoinIn,
    JoinOut,
    PairIn,
    PairOut,
    StatusIn,
)
from netsody_controller.auth import AgentUserAuth, NodeAuth
from netsody_controller.notify import device_key, get_notifier, network_key
from netsody_controller.schemas import error_responses

logger = logging.getLogger(__name__)

router = Router(tags=["agent"])

MAX_WAIT_SECS = 30
AGENT_ERRORS = error_responses(400, 401, 409, 422, 503)


@router.post(
    "/challenge",
    auth=None,
    response={200: ChallengeOut, **error_responses(503)},
    summary="A single-use challenge for pair or join",
)
def challenge(request: HttpRequest) -> object:
    return {"challenge": services.issue_challenge(), "expires_in": services.CHALLENGE_TTL_SECS}


@router.post(
    "/pair",
    auth=AgentUserAuth(),
    response={200: PairOut, **error_responses(400, 401, 403, 409, 422, 503)},
    summary="Pair this device with the signed-in user (agent OIDC client token)",
)
def pair(request: HttpRequest, body: PairIn) -> object:
    device = services.pair(request.auth, body)
    return {"node_credential": services.credential_for(device), "device_id": device.id}


@router.post(
    "/join",
    auth=None,
    response={200: JoinOut, **AGENT_ERRORS},
    summary="Join a network with a join key",
)
def join(request: HttpRequest, body: JoinIn) -> object:
    device, network_id = services.join(body)
    return {"node_credential": services.credential_for(device), "network_id": network_id}


class ConfigQuery(Schema):
    revision: int | None = Field(default=None, description="the revision the agent has")
    wait: float = Field(
        default=0, description=f"seconds to wait for a newer revision, at most {MAX_WAIT_SECS}"
    )


@router.get(
    "/config",
    auth=NodeAuth(),
    response={200: ConfigOut, **AGENT_ERRORS},
    summary="This node's configuration. Waits for a change when `revision` is current",
)
async def config(request: HttpRequest, query: Query[ConfigQuery]) -> object:
    device = request.auth
    wait = min(max(query.wait, 0.0), MAX_WAIT_SECS)
    await sync_to_async(services.touch)(device)
    if query.revision is not None and wait > 0:
        await _wait_for_change(device.id, query.revision, wait)
    return await sync_to_async(services.config_body, thread_sensitive=False)(device.id)


async def _wait_for_change(device_id: object, revision: int, wait: float) -> None:
    """Return when the device's revision differs from `revision` or after `wait` seconds."""
    ids = await sync_to_async(services.network_ids, thread_sensitive=False)(device_id)
    notifier = get_notifier()
    # NOTE: registering before reading the revision means a change committed in between still
    # wakes this waiter.
    waiter = await notifier.register([device_key(device_id), *map(network_key, ids)])
    try:
        current = await sync_to_async(services.current_revision, thread_sensitive=False)(device_id)
        if current == revision:
            await notifier.wait(waiter, wait)
    finally:
        notifier.unregister(waiter)


@router.post(
    "/status",
    auth=NodeAuth(),
    response={204: None, **AGENT_ERRORS},
    summary="Report the applied revision, errors, addresses and peer paths",
)
def status(request: HttpRequest, body: StatusIn) -> object:
    services.record_status(request.auth, body)
    return Status(204, None)
