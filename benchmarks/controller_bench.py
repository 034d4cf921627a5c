"""Controller benchmark: configuration fetches for a 1,000-node network under 200 long polls.

Creates a fresh database in the PostgreSQL server given by NETSODY_BENCH_POSTGRES_URL (or
NETSODY_TEST_POSTGRES_URL), uses the Redis at NETSODY_BENCH_REDIS_URL (or
NETSODY_TEST_REDIS_URL), fills a network with NODES nodes and one ALL-to-ALL policy, and starts
`netsody-controller serve` on loopback. Then, in one run:

1. the first configuration fetch of each of LONG_POLLERS agents, CONCURRENCY in flight, which
   computes each agent's view of the network (cached per network revision afterwards);
2. the LONG_POLLERS agents then long-poll `/api/agent/config` at their current revision, and
   while they wait FETCHES configuration fetches of those agents run, CONCURRENCY in flight;
3. under the same load, the same server returns a static JSON document of the same size as one
   configuration (`/benchmark/static`), as the baseline;
4. one network change is made, and the time until every long-polling agent has the new
   revision is reported (each of them needs a freshly computed view).

Usage: hatch run python benchmarks/controller_bench.py [--nodes 1000] [--workers 2]
Prints figures; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

NODES = 1000
LONG_POLLERS = 200
FETCHES = 1000
CONCURRENCY = 20
SUBNET = "10.64.0.0/22"


def _env_url(*names: str) -> str:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    raise SystemExit(f"set {' or '.join(names)} to a server on loopback")


def _fresh_database(url: str) -> str:
    name = f"netsody_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _fill_network(nodes: int) -> tuple[str, list[str]]:
    """Create the network and its nodes directly in the database; return network id and the
    node credentials."""
    from django.conf import settings

    from netsody_common.identity import Identity
    from netsody_controller.accounts.models import User
    from netsody_controller.credentials import derive_credential
    from netsody_controller.networks import services
    from netsody_controller.nodes.models import Device, Node
    from netsody_controller.revisions import devices_changed, networks_changed

    owner = User.objects.create(subject="bench-owner", email="owner@bench.test")
    membership = services.create_network(owner, name="bench", subnet=SUBNET)
    addresses = list(ipaddress.IPv4Network(SUBNET).hosts())[:nodes]
    devices = [
        Device(pk_hex=Identity.generate(0, progress=False).pk, hostname=f"node{index}")
        for index in range(nodes)
    ]
    Device.objects.bulk_create(devices)
    Node.objects.bulk_create(
        Node(
            network_id=membership.network_id,
            device=device,
            hostname=f"node{index}",
            ip=str(addresses[index]),
            groups=["fleet"],
        )
        for index, device in enumerate(devices)
    )
    networks_changed([membership.network_id])
    devices_changed([device.id for device in devices])
    credentials = [
        derive_credential(settings.CONTROLLER_SECRET, device.id, 0) for device in devices
    ]
    return str(membership.network_id), credentials


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen:
    full = {**os.environ, **env, "APP_HOST": "127.0.0.1", "APP_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "netsody_controller.cli", "serve", "--workers", str(workers)],
        env=full,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the controller did not start; see {log}")


async def _fetch_all(
    client: httpx.AsyncClient, url: str, credentials: list[str | None], concurrency: int
) -> tuple[list[float], float, int]:
    """Fetch `url` once per credential with `concurrency` in flight; return latencies (ms),
    the wall time (s) and the response size of the last fetch."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for credential in credentials:
        queue.put_nowait(credential)
    latencies: list[float] = []
    size = 0

    async def worker() -> None:
        nonlocal size
        while not queue.empty():
            credential = queue.get_nowait()
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            started = time.perf_counter()
            response = await client.get(url, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            size = len(response.content)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, size


def _summary(name: str, latencies: list[float], wall: float) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    rate = len(ordered) / wall
    return f"| {name} | {len(ordered)} | {p50:.1f} | {p99:.1f} | {rate:.0f} |"


async def _poll_until_newer(
    client: httpx.AsyncClient, base: str, credential: str, revision: int
) -> tuple[float, int]:
    """Long-poll like an agent until a revision newer than `revision` arrives; return when it
    arrived and the revision."""
    while True:
        try:
            response = await client.get(
                f"{base}/api/agent/config",
                params={"revision": revision, "wait": 30},
                headers={"Authorization": f"Bearer {credential}"},
                timeout=300,
            )
        except (httpx.ReadError, httpx.RemoteProtocolError):
            # The server closed an idle pooled connection as this request reused it; an agent
            # retries the same way.
            continue
        response.raise_for_status()
        new_revision = response.json()["revision"]
        if new_revision > revision:
            return time.perf_counter(), new_revision


async def _run(base: str, network_id: str, credentials: list[str]) -> None:
    limits = httpx.Limits(max_connections=LONG_POLLERS + CONCURRENCY + 10)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        config_url = f"{base}/api/agent/config"
        agents = credentials[:LONG_POLLERS]
        first = await client.get(config_url, headers={"Authorization": f"Bearer {agents[0]}"})
        revision = first.json()["revision"]
        document_size = len(first.content)
        # First fetch of each agent's view: computed once per revision, then served from cache.
        cold, cold_wall, _ = await _fetch_all(client, config_url, agents, CONCURRENCY)
        polls = [
            asyncio.create_task(_poll_until_newer(client, base, credential, revision))
            for credential in agents
        ]
        await asyncio.sleep(2)
        fetches = (agents * (FETCHES // len(agents) + 1))[:FETCHES]
        warm, warm_wall, _ = await _fetch_all(client, config_url, fetches, CONCURRENCY)
        static, static_wall, static_size = await _fetch_all(
            client, f"{base}/benchmark/static", [None] * FETCHES, CONCURRENCY
        )
        waiting = sum(not poll.done() for poll in polls)
        print(f"config response: {document_size} bytes; static baseline: {static_size} bytes")
        print(f"long polls waiting during the measured fetches: {waiting} of {LONG_POLLERS}")
        print("| requests | count | p50 ms | p99 ms | requests/s |")
        print("| --- | --- | --- | --- | --- |")
        print(_summary("config, first fetch of each view (computed)", cold, cold_wall))
        print(_summary("config, views cached", warm, warm_wall))
        print(_summary("static document of the same size (baseline)", static, static_wall))
        sys.stdout.flush()
        from netsody_controller.revisions import networks_changed

        changed_at = time.perf_counter()
        await asyncio.to_thread(networks_changed, [network_id])
        results = await asyncio.gather(*polls)
        delays = sorted((done - changed_at) * 1000 for done, _ in results)
    print(
        f"one network change until all {LONG_POLLERS} long-polling agents had the new "
        f"revision: median {statistics.median(delays):.0f} ms, last {delays[-1]:.0f} ms"
    )


def main() -> None:
    global NODES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    NODES = args.nodes
    postgres = _env_url("NETSODY_BENCH_POSTGRES_URL", "NETSODY_TEST_POSTGRES_URL")
    redis = _env_url("NETSODY_BENCH_REDIS_URL", "NETSODY_TEST_REDIS_URL")
    state = Path(tempfile.mkdtemp(prefix="netsody-bench-"))
    env = {
        "DATABASE_URL": _fresh_database(postgres),
        "REDIS_URL": redis,
        "NETSODY_CONTROLLER_SECRET_PATH": str(state / "controller_secret"),
        "NETSODY_LOG_LEVEL": "warning",
        "NETSODY_LOG_FORMAT": "text",
        "DJANGO_SETTINGS_MODULE": "netsody_controller.settings",
    }
    _setup_django(env)
    network_id, credentials = _fill_network(args.nodes)
    from netsody_controller.agent.services import config_body
    from netsody_controller.nodes.models import Device

    sample = json.dumps(config_body(Device.objects.order_by("created_at").first().id), default=str)
    static_file = state / "static.json"
    static_file.write_text(sample)
    env["NETSODY_BENCHMARK_STATIC_FILE"] = str(static_file)
    port = _free_port()
    server = _start_server(env, port, args.workers, state / "server.log")
    try:
        print(
            f"controller: {args.workers} uvicorn workers; {args.nodes} nodes, one ALL-to-ALL "
            f"policy; {LONG_POLLERS} long polls; {FETCHES} fetches, {CONCURRENCY} in flight"
        )
        asyncio.run(_run(f"http://127.0.0.1:{port}", network_id, credentials))
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
