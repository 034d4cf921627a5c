"""Benchmark of the super peer relay against a plain asyncio UDP forwarder (and coturn).

Run: `hatch run python benchmarks/relay_bench.py [--runs 5 --seconds 3]`.

Everything runs on 127.0.0.1. One `netsody-sp` process relays between two agents: agent A sends
1,200-byte UDP payloads into its bound tunnel addressed to B's relay port; the super peer sends
them from A's port to B's port and passes them into B's tunnel. Both agents are test clients in
this process, so the figures include the cost of the Python clients on the same 2 cores as the
server. Over HTTP/3 they are the agent's own `SuperPeerSession`, which seals and opens relayed
datagrams around aioquic as netsody-sp does. A second HTTP/3 row uses plain aioquic test
clients, which send every datagram through aioquic's send loop. Over HTTP/2 they are h2 test
clients.
The baseline is a plain asyncio UDP forwarder in its own process, offered the same payloads
from the same sender loop.

Each figure is the median over `--runs` runs of `--seconds` seconds: received payload Mbit/s
and packets/s. coturn is measured when `turnserver` and `turnutils_uclient` are installed
(Debian package `coturn`), with coturn's own client relaying between two allocations, and
skipped with a note otherwise.

With `--sessions N [--transport h3]`, the script instead opens N idle authenticated sessions
and prints the super peer's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from netsody_common.identity import Identity
from netsody_common.wire import (
    encode_bound_datagram,
    encode_datagram_capsule,
    parse_proxy_public_addresses,
)

PAYLOAD = b"\xab" * 1200
BATCH = 32
ROOT = Path(__file__).resolve().parent.parent

FORWARDER = """
import asyncio, sys
listen, target = int(sys.argv[1]), int(sys.argv[2])
class Forward(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(data, ("127.0.0.1", target))
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Forward, local_addr=("127.0.0.1", listen))
    await asyncio.Event().wait()
asyncio.run(main())
"""


def load_clients() -> Any:
    """Load the protocol test clients and helpers of the integration tests."""
    path = ROOT / "tests" / "integration" / "superpeer" / "conftest.py"
    spec = importlib.util.spec_from_file_location("superpeer_test_clients", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file loads
    spec.loader.exec_module(module)
    return module


class Count:
    """Stands in for a datagram queue and only counts."""

    def __init__(self) -> None:
        self.count = 0

    def put_nowait(self, _item: object) -> None:
        self.count += 1


def start_superpeer(kit: Any, workdir: Path, *extra: str) -> tuple[subprocess.Popen, int, Path]:
    cert, key, _ = kit.write_certificate(workdir)
    port = kit.free_port()
    proxy = kit.free_port_range(16)
    env = dict(os.environ, NETSODY_POW_DIFFICULTY="8")
    command = [
        sys.executable,
        "-m",
        "netsody_superpeer.cli",
        "--listen",
        f"127.0.0.1:{port}",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--proxy-public-addresses",
        "127.0.0.1",
        "--proxy-ports",
        f"{proxy.start}-{proxy.stop - 1}",
        "--relay-pps",
        "10000000",
        "--relay-bps",
        "10000000000",
        "--relay-total-bps",
        "10000000000",
        "--log-level",
        "WARNING",
        *extra,
    ]
    log = (workdir / "netsody-sp.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    kit.wait_listening(port, process, workdir / "netsody-sp.log")
    return process, port, cert


async def relayed_pair(kit: Any, transport: str, port: int, identities: list) -> tuple:
    agents = []
    for identity in identities:
        client = await kit.open_client(transport, port)
        channel = await client.signal(identity)
        await channel.authenticate()
        response, tunnel = await client.relay()
        header = response[b"proxy-public-address"].decode()
        ip, public_port = parse_proxy_public_addresses(header)[0]
        agents.append((client, tunnel, (str(ip), public_port)))
    return agents[0], agents[1]


async def wait_for_room(client: Any, transport: str, stream_id: int) -> None:
    if transport == "h3":
        quic = client.protocol._quic
        while len(quic._datagrams_pending) > 256:  # noqa: ASYNC110 - aioquic offers no event
            await asyncio.sleep(0.0005)
        return
    while (  # noqa: ASYNC110 - h2 offers no event for a reopened window
        client.writer.transport.get_write_buffer_size() > 256 * 1024
        or client.conn.local_flow_control_window(stream_id) < 64 * 1024
    ):
        await asyncio.sleep(0.0005)


def send_batch(kit: Any, client: Any, transport: str, stream_id: int, target: tuple) -> None:
    payload = encode_bound_datagram(target[0], target[1], PAYLOAD)
    if transport == "h3":
        for _ in range(BATCH):
            client.protocol.http.send_datagram(stream_id, payload)
        client.protocol.transmit()
    else:
        capsule = encode_datagram_capsule(payload)
        for _ in range(BATCH // 8):  # 8 capsules stay under HTTP/2's default 16 KiB frame size
            client.conn.send_data(stream_id, capsule * 8)
        client.flush()


async def relay_run(
    kit: Any, transport: str, port: int, identities: list, seconds: float
) -> tuple[float, float]:
    (client_a, tunnel_a, address_a), (client_b, tunnel_b, address_b) = await relayed_pair(
        kit, transport, port, identities
    )
    tunnel_b.send(*address_a, b"open")  # lets A's port pass datagrams from B's port
    await asyncio.sleep(0.2)
    counter = Count()
    tunnel_b.stream.datagrams = counter
    stream_id = tunnel_a.stream.stream_id
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await wait_for_room(client_a, transport, stream_id)
        send_batch(kit, client_a, transport, stream_id, address_b)
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.3)
    received = counter.count
    for client in (client_a, client_b):
        await client.close()
    return received * len(PAYLOAD) * 8 / elapsed / 1e6, received / elapsed


async def agent_run(
    kit: Any, port: int, cert: Path, identities: list, seconds: float
) -> tuple[float, float]:
    """Relay from agent A to agent B over HTTP/3 with the agent's own sessions."""
    a, b = (kit.AgentRelay(identity, port, cert) for identity in identities)
    try:
        address_a, address_b = await a.wait_bound(), await b.wait_bound()
        b.send(b"open", address_a)  # lets A's port pass datagrams from B's port
        await asyncio.sleep(0.2)
        counter = Count()
        b.received = counter
        session = a.session
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(BATCH):
                session.send_relayed(PAYLOAD, address_b)
            a.flush()
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - start
        await asyncio.sleep(0.3)
    finally:
        a.close()
        b.close()
    return counter.count * len(PAYLOAD) * 8 / elapsed / 1e6, counter.count / elapsed


async def forwarder_run(kit: Any, seconds: float) -> tuple[float, float]:
    listen, target = kit.free_port(), kit.free_port()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", target))
    receiver.setblocking(False)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    command = [sys.executable, "-c", FORWARDER, str(listen), str(target)]
    process = subprocess.Popen(command)  # noqa: ASYNC220 - returns at once
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    counter = Count()

    def drain() -> None:
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                return
            counter.put_nowait(None)

    loop = asyncio.get_running_loop()
    loop.add_reader(receiver.fileno(), drain)
    try:
        await asyncio.sleep(0.5)  # the forwarder process starts
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(BATCH):
                try:
                    sender.sendto(PAYLOAD, ("127.0.0.1", listen))
                except BlockingIOError:
                    break
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - start
        await asyncio.sleep(0.3)
    finally:
        loop.remove_reader(receiver.fileno())
        process.terminate()
        process.wait()
        sender.close()
        receiver.close()
    return counter.count * len(PAYLOAD) * 8 / elapsed / 1e6, counter.count / elapsed


def print_drops(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    with urllib.request.urlopen(f"http://{host.strip('[]')}:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(("netsody_sp_drops_total", "netsody_sp_relayed_packets_total")):
            print(line)


def coturn_run(kit: Any, messages: int) -> tuple[float, float] | None:
    """Relay through coturn with its own client; None when coturn is not installed.

    `turnutils_uclient -y` relays between two of its clients through the TURN server and
    reports the received bytes and the transmit time in whole seconds, so this figure is
    coarser than the others and paced by that client.
    """
    if not (shutil.which("turnserver") and shutil.which("turnutils_uclient")):
        return None
    port = kit.free_port()
    relay_ports = kit.free_port_range(32)
    server = subprocess.Popen(
        [
            "turnserver",
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--min-port={relay_ports.start}",
            f"--max-port={relay_ports.stop - 1}",
            "--no-auth",
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        output = subprocess.run(
            [
                "turnutils_uclient",
                "-y",
                "-l",
                str(len(PAYLOAD)),
                "-n",
                str(messages),
                "-m",
                "1",
                "-z",
                "0",
                "-p",
                str(port),
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    finally:
        server.terminate()
        server.wait()
    received = re.findall(
        r"tot_recv_msgs=(\d+), tot_send_bytes ~ \d+, tot_recv_bytes ~ (\d+)", output
    )
    seconds = re.findall(r"Total transmit time is (\d+)", output)
    if not received or not seconds:
        return None
    packets, volume = map(int, received[-1])
    elapsed = max(int(seconds[-1]), 1)
    return volume * 8 / elapsed / 1e6, packets / elapsed


async def measure(args: argparse.Namespace) -> None:
    kit = load_clients()
    identities = [Identity.generate(8, progress=False) for _ in range(2)]
    results: dict[str, list[tuple[float, float]]] = {
        "agent-h3": [],
        "h3": [],
        "h2": [],
        "forwarder": [],
    }
    with tempfile.TemporaryDirectory() as workdir:
        process, port, cert = start_superpeer(kit, Path(workdir))
        try:
            for _ in range(args.runs):
                results["agent-h3"].append(
                    await agent_run(kit, port, cert, identities, args.seconds)
                )
                for transport in ("h3", "h2"):
                    results[transport].append(
                        await relay_run(kit, transport, port, identities, args.seconds)
                    )
                results["forwarder"].append(await forwarder_run(kit, args.seconds))
            for _ in range(args.runs):
                coturn = coturn_run(kit, messages=5000)
                if coturn is not None:
                    results.setdefault("coturn", []).append(coturn)
            if args.metrics:
                print_drops(os.environ["NETSODY_PROMETHEUS_LISTEN"])
        finally:
            process.terminate()
            process.wait()
    report(results, args)


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    base = statistics.median(r[0] for r in results["forwarder"])
    names = {
        "agent-h3": "HTTP/3, agent sessions",
        "h3": "HTTP/3, aioquic clients",
        "h2": "HTTP/2, h2 clients",
        "forwarder": "asyncio UDP forwarder",
        "coturn": "coturn (turnutils_uclient)",
    }
    print(
        f"Relay throughput, 1,200-byte payloads, median of {args.runs} runs of "
        f"{args.seconds:g} s on 127.0.0.1"
    )
    print(f"{'path':<26} {'Mbit/s':>9} {'packets/s':>11} {'vs forwarder':>13}")
    for key, name in names.items():
        if not results.get(key):
            print(
                f"{name:<26} skipped: turnserver and turnutils_uclient are not installed "
                "(apt-get install coturn)"
            )
            continue
        mbps = statistics.median(r[0] for r in results[key])
        pps = statistics.median(r[1] for r in results[key])
        print(f"{name:<26} {mbps:>9.1f} {pps:>11.0f} {mbps / base:>12.2f}x")
    h3 = statistics.median(r[0] for r in results["agent-h3"])
    h2 = statistics.median(r[0] for r in results["h2"])
    print(f"HTTP/2 relay / HTTP/3 relay (agent sessions): {h2 / h3:.2f}")


async def keep_alive(channels: list) -> None:
    """Ping every session every 20 s, as agents do, so no idle timeout closes it."""
    while True:
        await asyncio.sleep(20)
        for channel in list(channels):
            channel.state.ping()
            channel.flush()


async def idle_sessions(count: int, transport: str) -> None:
    kit = load_clients()
    metrics_port = kit.free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process, port, _cert = start_superpeer(
            kit,
            Path(workdir),
            "--max-sessions-per-address",
            str(count + 10),
            "--max-sessions",
            str(count + 10),
            "--prometheus-listen",
            f"127.0.0.1:{metrics_port}",
        )
        clients, channels = [], []
        pinger = asyncio.create_task(keep_alive(channels))
        try:
            before = rss_mib(process.pid)
            start = time.monotonic()
            failures = 0
            while len(channels) < count and failures < count // 10 + 10:
                try:
                    client = await kit.open_client(transport, port)
                    clients.append(client)
                    channel = await client.signal(Identity.generate(8, progress=False))
                    await channel.authenticate()
                except (ConnectionError, TimeoutError):
                    failures += 1  # a handshake that timed out on the loaded machine
                    continue
                channels.append(channel)
            await asyncio.sleep(1)
            after = rss_mib(process.pid)
            sessions = open_sessions(metrics_port, transport)
            print(
                f"{len(channels)} idle authenticated {transport} sessions opened in "
                f"{time.monotonic() - start:.0f} s ({sessions} open, {failures} attempts "
                f"failed): netsody-sp RSS {after:.0f} MiB (at start {before:.0f} MiB, "
                f"{(after - before) * 1024 / max(sessions, 1):.1f} KiB per open session)"
            )
        finally:
            pinger.cancel()
            for client in clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 1)
            process.terminate()
            process.wait()


def open_sessions(metrics_port: int, transport: str) -> int:
    """Return the super peer's count of authenticated sessions of `transport`."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    prefix = f'netsody_sp_sessions{{transport="{transport}"}} '
    return int(
        float(next(line for line in text.splitlines() if line.startswith(prefix)).split()[-1])
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per path (default 5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per run (default 3)")
    parser.add_argument(
        "--sessions",
        type=int,
        default=0,
        help="measure memory with this many idle sessions instead",
    )
    parser.add_argument(
        "--transport",
        choices=["h2", "h3"],
        default="h2",
        help="transport of the idle sessions (default h2)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="print the super peer's drop counters (needs "
        "NETSODY_PROMETHEUS_LISTEN, without PROMETHEUS_TOKEN)",
    )
    args = parser.parse_args()
    if args.sessions:
        asyncio.run(idle_sessions(args.sessions, args.transport))
    else:
        asyncio.run(measure(args))


if __name__ == "__main__":
    main()
