"""Operations on devices and nodes: pairing, adding a device to a network with an assigned IP
and hostname, renaming, regrouping and removal."""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from netsody_controller import revisions
from netsody_controller.accounts.models import User
from netsody_controller.errors import ConflictError, ErrorCode, InvalidRequestError, NotFoundError
from netsody_controller.networks.models import Membership, Network
from netsody_controller.nodes.models import Device, Node

logger = logging.getLogger(__name__)

HOSTNAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The network row lock serialises concurrent adds. The retries matter only where the database
# has no row locks (SQLite in development).
MAX_ASSIGN_ATTEMPTS = 5
FALLBACK_HOSTNAME = "node"


def sanitize_hostname(text: str) -> str:
    """Turn a device's hostname into a DNS label: lowercase, [a-z0-9-], at most 63 characters."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.strip().lower().split(".")[0])
    label = label.strip("-")[:63].strip("-")
    return label or FALLBACK_HOSTNAME


def check_hostname(text: str) -> str:
    """Return a valid hostname in lowercase, or raise InvalidRequestError naming the value."""
    hostname = text.strip().lower()
    if not HOSTNAME_PATTERN.match(hostname):
        raise InvalidRequestError(
            f"hostname {text!r} is not a DNS label: use 1 to 63 letters, digits or hyphens, "
            "not starting or ending with a hyphen"
        )
    return hostname


def usable_addresses(subnet: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """Return the addresses nodes may get: the hosts except the last one, which is reserved."""
    hosts = list(subnet.hosts())
    return hosts[:-1]


def _free_ip(network: Network) -> str:
    subnet = ipaddress.IPv4Network(network.subnet)
    used = {ipaddress.IPv4Address(ip) for ip in network.nodes.values_list("ip", flat=True)}
    for address in usable_addresses(subnet):
        if address not in used:
            return str(address)
    raise ConflictError(
        f"Network {network.id} has no free address left in {subnet}. Remove nodes or move the "
        "network to a larger subnet",
        ErrorCode.ADDRESS_POOL_EXHAUSTED,
    )


def _free_hostname(network: Network, wanted: str) -> str:
    taken = set(
        network.nodes.filter(hostname__startswith=wanted[:50]).values_list("hostname", flat=True)
    )
    if wanted not in taken:
        return wanted
    for suffix in range(2, 10000):
        candidate = f"{wanted[: 62 - len(str(suffix))]}-{suffix}"
        if candidate not in taken:
            return candidate
    raise ConflictError(f"No free hostname derived from {wanted!r} in network {network.id}")


def add_node(
    network_id: uuid.UUID,
    device: Device,
    *,
    groups: Iterable[str],
    hostname: str | None = None,
    added_by: User | None = None,
) -> Node:
    """Add a device to a network, assigning the lowest free IP and a free hostname.

    The network row is locked for the assignment, so concurrent adds never pick the same IP;
    the unique constraints on (network, ip) and (network, hostname) back that up.
    """
    for attempt in range(MAX_ASSIGN_ATTEMPTS):
        try:
            with transaction.atomic():
                return _add_node_locked(network_id, device, groups, hostname, added_by)
        except IntegrityError:
            if Node.objects.filter(network_id=network_id, device=device).exists():
                raise ConflictError(
                    f"Device {device.id} is already a node of network {network_id}"
                ) from None
            if (
                hostname is not None
                and Node.objects.filter(network_id=network_id, hostname=hostname).exists()
            ):
                raise ConflictError(f"hostname {hostname!r} is taken in this network") from None
            logger.debug("address assignment collided. Retrying", extra={"attempt": attempt})
    raise ConflictError("Assigning an address failed after several attempts. Try again")


def _add_node_locked(
    network_id: uuid.UUID,
    device: Device,
    groups: Iterable[str],
    hostname: str | None,
    added_by: User | None,
) -> Node:
    network = Network.objects.select_for_update().filter(id=network_id).first()
    if network is None:
        raise NotFoundError(f"Network {network_id} not found")
    if network.nodes.filter(device=device).exists():
        raise ConflictError(f"Device {device.id} is already a node of network {network_id}")
    if hostname is not None:
        name = check_hostname(hostname)
        if network.nodes.filter(hostname=name).exists():
            raise ConflictError(f"hostname {name!r} is taken in this network. Choose another")
    else:
        name = _free_hostname(network, sanitize_hostname(device.hostname))
    node = Node.objects.create(
        network=network,
        device=device,
        hostname=name,
        ip=_free_ip(network),
        groups=list(dict.fromkeys(groups)),
        added_by=added_by,
    )
    revisions.networks_changed([network.id])
    revisions.devices_changed([device.id])
    logger.info(
        "node added",
        extra={"network_id": str(network.id), "node_id": device.pk_hex, "ip": node.ip},
    )
    return node


def add_user_device(
    membership: Membership,
    device_id: uuid.UUID,
    *,
    hostname: str | None,
    groups: list[str] | None,
) -> Node:
    """Add one of the member's paired devices. It gets the member's default groups too."""
    device = Device.objects.filter(id=device_id, user_id=membership.user_id).first()
    if device is None:
        raise NotFoundError(f"Device {device_id} is not one of your paired devices")
    all_groups = [*membership.default_groups, *(groups or [])]
    return add_node(
        membership.network_id,
        device,
        groups=all_groups,
        hostname=hostname,
        added_by=membership.user,
    )


def get_node(network_id: uuid.UUID, node_id: uuid.UUID) -> Node:
    node = Node.objects.select_related("device").filter(network_id=network_id, id=node_id).first()
    if node is None:
        raise NotFoundError(f"Node {node_id} not found in network {network_id}")
    return node


def update_node(node: Node, *, hostname: str | None, groups: list[str] | None) -> Node:
    try:
        with transaction.atomic():
            if hostname is not None:
                node.hostname = check_hostname(hostname)
            if groups is not None:
                node.groups = list(dict.fromkeys(groups))
            node.save()
            revisions.networks_changed([node.network_id])
    except IntegrityError:
        raise ConflictError(f"hostname {node.hostname!r} is taken in this network") from None
    return node


def _check_not_gateway(nodes: Iterable[Node]) -> None:
    from netsody_controller.policies.models import Resource

    gateway_of = Resource.objects.filter(gateway__in=list(nodes)).first()
    if gateway_of is not None:
        raise ConflictError(
            f"Node {gateway_of.gateway_id} is the gateway of resource {gateway_of.dest}; "
            "give the resource another gateway or delete it first"
        )


def _drop_policy_references(nodes: list[Node]) -> None:
    from netsody_controller.policies.services import drop_references

    refs_by_network: dict[uuid.UUID, set[str]] = {}
    for node in nodes:
        refs_by_network.setdefault(node.network_id, set()).add(str(node.id))
    for network_id, refs in refs_by_network.items():
        drop_references(network_id, node_ids=refs)


@transaction.atomic
def remove_node(node: Node) -> None:
    """Remove a node. A device left without networks and without a user is deleted as well."""
    _check_not_gateway([node])
    _drop_policy_references([node])
    device = node.device
    node.delete()
    revisions.networks_changed([node.network_id])
    revisions.devices_changed([device.id])
    if device.user_id is None and not device.nodes.exists():
        delete_device(device)
    logger.info(
        "node removed", extra={"network_id": str(node.network_id), "node_id": device.pk_hex}
    )


@transaction.atomic
def delete_device(device: Device) -> None:
    """Delete a device with its nodes. Its node credential stops working at once."""
    from netsody_controller.auth import credential_verifier

    nodes = list(device.nodes.all())
    _check_not_gateway(nodes)
    _drop_policy_references(nodes)
    network_ids = [node.network_id for node in nodes]
    device_id = device.id
    device.delete()
    if network_ids:
        revisions.networks_changed(network_ids)
    transaction.on_commit(lambda: credential_verifier().forget_device(device_id))
    logger.info("device deleted", extra={"device_id": str(device_id)})
