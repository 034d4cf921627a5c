"""Operations on networks, memberships and invitations, used by the API and by tasks."""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from netsody_controller import permissions, revisions
from netsody_controller.accounts.models import User
from netsody_controller.errors import ConflictError, InvalidRequestError, NotFoundError
from netsody_controller.networks import authentik
from netsody_controller.networks.models import Invitation, Membership, Network, Role
from netsody_controller.permissions import Action

logger = logging.getLogger(__name__)

MIN_PREFIX = 8
MAX_NAME_LENGTH = 63
# A /30 leaves two usable addresses, of which the last is reserved: one node.
MAX_PREFIX = 30
_PRIVATE_RANGES = tuple(
    ipaddress.IPv4Network(block) for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
INVITATION_LIFETIME = timedelta(days=14)


class RateLimitedError(ConflictError):
    status = 429


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """Return a private IPv4 subnet (RFC 1918) given by its network address, or raise."""
    try:
        subnet = ipaddress.IPv4Network(text.strip())
    except ValueError:
        raise InvalidRequestError(
            f"subnet {text!r} is not an IPv4 network in CIDR form by its network address, "
            "for example 10.1.0.0/24"
        ) from None
    if not any(subnet.subnet_of(block) for block in _PRIVATE_RANGES):
        raise InvalidRequestError(
            f"subnet {subnet} is not a private range: use one inside 10.0.0.0/8, "
            "172.16.0.0/12 or 192.168.0.0/16 (RFC 1918)"
        )
    if not MIN_PREFIX <= subnet.prefixlen <= MAX_PREFIX:
        raise InvalidRequestError(
            f"subnet {subnet} has a /{subnet.prefixlen} prefix: use a prefix from /{MIN_PREFIX} "
            f"to /{MAX_PREFIX}"
        )
    return subnet


def check_network_name(name: str) -> str:
    """Return a network name stripped of surrounding blanks, or raise when it is empty or long."""
    stripped = name.strip()
    if not stripped:
        raise InvalidRequestError(f"network name is empty: use 1 to {MAX_NAME_LENGTH} characters")
    if len(stripped) > MAX_NAME_LENGTH:
        raise InvalidRequestError(
            f"network name {stripped[:20]!r}... has {len(stripped)} characters: use 1 to "
            f"{MAX_NAME_LENGTH}"
        )
    return stripped


def membership_for(user: User, network_id: uuid.UUID, action: Action) -> Membership:
    """Return the user's membership in the network, checking that their role allows `action`.

    SECURITY: a network the user is not a member of is reported as not found, so ids of other
    people's networks cannot be probed.
    """
    membership = (
        Membership.objects.select_related("network")
        .filter(network_id=network_id, user=user)
        .first()
    )
    if membership is None:
        raise NotFoundError(f"Network {network_id} not found")
    permissions.require(membership.role, action)
    return membership


def user_networks(user: User) -> list[Membership]:
    return list(
        Membership.objects.select_related("network").filter(user=user).order_by("network__name")
    )


def owner_of(network: Network) -> User:
    return Membership.objects.select_related("user").get(network=network, role=Role.OWNER).user


@transaction.atomic
def create_network(user: User, *, name: str, subnet: str) -> Membership:
    """Create a network owned by `user` with one policy from ALL to ALL."""
    from netsody_controller.policies.models import Policy

    parsed = parse_subnet(subnet)
    network = Network.objects.create(name=check_network_name(name), subnet=str(parsed))
    membership = Membership.objects.create(network=network, user=user, role=Role.OWNER)
    Policy.objects.create(
        network=network,
        name="ALL to ALL",
        sources={"groups": ["ALL"], "nodes": []},
        destinations={"groups": ["ALL"], "nodes": [], "resources": []},
    )
    revisions.networks_changed([network.id])
    logger.info("network created", extra={"network_id": str(network.id)})
    return membership


@transaction.atomic
def update_network(
    membership: Membership, *, name: str | None = None, subnet: str | None = None
) -> Network:
    network = Network.objects.select_for_update().get(id=membership.network_id)
    if name is not None:
        network.name = check_network_name(name)
    if subnet is not None:
        parsed = parse_subnet(subnet)
        if str(parsed) != network.subnet and network.nodes.exists():
            raise ConflictError(
                f"Network {network.id} has nodes, so its subnet cannot change. Remove the nodes "
                "first or export, edit and import the network"
            )
        network.subnet = str(parsed)
    network.save()
    revisions.networks_changed([network.id])
    return network


@transaction.atomic
def delete_network(membership: Membership) -> None:
    network = membership.network
    device_ids = list(network.nodes.values_list("device_id", flat=True))
    network.delete()
    if device_ids:
        revisions.devices_changed(device_ids)
    logger.info("network deleted", extra={"network_id": str(network.id)})


def members(network_id: uuid.UUID) -> list[Membership]:
    return list(Membership.objects.select_related("user").filter(network_id=network_id))


def add_member(
    actor: Membership, *, email: str, role: str, default_groups: list[str]
) -> Membership:
    permissions.check_membership_change(actor_role=actor.role, target_role="", new_role=role)
    user = User.objects.filter(email__iexact=email.strip()).order_by("created_at").first()
    if user is None:
        raise NotFoundError(
            f"No user with the email address {email!r} has signed in yet. Ask them to sign in "
            "to the controller once, or send an invitation"
        )
    try:
        with transaction.atomic():
            return Membership.objects.create(
                network_id=actor.network_id, user=user, role=role, default_groups=default_groups
            )
    except IntegrityError:
        raise ConflictError(f"{email} is already a member of this network") from None


def member(network_id: uuid.UUID, user_id: uuid.UUID) -> Membership:
    found = Membership.objects.select_related("user").filter(network_id=network_id, user_id=user_id)
    membership = found.first()
    if membership is None:
        raise NotFoundError(f"User {user_id} is not a member of network {network_id}")
    return membership


def update_member(
    actor: Membership,
    target: Membership,
    *,
    role: str | None = None,
    default_groups: list[str] | None = None,
) -> Membership:
    if role is not None and role != target.role:
        permissions.check_membership_change(
            actor_role=actor.role, target_role=target.role, new_role=role
        )
        target.role = role
    if default_groups is not None:
        permissions.require(actor.role, Action.MANAGE_USERS)
        target.default_groups = default_groups
    target.save()
    return target


def remove_member(actor: Membership, target: Membership) -> None:
    """Remove a member. Anybody but the Owner may remove themselves."""
    if target.user_id == actor.user_id and target.role != Role.OWNER:
        target.delete()
        return
    permissions.check_membership_change(
        actor_role=actor.role, target_role=target.role, new_role=None
    )
    target.delete()


@transaction.atomic
def transfer_ownership(actor: Membership, new_owner_id: uuid.UUID) -> Membership:
    """Make another member the Owner. The previous Owner becomes an Admin."""
    permissions.require(actor.role, Action.TRANSFER_OWNERSHIP)
    Network.objects.select_for_update().get(id=actor.network_id)
    target = member(actor.network_id, new_owner_id)
    if target.id == actor.id:
        raise InvalidRequestError("You already own this network. Name another member")
    Membership.objects.filter(id=actor.id).update(role=Role.ADMIN)
    Membership.objects.filter(id=target.id).update(role=Role.OWNER)
    target.role = Role.OWNER
    logger.info(
        "ownership transferred",
        extra={"network_id": str(actor.network_id), "user_id": str(new_owner_id)},
    )
    return target


def group_usage(network_id: uuid.UUID) -> list[dict[str, object]]:
    """Return every group used in the network with how many nodes, policies, resources use it."""
    from netsody_controller.nodes.models import Node
    from netsody_controller.policies.models import Policy, Resource

    usage: dict[str, Counter[str]] = {"ALL": Counter()}
    for groups in Node.objects.filter(network_id=network_id).values_list("groups", flat=True):
        for group in set(groups) | {"ALL"}:
            usage.setdefault(group, Counter())["nodes"] += 1
    for sources, destinations in Policy.objects.filter(network_id=network_id).values_list(
        "sources", "destinations"
    ):
        for group in set(sources.get("groups", [])) | set(destinations.get("groups", [])):
            usage.setdefault(group, Counter())["policies"] += 1
    for groups in Resource.objects.filter(network_id=network_id).values_list("groups", flat=True):
        for group in set(groups):
            usage.setdefault(group, Counter())["resources"] += 1
    return [
        {
            "name": name,
            "nodes": counts["nodes"],
            "policies": counts["policies"],
            "resources": counts["resources"],
        }
        for name, counts in sorted(usage.items())
    ]


def create_invitation(actor: Membership, *, email: str, role: str) -> Invitation:
    """Invite an email address with a role, within the invitation rate limits.

    With Authentik configured, the Authentik invitation is created first, and its failure
    (AuthentikError) leaves no Netsody invitation behind.
    """
    permissions.check_membership_change(actor_role=actor.role, target_role="", new_role=role)
    since = timezone.now() - timedelta(seconds=settings.INVITATION_RATE_LIMIT_WINDOW_SECS)
    recent = Invitation.objects.filter(created_at__gte=since)
    if recent.filter(invited_by_id=actor.user_id).count() >= settings.INVITATION_RATE_LIMIT_USER:
        raise RateLimitedError(
            f"You sent {settings.INVITATION_RATE_LIMIT_USER} invitations within "
            f"{settings.INVITATION_RATE_LIMIT_WINDOW_SECS} s. Wait before inviting more"
        )
    if recent.filter(network_id=actor.network_id).count() >= settings.INVITATION_RATE_LIMIT_NETWORK:
        raise RateLimitedError(
            f"This network got {settings.INVITATION_RATE_LIMIT_NETWORK} invitations within "
            f"{settings.INVITATION_RATE_LIMIT_WINDOW_SECS} s. Wait before inviting more"
        )
    invitation_id = uuid.uuid4()
    enrollment_url = ""
    if authentik.enabled():
        enrollment_url = authentik.create_invitation(invitation_id, email.strip())
    invitation = Invitation.objects.create(
        id=invitation_id,
        enrollment_url=enrollment_url,
        network_id=actor.network_id,
        email=email.strip(),
        role=role,
        invited_by_id=actor.user_id,
        expires_at=timezone.now() + INVITATION_LIFETIME,
    )
    transaction.on_commit(lambda: _queue_invitation_email(invitation.id))
    return invitation


def _queue_invitation_email(invitation_id: uuid.UUID) -> None:
    from kombu.exceptions import OperationalError

    from netsody_controller.networks.tasks import send_invitation_task

    try:
        send_invitation_task.delay(str(invitation_id))
    except (OperationalError, OSError) as error:
        # The invitation exists and is listed. Only its email waits for a working broker.
        logger.error(
            "queueing an invitation email failed",
            extra={"invitation_id": str(invitation_id), "error": str(error)},
        )


def revoke_invitation(actor: Membership, invitation_id: uuid.UUID) -> None:
    permissions.require(actor.role, Action.MANAGE_USERS)
    updated = Invitation.objects.filter(
        id=invitation_id, network_id=actor.network_id, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    if not updated:
        raise NotFoundError(f"Invitation {invitation_id} not found or already revoked")
