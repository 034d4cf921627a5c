"""Benchmark of the agent data plane's memory with 100 peers connected.

Run as root: `hatch run python benchmarks/agent_memory_bench.py [--peers 100 --settle 10]`.

Two network namespaces are joined by a veth pair (192.168.79.1 and .2, inside the namespaces
only). Namespace a runs the agent under test, one `python -m netsody_agent.dataplane.run`
process with a real TUN device, a manual network file and a `--peer` entry for every peer.
Namespace b runs the peers: one Python process with `--peers` `DataPlane` instances in one
asyncio loop, each with its own identity and UDP port and a stand-in TUN device (a socketpair
that replies to ICMP echo requests). The peers are real QUIC endpoints of the Netsody protocol.
They share one process, and only the agent under test is measured.

The script prints the resident set size (VmRSS and its peak VmHWM from /proc/PID/status) of:

- a bare interpreter that imported aioquic and cryptography;
- the agent with the same network and `--peer` entries while no peer runs (it keeps dialing);
- the agent with the same network but without `--peer` entries (it dials nobody);
- the agent with every peer up, after one ping to each peer and `--settle` seconds.

With `--tracemalloc`, a copy of the agent runs under tracemalloc with every peer up and the
script prints the Python allocations of that copy by file and by line. Every namespace and
process the script creates is removed on exit, by name and by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from netns import Bench

from netsody_common.identity import Identity

UNDERLAY = {"a": "192.168.79.1", "b": "192.168.79.2"}
OVERLAY_NETWORK = "10.43.0.0/24"
AGENT_PORT = 7000
FIRST_PEER_PORT = 7101
DIFFICULTY = 8
TARGET_MB = 120
GOAL_MB = 60
MAX_PEERS = 250


# Setup files


def overlay_ip(index: int) -> str:
    """Overlay address of node `index`: 0 is the agent, 1..N the peers."""
    return f"10.43.0.{index + 1}"


def write_network(workdir: Path, count: int) -> tuple[Identity, list[Identity]]:
    """Write the identities and one network file in which the agent reaches every peer.

    The peers share a group that no policy connects to itself, so each peer's compiled network
    contains the agent only and the peers do not dial each other.
    """
    agent = Identity.generate(DIFFICULTY, progress=False)
    agent.save(workdir / "agent.key")
    peers = []
    nodes = [
        f'[[node]]\nhostname = "agent"\nip = "{overlay_ip(0)}"\npk = "{agent.pk}"\n'
        'groups = ["hub"]\n'
    ]
    for index in range(1, count + 1):
        peer = Identity.generate(DIFFICULTY, progress=False)
        peer.save(workdir / f"peer-{index}.key")
        peers.append(peer)
        nodes.append(
            f'[[node]]\nhostname = "peer-{index}"\nip = "{overlay_ip(index)}"\n'
            f'pk = "{peer.pk}"\ngroups = ["spoke"]\n'
        )
    policies = (
        '[[policy]]\nsource_groups = ["hub"]\ndestination_groups = ["spoke"]\n\n'
        '[[policy]]\nsource_groups = ["spoke"]\ndestination_groups = ["hub"]\n'
    )
    (workdir / "network.toml").write_text(
        f'name = "memory"\nnetwork = "{OVERLAY_NETWORK}"\n\n' + "\n".join(nodes) + "\n" + policies
    )
    return agent, peers


def bench_env() -> dict[str, str]:
    return {**os.environ, "NETSODY_POW_DIFFICULTY": str(DIFFICULTY)}


# Measurements


def memory_kb(pid: int) -> dict[str, int]:
    """Return VmRSS, VmHWM, RssAnon and RssFile of `pid` in KiB, from /proc/PID/status."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _colon, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            figures[key] = int(value.split()[0])
    return figures


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_until(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def peers_up(status_file: Path, count: int) -> int:
    status = read_status(status_file)
    if status is None:
        return 0
    return sum(1 for peer in status["peers"] if peer["state"] == "up")


def ping_all(bench: Bench, count: int) -> int:
    """Send one echo request to every peer (at most 4 in flight); return the number of replies."""
    answered = 0
    for start in range(1, count + 1, 4):
        batch = [
            bench.popen("a", "ping", "-c", "1", "-W", "3", overlay_ip(index))
            for index in range(start, min(start + 4, count + 1))
        ]
        for process in batch:
            answered += process.wait(timeout=10) == 0
            bench.processes.remove(process)
    return answered


def agent_command(workdir: Path, endpoints: list[str], *, traced: bool = False) -> list[str]:
    command = [sys.executable]
    if traced:
        # A copy of the agent that dumps a tracemalloc snapshot on SIGUSR1.
        command += ["-X", "tracemalloc=1", __file__, "--traced-agent", str(workdir), "--"]
    else:
        command += ["-m", "netsody_agent.dataplane.run"]
    command += [
        "--network",
        str(workdir / "network.toml"),
        "--identity",
        str(workdir / "agent.key"),
        "--listen-port",
        str(AGENT_PORT),
        "--status-file",
        str(workdir / "status.json"),
        "--log-level",
        "WARNING",
    ]
    for endpoint in endpoints:
        command += ["--peer", endpoint]
    return command


def measure_agent(
    bench: Bench, endpoints: list[str], settle: float, *, traced: bool = False
) -> tuple[subprocess.Popen, dict[str, int]]:
    """Start the agent, wait until its status file exists and `settle` seconds more."""
    status_file = bench.workdir / "status.json"
    status_file.unlink(missing_ok=True)
    process = bench.popen(
        "a", *agent_command(bench.workdir, endpoints, traced=traced), env=bench_env()
    )
    wait_until(lambda: status_file.exists(), "agent status file", 30)
    time.sleep(settle)
    return process, memory_kb(process.pid)


def measure_bare(bench: Bench) -> dict[str, int]:
    code = "import time, aioquic, cryptography; time.sleep(60)"
    process = bench.popen("a", sys.executable, "-c", code)
    try:
        time.sleep(2)
        return memory_kb(process.pid)
    finally:
        bench.stop(process)


def measure_with_peers(
    bench: Bench, endpoints: list[str], args: argparse.Namespace, *, traced: bool = False
) -> tuple[dict[str, int], dict[str, Any]]:
    """Start the agent with every peer running, wait for all links, ping each and settle."""
    status_file = bench.workdir / "status.json"
    status_file.unlink(missing_ok=True)
    started = time.monotonic()
    process = bench.popen(
        "a", *agent_command(bench.workdir, endpoints, traced=traced), env=bench_env()
    )
    try:
        wait_until(
            lambda: peers_up(status_file, args.peers) == args.peers,
            f"all {args.peers} peers up",
            args.timeout,
        )
        info: dict[str, Any] = {"up_s": time.monotonic() - started}
        info["answered"] = ping_all(bench, args.peers)
        time.sleep(args.settle)
        info["up_after_settle"] = peers_up(status_file, args.peers)
        figures = memory_kb(process.pid)
        if traced:
            info["snapshot"] = dump_snapshot(bench, process)
        return figures, info
    finally:
        bench.stop(process)


def dump_snapshot(bench: Bench, process: subprocess.Popen) -> Path:
    path = bench.workdir / "agent.tracemalloc"
    os.kill(process.pid, signal.SIGUSR1)
    wait_until(lambda: (bench.workdir / "agent.tracemalloc.done").exists(), "snapshot", 60)
    return path


def start_peers(bench: Bench, agent: Identity, count: int) -> subprocess.Popen:
    ready = bench.workdir / "peers.ready"
    process = bench.popen(
        "b",
        sys.executable,
        __file__,
        "--serve-peers",
        str(bench.workdir),
        "--peers",
        str(count),
        "--agent-pk",
        agent.pk,
        env=bench_env(),
    )
    wait_until(lambda: ready.exists() or process.poll() is not None, "peers ready", 120)
    if process.poll() is not None:
        raise RuntimeError(f"the peer process exited, see {bench.workdir}/b-*.log")
    return process


# The peer process (namespace b)


class StandInTun:
    """A TUN device stand-in for a peer's data plane: a socketpair that replies to pings.

    The data plane reads packets from `fileno()` with `read_batch` and writes with `write` or
    `write_frames`. An ICMP echo request written to it comes back as the echo reply, as the
    kernel behind a real TUN device would send it.
    """

    vnet_header = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._inner, self._outer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._inner.setblocking(False)
        self._outer.setblocking(False)

    def fileno(self) -> int:
        return self._inner.fileno()

    def read_batch(self, max_packets: int = 64, fd: int | None = None) -> list[bytes]:
        packets = []
        while len(packets) < max_packets:
            try:
                packets.append(self._inner.recv(65536))
            except BlockingIOError:
                break
        return packets

    def write(self, packet: bytes | memoryview) -> None:
        reply = echo_reply(bytes(packet))
        if reply is not None:
            self._outer.send(reply)

    def write_frames(self, frames: list[bytes]) -> int:
        for frame in frames:
            self.write(frame)
        return 0

    def close(self) -> None:
        self._inner.close()
        self._outer.close()


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[index : index + 2], "big") for index in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_reply(packet: bytes) -> bytes | None:
    """Return the ICMP echo reply to an IPv4 echo request, or None for any other packet."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    header_length = (packet[0] & 0x0F) * 4
    if packet[header_length] != 8:
        return None
    header = bytearray(packet[:header_length])
    header[12:16], header[16:20] = packet[16:20], packet[12:16]
    header[10:12] = b"\x00\x00"
    header[10:12] = internet_checksum(bytes(header)).to_bytes(2, "big")
    icmp = bytearray(packet[header_length:])
    icmp[0] = 0
    icmp[2:4] = b"\x00\x00"
    icmp[2:4] = internet_checksum(bytes(icmp)).to_bytes(2, "big")
    return bytes(header) + bytes(icmp)


async def serve_peers(workdir: Path, count: int, agent_pk: str) -> None:
    from netsody_agent.dataplane import DataPlane
    from netsody_common.document import parse_document
    from netsody_common.policy import compile_for_node

    document = parse_document((workdir / "network.toml").read_text())
    planes = []
    for index in range(1, count + 1):
        identity = Identity.load(workdir / f"peer-{index}.key")
        plane = DataPlane(
            identity,
            StandInTun(f"peer-{index}"),
            super_peers=[],
            listen_port=FIRST_PEER_PORT + index - 1,
            listen_host=UNDERLAY["b"],
        )
        await plane.start()
        plane.set_peer_endpoints(agent_pk, [(UNDERLAY["a"], AGENT_PORT)])
        await plane.apply([compile_for_node(document, identity.pk)])
        planes.append(plane)
    (workdir / "peers.ready").write_text("ready\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for plane in planes:
        await plane.stop()
        plane.tun.close()


def count_connections() -> int:
    from aioquic.quic.connection import QuicConnection

    return sum(1 for item in gc.get_objects() if type(item) is QuicConnection)


def run_traced_agent(workdir: Path, agent_args: list[str]) -> int:
    """Run the agent in this process and dump a tracemalloc snapshot on SIGUSR1."""
    import tracemalloc

    from netsody_agent.dataplane import run

    def dump(_signum: int, _frame: Any) -> None:
        tracemalloc.take_snapshot().dump(str(workdir / "agent.tracemalloc"))
        # A QuicConnection is a reference cycle (its frame handler table holds bound methods),
        # so only the cyclic garbage collector frees a closed one: counting before and after
        # gc.collect() shows how many wait for it.
        before = {"connections": count_connections(), **memory_kb(os.getpid())}
        collected = gc.collect()
        after = {"connections": count_connections(), **memory_kb(os.getpid())}
        figures = {"before": before, "after": after, "collected": collected}
        (workdir / "agent.gc.json").write_text(json.dumps(figures))
        (workdir / "agent.tracemalloc.done").write_text("done\n")

    signal.signal(signal.SIGUSR1, dump)
    return run.main(agent_args)


# Report


def mb(kib: int) -> float:
    return kib / 1024


def report(results: dict[str, dict[str, int]], info: dict[str, Any], args) -> None:
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {args.peers} peers, settle {args.settle:.0f} s"
    )
    print("| agent process | VmRSS MB | VmHWM MB | RssAnon MB | RssFile MB |")
    print("| --- | --- | --- | --- | --- |")
    for name, figures in results.items():
        print(
            f"| {name} | {mb(figures['VmRSS']):.1f} | {mb(figures['VmHWM']):.1f} "
            f"| {mb(figures['RssAnon']):.1f} | {mb(figures['RssFile']):.1f} |"
        )
    loaded = results["agent, peers up"]["VmRSS"]
    for baseline in ("agent, no peer up (dialing)", "agent, no --peer entries"):
        per_peer = (loaded - results[baseline]["VmRSS"]) / args.peers
        print(f"per-peer cost against '{baseline}': {per_peer:.1f} KiB")
    print(
        f"agent with peers up: {mb(loaded):.1f} MB = {mb(loaded) / TARGET_MB:.2f} x the "
        f"{TARGET_MB} MB target, {mb(loaded) / GOAL_MB:.2f} x the {GOAL_MB} MB goal"
    )
    print(
        f"all {args.peers} peers up after {info['up_s']:.1f} s; pings answered "
        f"{info['answered']}/{args.peers}; up after settling {info['up_after_settle']}"
    )


def report_snapshot(path: Path, peers: int, top: int) -> None:
    import tracemalloc

    collection = json.loads((path.parent / "agent.gc.json").read_text())
    print()
    for moment in ("before", "after"):
        figures = collection[moment]
        print(
            f"copy of the agent {moment} gc.collect(): {figures['connections']} QuicConnection "
            f"objects, VmRSS {mb(figures['VmRSS']):.1f} MB, "
            f"RssAnon {mb(figures['RssAnon']):.1f} MB"
        )
    print(f"gc.collect() freed {collection['collected']} objects")
    snapshot = tracemalloc.Snapshot.load(str(path))
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    print(f"tracemalloc (before gc.collect()): {mb(total // 1024):.1f} MB traced")
    for key in ("filename", "lineno"):
        print(f"| top by {key} | KiB | KiB / peers | blocks |")
        print("| --- | --- | --- | --- |")
        for stat in snapshot.statistics(key)[:top]:
            frame = stat.traceback[0]
            where = shorten(frame.filename) + (f":{frame.lineno}" if key == "lineno" else "")
            print(
                f"| {where} | {stat.size / 1024:.0f} | {stat.size / 1024 / peers:.1f} "
                f"| {stat.count} |"
            )


def shorten(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--peers", type=int, default=100, help="number of peers (default 100)")
    parser.add_argument(
        "--settle", type=float, default=10, help="seconds to wait before each reading"
    )
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds to wait for every peer to be up"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace a copy of the agent and list allocations",
    )
    parser.add_argument("--top", type=int, default=15, help="rows per tracemalloc table")
    parser.add_argument("--serve-peers", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--agent-pk", help=argparse.SUPPRESS)
    parser.add_argument("--traced-agent", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    args.agent_args = rest[1:] if rest[:1] == ["--"] else rest
    return args


def main() -> int:
    args = parse_args()
    if args.traced_agent is not None:
        return run_traced_agent(args.traced_agent, args.agent_args)
    if args.serve_peers is not None:
        asyncio.run(serve_peers(args.serve_peers, args.peers, args.agent_pk))
        return 0
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("needs root and iproute2", file=sys.stderr)
        return 2
    if not 1 <= args.peers <= MAX_PEERS:
        print(f"invalid --peers {args.peers}: expected 1 to {MAX_PEERS}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="netsody-memory-") as directory:
        workdir = Path(directory)
        workdir.chmod(0o755)
        agent, peers = write_network(workdir, args.peers)
        endpoints = [
            f"{peer.pk}={UNDERLAY['b']}:{FIRST_PEER_PORT + index}"
            for index, peer in enumerate(peers)
        ]
        bench = Bench(workdir, UNDERLAY, prefix="mem")
        try:
            bench.setup()
            results["bare interpreter (aioquic, cryptography)"] = measure_bare(bench)
            for name, entries in (
                ("agent, no --peer entries", []),
                ("agent, no peer up (dialing)", endpoints),
            ):
                process, results[name] = measure_agent(bench, entries, args.settle)
                bench.stop(process)
            start_peers(bench, agent, args.peers)
            results["agent, peers up"], info = measure_with_peers(bench, endpoints, args)
            report(results, info, args)
            if args.tracemalloc:
                _figures, traced = measure_with_peers(bench, endpoints, args, traced=True)
                report_snapshot(traced["snapshot"], args.peers, args.top)
        finally:
            bench.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
