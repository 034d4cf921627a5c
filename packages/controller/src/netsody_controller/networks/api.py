"""Networks, their members, groups, invitations, and import and export as documents."""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Router, Status

from netsody_controller.networks import documents, services
from netsody_controller.networks.models import Membership, Network
from netsody_controller.networks.schemas import (
    DocumentIn,
    DocumentOut,
    GroupOut,
    InvitationIn,
    InvitationOut,
    MemberIn,
    MemberOut,
    MemberPatch,
    NetworkIn,
    NetworkOut,
    NetworkPatch,
    TransferIn,
)
from netsody_controller.permissions import Action
from netsody_controller.schemas import USER_ERRORS, error_responses

router = Router(tags=["networks"])


def network_out(membership: Membership, network: Network | None = None) -> dict[str, object]:
    network = network or membership.network
    return {
        "id": network.id,
        "name": network.name,
        "subnet": network.subnet,
        "revision": network.revision,
        "role": membership.role,
        "owner": services.owner_of(network),
        "created_at": network.created_at,
    }


@router.get("", response={200: list[NetworkOut], **USER_ERRORS}, summary="My networks")
def list_networks(request: HttpRequest) -> object:
    return [network_out(membership) for membership in services.user_networks(request.auth)]


@router.post("", response={201: NetworkOut, **USER_ERRORS}, summary="Create a network")
def create_network(request: HttpRequest, body: NetworkIn) -> object:
    membership = services.create_network(request.auth, name=body.name, subnet=body.subnet)
    return Status(201, network_out(membership))


@router.post(
    "/import", response={201: NetworkOut, **USER_ERRORS}, summary="Create a network from a document"
)
def import_network(request: HttpRequest, body: DocumentIn) -> object:
    try:
        document = documents.parse_document(body.document)
    except documents.DocumentError as error:
        raise documents.document_error(error) from error
    membership = services.create_network(
        request.auth, name=document.name or "imported", subnet=str(document.network)
    )
    network = documents.import_document(membership.network, body.document)
    return Status(201, network_out(membership, network))


@router.get("/{network_id}", response={200: NetworkOut, **USER_ERRORS}, summary="One network")
def get_network(request: HttpRequest, network_id: uuid.UUID) -> object:
    return network_out(services.membership_for(request.auth, network_id, Action.READ))


@router.patch("/{network_id}", response={200: NetworkOut, **USER_ERRORS}, summary="Edit a network")
def update_network(request: HttpRequest, network_id: uuid.UUID, body: NetworkPatch) -> object:
    membership = services.membership_for(request.auth, network_id, Action.EDIT_NETWORK)
    network = services.update_network(membership, name=body.name, subnet=body.subnet)
    return network_out(membership, network)


@router.delete("/{network_id}", response={204: None, **USER_ERRORS}, summary="Delete a network")
def delete_network(request: HttpRequest, network_id: uuid.UUID) -> object:
    services.delete_network(
        services.membership_for(request.auth, network_id, Action.DELETE_NETWORK)
    )
    return Status(204, None)


@router.get(
    "/{network_id}/document",
    response={200: DocumentOut, **USER_ERRORS},
    summary="Export the network as a TOML document",
)
def export_network(request: HttpRequest, network_id: uuid.UUID) -> object:
    membership = services.membership_for(request.auth, network_id, Action.READ)
    return {"document": documents.export_document(membership.network)}


@router.put(
    "/{network_id}/document",
    response={200: NetworkOut, **USER_ERRORS},
    summary="Replace the network's nodes, resources and policies with a document",
)
def replace_network(request: HttpRequest, network_id: uuid.UUID, body: DocumentIn) -> object:
    membership = services.membership_for(request.auth, network_id, Action.EDIT_NETWORK)
    network = documents.import_document(membership.network, body.document)
    return network_out(membership, network)


@router.get(
    "/{network_id}/members", response={200: list[MemberOut], **USER_ERRORS}, summary="Members"
)
def list_members(request: HttpRequest, network_id: uuid.UUID) -> object:
    services.membership_for(request.auth, network_id, Action.READ)
    return services.members(network_id)


@router.post(
    "/{network_id}/members",
    response={201: MemberOut, **USER_ERRORS},
    summary="Add a user who has signed in before",
)
def add_member(request: HttpRequest, network_id: uuid.UUID, body: MemberIn) -> object:
    actor = services.membership_for(request.auth, network_id, Action.READ)
    membership = services.add_member(
        actor, email=body.email, role=body.role, default_groups=body.default_groups
    )
    return Status(201, membership)


@router.patch(
    "/{network_id}/members/{user_id}",
    response={200: MemberOut, **USER_ERRORS},
    summary="Change a member's role or default groups",
)
def update_member(
    request: HttpRequest, network_id: uuid.UUID, user_id: uuid.UUID, body: MemberPatch
) -> object:
    actor = services.membership_for(request.auth, network_id, Action.READ)
    target = services.member(network_id, user_id)
    return services.update_member(actor, target, role=body.role, default_groups=body.default_groups)


@router.delete(
    "/{network_id}/members/{user_id}",
    response={204: None, **USER_ERRORS},
    summary="Remove a member (or leave the network)",
)
def remove_member(request: HttpRequest, network_id: uuid.UUID, user_id: uuid.UUID) -> object:
    actor = services.membership_for(request.auth, network_id, Action.READ)
    services.remove_member(actor, services.member(network_id, user_id))
    return Status(204, None)


@router.post(
    "/{network_id}/transfer",
    response={200: MemberOut, **USER_ERRORS},
    summary="Transfer ownership to another member",
)
def transfer_ownership(request: HttpRequest, network_id: uuid.UUID, body: TransferIn) -> object:
    actor = services.membership_for(request.auth, network_id, Action.READ)
    return services.transfer_ownership(actor, body.user_id)


@router.get(
    "/{network_id}/groups",
    response={200: list[GroupOut], **USER_ERRORS},
    summary="Groups with their usage",
)
def list_groups(request: HttpRequest, network_id: uuid.UUID) -> object:
    services.membership_for(request.auth, network_id, Action.READ)
    return services.group_usage(network_id)


@router.get(
    "/{network_id}/invitations",
    response={200: list[InvitationOut], **USER_ERRORS},
    summary="Invitations",
)
def list_invitations(request: HttpRequest, network_id: uuid.UUID) -> object:
    membership = services.membership_for(request.auth, network_id, Action.MANAGE_USERS)
    return list(membership.network.invitations.all())


@router.post(
    "/{network_id}/invitations",
    response={201: InvitationOut, **USER_ERRORS, **error_responses(429, 502)},
    summary="Invite an email address",
)
def create_invitation(request: HttpRequest, network_id: uuid.UUID, body: InvitationIn) -> object:
    actor = services.membership_for(request.auth, network_id, Action.READ)
    return Status(201, services.create_invitation(actor, email=body.email, role=body.role))


@router.delete(
    "/{network_id}/invitations/{invitation_id}",
    response={204: None, **USER_ERRORS},
    summary="Revoke an invitation",
)
def revoke_invitation(
    request: HttpRequest, network_id: uuid.UUID, invitation_id: uuid.UUID
) -> object:
    actor = services.membership_for(request.auth, network_id, Action.READ)
    services.revoke_invitation(actor, invitation_id)
    return Status(204, None)
