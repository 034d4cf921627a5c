"""Operations on policies and resources.

Every change is checked by validating the whole network as a document before the transaction
commits, so the API can never store a network that export or the agent view would reject, and
the error messages are those of `netsody_common.document`.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from netsody_common.document import DocumentError
from netsody_controller import revisions
from netsody_controller.errors import ConflictError, InvalidRequestError, NotFoundError
from netsody_controller.networks import documents
from netsody_controller.networks.models import Network
from netsody_controller.nodes.models import Node
from netsody_controller.policies.models import Policy, Resource


def _validate_network(network_id: uuid.UUID) -> None:
    network = Network.objects.get(id=network_id)
    try:
        documents.build_document(network)
    except DocumentError as error:
        raise documents.document_error(error) from error


def _check_references(network_id: uuid.UUID, side: dict[str, Any]) -> dict[str, list[str]]:
    nodes = [str(node_id) for node_id in side.get("nodes", [])]
    resources = [str(resource_id) for resource_id in side.get("resources", [])]
    known_nodes = {
        str(node_id)
        for node_id in Node.objects.filter(network_id=network_id, id__in=nodes).values_list(
            "id", flat=True
        )
    }
    for node_id in nodes:
        if node_id not in known_nodes:
            raise InvalidRequestError(f"node {node_id} is not a node of network {network_id}")
    known_resources = {
        str(resource_id)
        for resource_id in Resource.objects.filter(
            network_id=network_id, id__in=resources
        ).values_list("id", flat=True)
    }
    for resource_id in resources:
        if resource_id not in known_resources:
            raise InvalidRequestError(
                f"resource {resource_id} is not a resource of network {network_id}"
            )
    result = {"groups": list(dict.fromkeys(side.get("groups", []))), "nodes": nodes}
    if "resources" in side:
        result["resources"] = resources
    return result


def _rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cleaned = []
    for rule in rules:
        entry: dict[str, Any] = {"protocol": rule["protocol"]}
        if rule.get("ports"):
            entry["ports"] = list(rule["ports"])
        cleaned.append(entry)
    return cleaned


def _conditions(conditions: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in conditions.items() if value not in (None, [], "")}


@transaction.atomic
def create_policy(network_id: uuid.UUID, data: dict[str, Any]) -> Policy:
    Network.objects.select_for_update().get(id=network_id)
    last = Policy.objects.filter(network_id=network_id).aggregate(last=Max("position"))["last"]
    policy = Policy.objects.create(
        network_id=network_id,
        name=data.get("name", ""),
        position=0 if last is None else last + 1,
        sources=_check_references(network_id, data["sources"]),
        destinations=_check_references(network_id, {"resources": [], **data["destinations"]}),
        rules=_rules(data.get("rules", [])),
        conditions=_conditions(data.get("conditions", {})),
    )
    _validate_network(network_id)
    revisions.networks_changed([network_id])
    return policy


def get_policy(network_id: uuid.UUID, policy_id: uuid.UUID) -> Policy:
    policy = Policy.objects.filter(network_id=network_id, id=policy_id).first()
    if policy is None:
        raise NotFoundError(f"Policy {policy_id} not found in network {network_id}")
    return policy


@transaction.atomic
def update_policy(policy: Policy, data: dict[str, Any]) -> Policy:
    Network.objects.select_for_update().get(id=policy.network_id)
    if data.get("name") is not None:
        policy.name = data["name"]
    if data.get("sources") is not None:
        policy.sources = _check_references(policy.network_id, data["sources"])
    if data.get("destinations") is not None:
        destinations = {"resources": [], **data["destinations"]}
        policy.destinations = _check_references(policy.network_id, destinations)
    if data.get("rules") is not None:
        policy.rules = _rules(data["rules"])
    if data.get("conditions") is not None:
        policy.conditions = _conditions(data["conditions"])
    if data.get("position") is not None:
        policy.position = data["position"]
    policy.save()
    _validate_network(policy.network_id)
    revisions.networks_changed([policy.network_id])
    return policy


@transaction.atomic
def delete_policy(policy: Policy) -> None:
    policy.delete()
    revisions.networks_changed([policy.network_id])


def _gateway(network_id: uuid.UUID, node_id: uuid.UUID) -> Node:
    node = Node.objects.filter(network_id=network_id, id=node_id).first()
    if node is None:
        raise InvalidRequestError(f"gateway node {node_id} is not a node of network {network_id}")
    return node


def _save_resource(resource: Resource) -> Resource:
    try:
        with transaction.atomic():
            resource.save()
    except IntegrityError:
        raise ConflictError(
            f"A resource with dest {resource.dest!r} exists in this network"
        ) from None
    _validate_network(resource.network_id)
    revisions.networks_changed([resource.network_id])
    return resource


@transaction.atomic
def create_resource(network_id: uuid.UUID, data: dict[str, Any]) -> Resource:
    Network.objects.select_for_update().get(id=network_id)
    last = Resource.objects.filter(network_id=network_id).aggregate(last=Max("position"))["last"]
    resource = Resource(
        network_id=network_id,
        name=data.get("name", ""),
        dest=data["dest"].strip().lower(),
        gateway=_gateway(network_id, data["gateway_node_id"]),
        groups=list(dict.fromkeys(data.get("groups", []))),
        position=0 if last is None else last + 1,
    )
    return _save_resource(resource)


def get_resource(network_id: uuid.UUID, resource_id: uuid.UUID) -> Resource:
    resource = Resource.objects.filter(network_id=network_id, id=resource_id).first()
    if resource is None:
        raise NotFoundError(f"Resource {resource_id} not found in network {network_id}")
    return resource


@transaction.atomic
def update_resource(resource: Resource, data: dict[str, Any]) -> Resource:
    Network.objects.select_for_update().get(id=resource.network_id)
    if data.get("name") is not None:
        resource.name = data["name"]
    if data.get("dest") is not None:
        resource.dest = data["dest"].strip().lower()
    if data.get("gateway_node_id") is not None:
        resource.gateway = _gateway(resource.network_id, data["gateway_node_id"])
    if data.get("groups") is not None:
        resource.groups = list(dict.fromkeys(data["groups"]))
    return _save_resource(resource)


def drop_references(
    network_id: uuid.UUID, *, node_ids: set[str] = frozenset(), resource_ids: set[str] = frozenset()
) -> None:
    """Remove nodes and resources about to be deleted from the network's policies.

    A policy left without any source or destination is deleted, since it permits nothing.
    """
    for policy in Policy.objects.filter(network_id=network_id):
        changed = False
        for side in (policy.sources, policy.destinations):
            for key, doomed in (("nodes", node_ids), ("resources", resource_ids)):
                kept = [item for item in side.get(key, []) if item not in doomed]
                if len(kept) != len(side.get(key, [])):
                    side[key] = kept
                    changed = True
        if not changed:
            continue
        if not any(policy.sources.values()) or not any(policy.destinations.values()):
            policy.delete()
        else:
            policy.save(update_fields=["sources", "destinations"])


@transaction.atomic
def delete_resource(resource: Resource) -> None:
    drop_references(resource.network_id, resource_ids={str(resource.id)})
    resource.delete()
    revisions.networks_changed([resource.network_id])
