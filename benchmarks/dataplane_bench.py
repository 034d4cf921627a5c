"""Benchmark of the agent's direct path against the raw veth, wireguard-go and nebula.

Run as root: `hatch run python benchmarks/dataplane_bench.py [--runs 3 --seconds 5]`.

Two network namespaces are joined by a 1500-MTU veth pair (192.168.78.1 and .2, inside the
namespaces only). For each system the script measures, in the same run:

- TCP throughput with iperf3, one stream, from namespace a to namespace b;
- ping RTT (median of 20 echo requests 50 ms apart);
- the CPU efficiency of the tunnel processes: data transferred per CPU-second of the busiest
  one, which stays comparable when other work on the machine competes for the CPUs;
- for Netsody, the time from starting both agents (identities present) to the first answered
  ping over the overlay.

Each figure is the median over `--runs` runs. wireguard-go and nebula are measured when their
binaries are installed (Debian packages `wireguard-go`, `wireguard-tools`, `nebula`) and
skipped with a note otherwise. Every namespace and process the script creates is removed on
exit, by name and by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from netns import Bench

from netsody_common.identity import Identity

UNDERLAY = {"a": "192.168.78.1", "b": "192.168.78.2"}
PORT = 7100
DIFFICULTY = 8


def iperf_gbits(bench: Bench, address: str, seconds: int) -> float:
    server = bench.popen("b", "iperf3", "-s", "-1", "-B", address)
    try:
        deadline = time.monotonic() + 5
        while True:
            output = bench.run(
                "a",
                "iperf3",
                "-c",
                address,
                "-t",
                str(seconds),
                "-J",
                check=False,
                timeout=seconds + 30,
            )
            report = json.loads(output) if output.strip() else {"error": "no output"}
            # The server may not listen yet: retry until the deadline.
            if "error" not in report or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if "error" in report:
            raise RuntimeError(f"iperf3 to {address} failed: {report['error']}")
        return report["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)


def ping_rtt_ms(bench: Bench, address: str) -> float:
    output = bench.run("a", "ping", "-c", "20", "-i", "0.05", "-W", "2", address, check=False)
    times = [float(value) for value in re.findall(r"time=([0-9.]+) ms", output)]
    return statistics.median(times) if times else float("nan")


def wait_ping(bench: Bench, address: str, timeout: float = 30) -> float:
    """Ping once every 20 ms until an answer arrives; return when it did (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["ip", "netns", "exec", bench.namespaces["a"], "ping", "-c", "1", "-W", "0.2", address],
            capture_output=True,
            check=False,
        )
        if result.returncode == 0:
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"no ping answer from {address} within {timeout} s")


def cpu_seconds(pids: list[int]) -> list[float]:
    """Return the user plus system CPU time of each process, from /proc/PID/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    result = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        result.append((int(fields[11]) + int(fields[12])) / ticks)
    return result


def measure(bench: Bench, address: str, args: argparse.Namespace) -> dict[str, float]:
    """Measure median throughput and RTT, and the CPU efficiency of the tunnel processes.

    `gbit_per_cpu_s` is the data transferred divided by the CPU time of the busiest tunnel
    process: the throughput one fully available core would reach. It stays comparable when
    other work on the machine takes CPU time from the benchmark.
    """
    pids = [process.pid for process in bench.processes if process.poll() is None]
    throughput = []
    efficiency = []
    for _ in range(args.runs):
        before = cpu_seconds(pids)
        gbits = iperf_gbits(bench, address, args.seconds)
        after = cpu_seconds(pids)
        throughput.append(gbits)
        used = [end - start for start, end in zip(before, after, strict=True)]
        if used and max(used) > 0:
            efficiency.append(gbits * args.seconds / max(used))
    rtt = [ping_rtt_ms(bench, address) for _ in range(args.runs)]
    return {
        "gbits": statistics.median(throughput),
        "rtt_ms": statistics.median(rtt),
        "gbit_per_cpu_s": statistics.median(efficiency) if efficiency else float("nan"),
    }


# Systems


def netsody_start(bench: Bench) -> float:
    """Start both agents and return the seconds until the first ping answer."""
    identities = {side: Identity.generate(DIFFICULTY, progress=False) for side in ("a", "b")}
    nodes = ""
    for index, side in enumerate(("a", "b"), start=1):
        identities[side].save(bench.workdir / f"{side}.key")
        nodes += (
            f'\n[[node]]\nhostname = "bench-{side}"\nip = "10.40.0.{index}"\n'
            f'pk = "{identities[side].pk}"\n'
        )
    network = bench.workdir / "network.toml"
    network.write_text(
        f'name = "bench"\nnetwork = "10.40.0.0/24"\n{nodes}\n[[policy]]\n'
        'source_groups = ["ALL"]\ndestination_groups = ["ALL"]\n'
    )
    env = {**os.environ, "NETSODY_POW_DIFFICULTY": str(DIFFICULTY)}
    started = time.monotonic()
    for side, other in (("a", "b"), ("b", "a")):
        bench.popen(
            side,
            sys.executable,
            "-m",
            "netsody_agent.dataplane.run",
            "--network",
            str(network),
            "--identity",
            str(bench.workdir / f"{side}.key"),
            "--listen-port",
            str(PORT),
            # The MTU of wireguard-go's interface; it fits the fast path's direct payload.
            "--mtu",
            "1420",
            "--log-level",
            "WARNING",
            "--peer",
            f"{identities[other].pk}={UNDERLAY[other]}:{PORT}",
            env=env,
        )
    return wait_ping(bench, "10.40.0.2") - started


def wireguard_start(bench: Bench) -> None:
    keys = {}
    for side in ("a", "b"):
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True)
        public = subprocess.run(
            ["wg", "pubkey"], input=private.stdout, capture_output=True, text=True, check=True
        )
        key_path = bench.workdir / f"wg-{side}.key"
        key_path.write_text(private.stdout)
        key_path.chmod(0o600)
        keys[side] = (key_path, public.stdout.strip())
    for index, (side, other) in enumerate((("a", "b"), ("b", "a")), start=1):
        # The UAPI socket lives in /var/run/wireguard on the shared file system, so each
        # namespace needs its own interface name.
        device = f"wgbench{side}"
        bench.popen(side, "wireguard-go", "-f", device)
        deadline = time.monotonic() + 10
        while device not in bench.run(side, "ip", "link", check=False):
            if time.monotonic() > deadline:
                raise TimeoutError("wireguard-go did not create its interface")
            time.sleep(0.1)
        bench.run(
            side,
            "wg",
            "set",
            device,
            "private-key",
            str(keys[side][0]),
            "listen-port",
            str(PORT + 1),
            "peer",
            keys[other][1],
            "allowed-ips",
            "10.41.0.0/24",
            "endpoint",
            f"{UNDERLAY[other]}:{PORT + 1}",
        )
        bench.run(side, "ip", "addr", "add", f"10.41.0.{index}/24", "dev", device)
        bench.run(side, "ip", "link", "set", device, "mtu", "1420", "up")
    wait_ping(bench, "10.41.0.2")


NEBULA_CONFIG = """
pki:
  ca: {workdir}/ca.crt
  cert: {workdir}/{side}.crt
  key: {workdir}/{side}.key.nebula
static_host_map:
  "{other_ip}": ["{other_underlay}:{port}"]
lighthouse:
  am_lighthouse: false
  hosts: []
listen:
  host: 0.0.0.0
  port: {port}
punchy:
  punch: false
tun:
  dev: nebench
  mtu: 1300
logging:
  level: warning
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
"""


def nebula_start(bench: Bench) -> None:
    workdir = bench.workdir
    subprocess.run(
        [
            "nebula-cert",
            "ca",
            "-name",
            "bench",
            "-out-crt",
            f"{workdir}/ca.crt",
            "-out-key",
            f"{workdir}/ca.key",
        ],
        check=True,
        capture_output=True,
    )
    for index, side in enumerate(("a", "b"), start=1):
        subprocess.run(
            [
                "nebula-cert",
                "sign",
                "-name",
                side,
                "-ip",
                f"10.42.0.{index}/24",
                "-ca-crt",
                f"{workdir}/ca.crt",
                "-ca-key",
                f"{workdir}/ca.key",
                "-out-crt",
                f"{workdir}/{side}.crt",
                "-out-key",
                f"{workdir}/{side}.key.nebula",
            ],
            check=True,
            capture_output=True,
        )
    for side, other, other_index in (("a", "b", 2), ("b", "a", 1)):
        config = workdir / f"nebula-{side}.yml"
        config.write_text(
            NEBULA_CONFIG.format(
                workdir=workdir,
                side=side,
                other_ip=f"10.42.0.{other_index}",
                other_underlay=UNDERLAY[other],
                port=PORT + 2,
            )
        )
        bench.popen(side, "nebula", "-config", str(config))
    wait_ping(bench, "10.42.0.2")


@contextmanager
def system(bench: Bench, name: str, start: Callable[[Bench], object]) -> Iterator[object]:
    try:
        yield start(bench)
    finally:
        bench.stop_processes()
        time.sleep(0.5)
        print(f"  ({name} stopped)", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per run")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("iperf3") is None:
        print("needs root, iproute2 and iperf3", file=sys.stderr)
        return 2
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    results: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="netsody-bench-") as directory:
        bench = Bench(Path(directory), UNDERLAY, prefix="bench")
        try:
            bench.setup()
            results["veth (no tunnel)"] = measure(bench, UNDERLAY["b"], args)
            with system(bench, "netsody", netsody_start) as start_seconds:
                results["netsody direct"] = measure(bench, "10.40.0.2", args)
                results["netsody direct"]["start_s"] = float(start_seconds)
            if shutil.which("wireguard-go") and shutil.which("wg"):
                with system(bench, "wireguard-go", wireguard_start):
                    results["wireguard-go"] = measure(bench, "10.41.0.2", args)
            else:
                notes.append("wireguard-go not installed: apt-get install wireguard-go")
            if shutil.which("nebula") and shutil.which("nebula-cert"):
                with system(bench, "nebula", nebula_start):
                    results["nebula"] = measure(bench, "10.42.0.2", args)
            else:
                notes.append("nebula not installed: apt-get install nebula")
        finally:
            bench.teardown()
    report(results, notes, args)
    return 0


def report(results: dict[str, dict[str, float]], notes: list[str], args) -> None:
    veth = results["veth (no tunnel)"]
    ours = results["netsody direct"]
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {args.runs} runs x {args.seconds} s (medians)"
    )
    print(f"# load average before: {args.load_before}, after: {os.getloadavg()[0]:.2f}")
    print(
        "| path | TCP Gbit/s | netsody / this | Gbit per CPU-second | ping RTT ms | RTT added ms |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, figures in results.items():
        added = figures["rtt_ms"] - veth["rtt_ms"]
        ratio = ours["gbits"] / figures["gbits"] if figures["gbits"] else float("nan")
        print(
            f"| {name} | {figures['gbits']:.3f} | {ratio:.2f} | {figures['gbit_per_cpu_s']:.3f} "
            f"| {figures['rtt_ms']:.3f} | {added:.3f} |"
        )
    print(f"\nnetsody agent start (identities present) to first ping: {ours['start_s']:.2f} s")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
