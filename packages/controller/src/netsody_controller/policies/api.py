"""Policies and resources of a network."""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Router, Status

from netsody_controller.networks.services import membership_for
from netsody_controller.permissions import Action
from netsody_controller.policies import services
from netsody_controller.policies.models import Policy, Resource
from netsody_controller.policies.schemas import (
    PolicyIn,
    PolicyOut,
    PolicyPatch,
    ResourceIn,
    ResourceOut,
    ResourcePatch,
)
from netsody_controller.schemas import USER_ERRORS

router = Router(tags=["policies"])


def resource_out(resource: Resource) -> dict[str, object]:
    return {
        "id": resource.id,
        "name": resource.name,
        "dest": resource.dest,
        "gateway_node_id": resource.gateway_id,
        "groups": resource.groups,
        "created_at": resource.created_at,
    }


@router.get(
    "/{network_id}/policies", response={200: list[PolicyOut], **USER_ERRORS}, summary="Policies"
)
def list_policies(request: HttpRequest, network_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.READ)
    return list(Policy.objects.filter(network_id=network_id))


@router.post(
    "/{network_id}/policies", response={201: PolicyOut, **USER_ERRORS}, summary="Create a policy"
)
def create_policy(request: HttpRequest, network_id: uuid.UUID, body: PolicyIn) -> object:
    membership_for(request.auth, network_id, Action.EDIT_POLICIES)
    return Status(201, services.create_policy(network_id, body.model_dump(mode="json")))


@router.get(
    "/{network_id}/policies/{policy_id}",
    response={200: PolicyOut, **USER_ERRORS},
    summary="One policy",
)
def get_policy(request: HttpRequest, network_id: uuid.UUID, policy_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.READ)
    return services.get_policy(network_id, policy_id)


@router.patch(
    "/{network_id}/policies/{policy_id}",
    response={200: PolicyOut, **USER_ERRORS},
    summary="Edit a policy",
)
def update_policy(
    request: HttpRequest, network_id: uuid.UUID, policy_id: uuid.UUID, body: PolicyPatch
) -> object:
    membership_for(request.auth, network_id, Action.EDIT_POLICIES)
    policy = services.get_policy(network_id, policy_id)
    return services.update_policy(policy, body.model_dump(mode="json", exclude_unset=True))


@router.delete(
    "/{network_id}/policies/{policy_id}",
    response={204: None, **USER_ERRORS},
    summary="Delete a policy",
)
def delete_policy(request: HttpRequest, network_id: uuid.UUID, policy_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.EDIT_POLICIES)
    services.delete_policy(services.get_policy(network_id, policy_id))
    return Status(204, None)


@router.get(
    "/{network_id}/resources",
    response={200: list[ResourceOut], **USER_ERRORS},
    summary="Resources",
)
def list_resources(request: HttpRequest, network_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.READ)
    return [resource_out(resource) for resource in Resource.objects.filter(network_id=network_id)]


@router.post(
    "/{network_id}/resources",
    response={201: ResourceOut, **USER_ERRORS},
    summary="Create a resource",
)
def create_resource(request: HttpRequest, network_id: uuid.UUID, body: ResourceIn) -> object:
    membership_for(request.auth, network_id, Action.EDIT_RESOURCES)
    return Status(
        201, resource_out(services.create_resource(network_id, body.model_dump(mode="json")))
    )


@router.get(
    "/{network_id}/resources/{resource_id}",
    response={200: ResourceOut, **USER_ERRORS},
    summary="One resource",
)
def get_resource(request: HttpRequest, network_id: uuid.UUID, resource_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.READ)
    return resource_out(services.get_resource(network_id, resource_id))


@router.patch(
    "/{network_id}/resources/{resource_id}",
    response={200: ResourceOut, **USER_ERRORS},
    summary="Edit a resource",
)
def update_resource(
    request: HttpRequest, network_id: uuid.UUID, resource_id: uuid.UUID, body: ResourcePatch
) -> object:
    membership_for(request.auth, network_id, Action.EDIT_RESOURCES)
    resource = services.get_resource(network_id, resource_id)
    data = body.model_dump(mode="json", exclude_unset=True)
    return resource_out(services.update_resource(resource, data))


@router.delete(
    "/{network_id}/resources/{resource_id}",
    response={204: None, **USER_ERRORS},
    summary="Delete a resource",
)
def delete_resource(request: HttpRequest, network_id: uuid.UUID, resource_id: uuid.UUID) -> object:
    membership_for(request.auth, network_id, Action.EDIT_RESOURCES)
    services.delete_resource(services.get_resource(network_id, resource_id))
    return Status(204, None)
