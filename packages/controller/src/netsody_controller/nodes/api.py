"""Paired devices of the signed-in user, and the nodes of a network."""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Router, Status

from netsody_controller.errors import NotFoundError
from netsody_controller.networks.services import membership_for
from netsody_controller.nodes import services
from netsody_controller.nodes.models import Device, Node
from netsody_controller.nodes.schemas import (
    DeviceOut,
    NodeIn,
    NodeOut,
    NodePatch,
    device_out,
    node_out,
)
from netsody_controller.permissions import Action
from netsody_controller.schemas import USER_ERRORS

devices_router = Router(tags=["devices"])
router = Router(tags=["nodes"])


@devices_router.get("", response={200: list[DeviceOut], **USER_ERRORS}, summary="My devices")
def list_devices(request: HttpRequest) -> object:
    return [device_out(device) for device in Device.objects.filter(user=request.auth)]


@devices_router.delete(
    "/{device_id}",
    response={204: None, **USER_ERRORS},
    summary="Remove a paired device from every network and revoke its credential",
)
def delete_device(request: HttpRequest, device_id: uuid.UUID) -> object:
    device = Device.objects.filter(id=device_id, user=request.auth).first()
    if device is None:
        raise NotFoundError(f"Device {device_id} is not one of your paired devices")
    services.delete_device(device)
    return Status(204, None)


@router.get("/{network_id}/nodes", response={200: list[NodeOut], **USER_ERRORS}, summary="Nodes")
def list_nodes(request: HttpRequest, network_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.READ)
    nodes = Node.objects.filter(network_id=network_id).select_related("device")
    return [node_out(node) for node in nodes]


@router.post(
    "/{network_id}/nodes",
    response={201: NodeOut, **USER_ERRORS},
    summary="Add one of my paired devices to the network",
)
def add_node(request: HttpRequest, network_id: uuid.UUID, body: NodeIn) -> object:
    membership = membership_for(request.auth, network_id, Action.EDIT_NODES)
    node = services.add_user_device(
        membership, body.device_id, hostname=body.hostname, groups=body.groups
    )
    return Status(201, node_out(node))


@router.get(
    "/{network_id}/nodes/{node_id}", response={200: NodeOut, **USER_ERRORS}, summary="One node"
)
def get_node(request: HttpRequest, network_id: uuid.UUID, node_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.READ)
    return node_out(services.get_node(network_id, node_id))


@router.patch(
    "/{network_id}/nodes/{node_id}",
    response={200: NodeOut, **USER_ERRORS},
    summary="Rename a node or set its groups",
)
def update_node(
    request: HttpRequest, network_id: uuid.UUID, node_id: uuid.UUID, body: NodePatch
) -> object:
    membership_for(request.auth, network_id, Action.EDIT_NODES)
    node = services.get_node(network_id, node_id)
    return node_out(services.update_node(node, hostname=body.hostname, groups=body.groups))


@router.delete(
    "/{network_id}/nodes/{node_id}",
    response={204: None, **USER_ERRORS},
    summary="Remove a node from the network",
)
def remove_node(request: HttpRequest, network_id: uuid.UUID, node_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.EDIT_NODES)
    services.remove_node(services.get_node(network_id, node_id))
    return Status(204, None)
