"""Concurrent address assignment and join-key use, with threads on real PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

THREADS = 12


def _run_concurrently(task, count: int) -> list:
    """Run `task(index)` in `count` threads released together; return results or exceptions."""
    from django.db import connection

    barrier = threading.Barrier(count)

    def worker(index: int):
        try:
            barrier.wait(timeout=30)
            return task(index)
        except Exception as error:  # collected and asserted on by the caller
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(worker, range(count)))


def test_concurrent_adds_get_distinct_ips(client_for, network_of, agent_tools):
    from netsody_controller.networks.models import Network
    from netsody_controller.nodes import services
    from netsody_controller.nodes.models import Device, Node

    alice = client_for("alice")
    network = network_of(alice, subnet="10.50.0.0/24")
    devices = [
        Device.objects.create(pk_hex=agent_tools.new_identity().pk, hostname="same")
        for _ in range(THREADS)
    ]
    results = _run_concurrently(
        lambda index: services.add_node(network["id"], devices[index], groups=[]), THREADS
    )
    failures = [result for result in results if isinstance(result, Exception)]
    assert failures == []
    nodes = Node.objects.filter(network_id=network["id"])
    assert nodes.count() == THREADS
    assert len({node.ip for node in nodes}) == THREADS
    assert len({node.hostname for node in nodes}) == THREADS
    revision = Network.objects.get(id=network["id"]).revision
    assert revision > network["revision"]


def test_concurrent_joins_respect_use_limit(client_for, network_of, agent_tools):
    from netsody_controller.agent import services
    from netsody_controller.agent.schemas import JoinIn
    from netsody_controller.errors import UnauthenticatedError
    from netsody_controller.keys.models import JoinKey
    from netsody_controller.nodes.models import Node

    alice = client_for("alice")
    network = network_of(alice, subnet="10.51.0.0/24")
    created = alice.post(f"/api/networks/{network['id']}/join-keys", {"max_uses": 3})
    secret = created.body["secret"]
    anonymous = agent_tools.client(None)
    bodies = [
        JoinIn(
            **agent_tools.signed_proof(
                anonymous, agent_tools.new_identity(), "netsody-join:", join_key=secret
            )
        )
        for _ in range(THREADS)
    ]
    results = _run_concurrently(lambda index: services.join(bodies[index]), THREADS)
    joined = [result for result in results if not isinstance(result, Exception)]
    rejected = [result for result in results if isinstance(result, UnauthenticatedError)]
    assert len(joined) == 3
    assert len(rejected) == THREADS - 3
    assert JoinKey.objects.get(id=created.body["id"]).uses == 3
    assert Node.objects.filter(network_id=network["id"]).count() == 3


def test_concurrent_http_adds_across_workers(
    client_for, network_of, pair_device, controller_server
):
    """Parallel POSTs through a controller with two worker processes never hand out one IP
    twice."""
    import httpx

    server = controller_server(workers=2)
    alice = client_for("alice")
    network = network_of(alice, subnet="10.52.0.0/24")
    devices = [pair_device(alice)["device_id"] for _ in range(THREADS)]
    headers = {"Authorization": f"Bearer {alice.token}"}
    url = f"{server.url}/api/networks/{network['id']}/nodes"
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        responses = list(
            pool.map(
                lambda device: httpx.post(
                    url, json={"device_id": device}, headers=headers, timeout=30
                ),
                devices,
            )
        )
    assert [response.status_code for response in responses] == [201] * THREADS
    assert len({response.json()["ip"] for response in responses}) == THREADS
