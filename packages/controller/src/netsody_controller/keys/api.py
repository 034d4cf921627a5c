"""Join keys of a network."""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Router, Status

from netsody_controller.keys import services
from netsody_controller.keys.models import JoinKey
from netsody_controller.keys.schemas import JoinKeyCreatedOut, JoinKeyIn, JoinKeyOut
from netsody_controller.networks.services import membership_for
from netsody_controller.permissions import Action
from netsody_controller.schemas import USER_ERRORS

router = Router(tags=["join keys"])


@router.get(
    "/{network_id}/join-keys", response={200: list[JoinKeyOut], **USER_ERRORS}, summary="Join keys"
)
def list_join_keys(request: HttpRequest, network_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.MANAGE_KEYS)
    return list(JoinKey.objects.filter(network_id=network_id))


@router.post(
    "/{network_id}/join-keys",
    response={201: JoinKeyCreatedOut, **USER_ERRORS},
    summary="Create a join key (its secret is shown only in this response)",
)
def create_join_key(request: HttpRequest, network_id: uuid.UUID, body: JoinKeyIn) -> object:
    membership = membership_for(request.auth, network_id, Action.MANAGE_KEYS)
    key, secret = services.create_join_key(
        membership,
        name=body.name,
        groups=body.groups,
        expires_at=body.expires_at,
        max_uses=body.max_uses,
    )
    key.secret = secret
    return Status(201, key)


@router.delete(
    "/{network_id}/join-keys/{key_id}",
    response={204: None, **USER_ERRORS},
    summary="Revoke a join key",
)
def revoke_join_key(request: HttpRequest, network_id: uuid.UUID, key_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.MANAGE_KEYS)
    services.revoke_join_key(network_id, key_id)
    return Status(204, None)
