"""Configuration revisions: one global counter that numbers every change agents see.

A network's `revision` is the counter value of its last change. A device's `revision` is that of
the last change to which networks it is in. The revision an agent sees is the maximum of its
device's and its networks' values, so it only ever grows, also when a node leaves a network.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import F

from netsody_controller.networks.models import Network, RevisionCounter
from netsody_controller.nodes.models import Device
from netsody_controller.notify import device_key, get_notifier, network_key


def next_revision() -> int:
    """Increase the global counter and return its new value (inside the caller's transaction).

    NOTE: the UPDATE locks the counter row until the transaction ends, which serialises
    concurrent changes. That is what keeps revisions in commit order.
    """
    with transaction.atomic():
        updated = RevisionCounter.objects.filter(id=1).update(value=F("value") + 1)
        if not updated:
            RevisionCounter.objects.get_or_create(id=1, defaults={"value": 0})
            RevisionCounter.objects.filter(id=1).update(value=F("value") + 1)
        return RevisionCounter.objects.values_list("value", flat=True).get(id=1)


def networks_changed(network_ids: Iterable[object]) -> int:
    """Mark networks as changed. Agents waiting on them are woken after the commit."""
    ids = list(dict.fromkeys(network_ids))
    with transaction.atomic():
        revision = next_revision()
        Network.objects.filter(id__in=ids).update(revision=revision)
        keys = [network_key(network_id) for network_id in ids]
        transaction.on_commit(lambda: get_notifier().publish(keys))
    return revision


def devices_changed(device_ids: Iterable[object]) -> int:
    """Mark that devices joined or left networks. Their agents are woken after the commit."""
    ids = list(dict.fromkeys(device_ids))
    with transaction.atomic():
        revision = next_revision()
        Device.objects.filter(id__in=ids).update(revision=revision)
        keys = [device_key(device_id) for device_id in ids]
        transaction.on_commit(lambda: get_notifier().publish(keys))
    return revision
