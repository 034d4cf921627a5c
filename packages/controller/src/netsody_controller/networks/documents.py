"""Networks as network documents: export, import, and the per-node view agents fetch.

The database rows are turned into the decoded-TOML form that `netsody_common` validates
(`document_from_dict`), so a network the API built and a document an operator wrote pass the
same checks and fail with the same messages.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from collections import OrderedDict
from typing import Any

from django.core.cache import cache
from django.db import transaction

from netsody_common.document import (
    NODE_PREFIX,
    RESOURCE_PREFIX,
    DocumentError,
    NetworkDocument,
    document_from_dict,
    parse_document,
    render_document,
)
from netsody_common.policy import render_view_for_node
from netsody_controller import revisions
from netsody_controller.errors import ErrorCode, InvalidRequestError
from netsody_controller.networks import services
from netsody_controller.networks.models import Network
from netsody_controller.nodes.models import Device, Node
from netsody_controller.policies.models import Policy, Resource

logger = logging.getLogger(__name__)

# Documents of recent network revisions kept per process, so that agents fetching the same
# revision share one database read and one validation.
DOCUMENT_CACHE_SIZE = 64
VIEW_CACHE_SIZE = 8192
# Views in the shared cache are keyed by revision, so they never go stale. The lifetime only
# bounds the memory that old revisions occupy.
SHARED_VIEW_TTL_SECS = 3600


def document_error(error: DocumentError) -> InvalidRequestError:
    """Return the API error for an invalid document, with netsody_common's message."""
    return InvalidRequestError(str(error), ErrorCode.INVALID_DOCUMENT)


def network_data(network: Network, *, with_facts: bool) -> dict[str, Any]:
    """Return the network as decoded TOML data; `with_facts` adds each node's os, version and
    addresses (needed to evaluate policy conditions, left out of exports)."""
    nodes = list(Node.objects.filter(network=network).select_related("device"))
    nodes.sort(key=lambda node: ipaddress.IPv4Address(node.ip))
    hostname_of = {node.id: node.hostname for node in nodes}
    resources = list(Resource.objects.filter(network=network).select_related("gateway__device"))
    dest_of = {resource.id: resource.dest for resource in resources}
    data: dict[str, Any] = {"network": network.subnet}
    if network.name:
        data["name"] = network.name
    data["node"] = [_node_data(node, with_facts=with_facts) for node in nodes]
    data["resource"] = [_resource_data(resource) for resource in resources]
    data["policy"] = [
        _policy_data(policy, hostname_of, dest_of)
        for policy in Policy.objects.filter(network=network)
    ]
    return data


def _node_data(node: Node, *, with_facts: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "hostname": node.hostname,
        "ip": node.ip,
        "pk": node.device.pk_hex,
        "groups": list(node.groups),
    }
    if with_facts:
        if node.device.os:
            entry["os"] = node.device.os
        if node.device.agent_version:
            entry["agent_version"] = node.device.agent_version
        if node.device.addresses:
            entry["addresses"] = list(node.device.addresses)
    return entry


def _resource_data(resource: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "dest": resource.dest,
        "gw": resource.gateway.device.pk_hex,
        "groups": list(resource.groups),
    }
    if resource.name:
        entry["name"] = resource.name
    return entry


def _policy_data(
    policy: Policy, hostname_of: dict[uuid.UUID, str], dest_of: dict[uuid.UUID, str]
) -> dict[str, Any]:
    def entries(side: dict[str, Any], *, with_resources: bool) -> list[str]:
        names = list(side.get("groups", []))
        names += [NODE_PREFIX + hostname_of[uuid.UUID(n)] for n in side.get("nodes", [])]
        if with_resources:
            names += [RESOURCE_PREFIX + dest_of[uuid.UUID(r)] for r in side.get("resources", [])]
        return names

    entry: dict[str, Any] = {}
    if policy.name:
        entry["name"] = policy.name
    entry["source_groups"] = entries(policy.sources, with_resources=False)
    entry["destination_groups"] = entries(policy.destinations, with_resources=True)
    if policy.rules:
        entry["rules"] = list(policy.rules)
    if policy.conditions:
        entry["conditions"] = dict(policy.conditions)
    return entry


def build_document(network: Network, *, with_facts: bool = False) -> NetworkDocument:
    """Return the network as a validated document."""
    return document_from_dict(network_data(network, with_facts=with_facts))


def export_document(network: Network) -> str:
    """Return the network as TOML text that `import_document` reads back unchanged."""
    return render_document(build_document(network))


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._lock = threading.Lock()

    def fetch(self, key: object) -> Any:
        with self._lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
            return None

    def store(self, key: object, value: object) -> None:
        with self._lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self._size:
                self.popitem(last=False)


_documents = _Lru(DOCUMENT_CACHE_SIZE)
_views = _Lru(VIEW_CACHE_SIZE)


def node_view(network: Network, pk: str) -> str:
    """Return the TOML text of what node `pk` may see of the network at its current revision.

    Node facts (os, agent version, addresses) are part of the document, so policy conditions
    are evaluated when the view is made. Cached per network revision: a status report that
    changes a device's facts bumps the revision of each of its networks.
    """
    document_key = (network.id, network.revision)
    document = _documents.fetch(document_key)
    if document is None:
        document = build_document(network, with_facts=True)
        _documents.store(document_key, document)
    view_key = (network.id, network.revision, pk)
    text = _views.fetch(view_key)
    if text is not None:
        return text
    # Other controller processes may have made this view already: share it through the cache.
    shared_key = f"node-view:{network.id}:{network.revision}:{pk}"
    text = cache.get(shared_key)
    if text is None:
        text = render_view_for_node(document, pk)
        cache.set(shared_key, text, timeout=SHARED_VIEW_TTL_SECS)
    _views.store(view_key, text)
    return text


@transaction.atomic
def import_document(network: Network, text: str) -> Network:
    """Replace the nodes, resources and policies of `network` with those of a document.

    Nodes are matched to devices by public key. A key not seen before becomes a device that
    belongs to no user until its agent pairs or joins. Raises InvalidRequestError with the
    document's problems.
    """
    try:
        document = parse_document(text)
    except DocumentError as error:
        raise document_error(error) from error
    # SECURITY: the document's name and subnet pass the same checks as the network fields, so a
    # document cannot give member devices a route for a public range or the whole internet.
    name = services.check_network_name(document.name) if document.name else None
    subnet = services.parse_subnet(str(document.network))
    network = Network.objects.select_for_update().get(id=network.id)
    old_devices = set(Node.objects.filter(network=network).values_list("device_id", flat=True))
    Policy.objects.filter(network=network).delete()
    Resource.objects.filter(network=network).delete()
    Node.objects.filter(network=network).delete()
    network.name = name or network.name
    network.subnet = str(subnet)
    network.save()
    nodes = _import_nodes(network, document)
    resources = _import_resources(network, document, nodes)
    _import_policies(network, document, nodes, resources)
    new_devices = {node.device_id for node in nodes.values()}
    revisions.networks_changed([network.id])
    revisions.devices_changed(old_devices | new_devices)
    logger.info("network imported", extra={"network_id": str(network.id), "nodes": len(nodes)})
    return network


def _import_nodes(network: Network, document: NetworkDocument) -> dict[str, Node]:
    by_hostname: dict[str, Node] = {}
    for entry in document.nodes:
        device, _ = Device.objects.get_or_create(
            pk_hex=entry.pk, defaults={"hostname": entry.hostname.lower()}
        )
        node = Node.objects.create(
            network=network,
            device=device,
            hostname=entry.hostname.lower(),
            ip=str(entry.ip),
            groups=list(entry.groups),
        )
        by_hostname[node.hostname] = node
    return by_hostname


def _import_resources(
    network: Network, document: NetworkDocument, nodes: dict[str, Node]
) -> dict[str, Resource]:
    node_by_pk = {node.device.pk_hex: node for node in nodes.values()}
    by_dest: dict[str, Resource] = {}
    for position, entry in enumerate(document.resources):
        by_dest[entry.dest] = Resource.objects.create(
            network=network,
            name=entry.name or "",
            dest=entry.dest,
            gateway=node_by_pk[entry.gw],
            groups=list(entry.groups),
            position=position,
        )
    return by_dest


def _import_policies(
    network: Network,
    document: NetworkDocument,
    nodes: dict[str, Node],
    resources: dict[str, Resource],
) -> None:
    data = parse_policy_tables(render_document(document))
    for position, (entry, table) in enumerate(zip(document.policies, data, strict=True)):
        Policy.objects.create(
            network=network,
            name=entry.name or "",
            position=position,
            sources=split_entries(entry.source_groups, nodes, resources),
            destinations=split_entries(entry.destination_groups, nodes, resources),
            rules=table.get("rules", []),
            conditions=table.get("conditions", {}),
        )


def parse_policy_tables(text: str) -> list[dict[str, Any]]:
    """Return the `[[policy]]` tables of rendered TOML in their canonical decoded form."""
    import tomllib

    return list(tomllib.loads(text).get("policy", []))


def split_entries(
    entries: tuple[str, ...] | list[str],
    nodes: dict[str, Node],
    resources: dict[str, Resource],
) -> dict[str, list[str]]:
    """Split document entries into groups, node ids (by hostname) and resource ids (by dest)."""
    side: dict[str, list[str]] = {"groups": [], "nodes": [], "resources": []}
    for entry in entries:
        if entry.startswith(NODE_PREFIX):
            side["nodes"].append(str(nodes[entry[len(NODE_PREFIX) :].lower()].id))
        elif entry.startswith(RESOURCE_PREFIX):
            side["resources"].append(str(resources[entry[len(RESOURCE_PREFIX) :]].id))
        else:
            side["groups"].append(entry)
    return side
