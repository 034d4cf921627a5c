"""End-to-end benchmark on the namespace topology of tests/integration/e2e (run as root).

    hatch run python benchmarks/e2e_bench.py [--seconds 5] [--json FILE] [--skip-netsody]

It measures TCP throughput with iperf3 (1 and 4 streams) and ping RTT between dev-a and dev-b,
both behind endpoint-independent NAT. The paths are the raw routed one (a port forward on
router-b), wireguard-go and nebula (Debian packages, when installed) and Netsody's direct path.
From dev-c and dev-d to dev-a it measures Netsody relayed over HTTP/3 and HTTP/2. It also
times `netsody run` to the first ping and a policy change in the API to enforcement. Every
figure is printed beside the raw path of the same run. A figure that cannot be measured is
printed as skipped with the reason. It is a measurement, never a pass/fail check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "e2e"))

from topology import Topology, TopologyError

IPERF_PORT = 5201
WG_PORT = 51820
NEBULA_PORT = 4242


@dataclass
class Row:
    """One measured path: throughput in Gbit/s, RTT in milliseconds, or why it was skipped."""

    path: str
    tcp_1: float | None = None
    tcp_4: float | None = None
    rtt_ms: float | None = None
    skipped: str = ""


# Measurements


def iperf(
    topo: Topology, server: str, client: str, address: str, *, streams: int, seconds: int
) -> float:
    """Return the received TCP throughput in Gbit/s from `client` to `server` over `address`."""
    process = topo.spawn(
        server, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], name=f"iperf3-{server}"
    )
    try:
        time.sleep(0.5)
        result = topo.run(
            client,
            *("iperf3", "-c", address, "-p", str(IPERF_PORT), "-P", str(streams)),
            *("-t", str(seconds), "-J"),
            timeout=seconds + 30,
        )
    finally:
        topo.stop(process)
    return json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def ping_rtt(topo: Topology, client: str, address: str, count: int = 20) -> float:
    """Return the average ping RTT in milliseconds."""
    result = topo.run(
        client, "ping", "-q", "-c", str(count), "-i", "0.05", address, timeout=count + 10
    )
    # rtt min/avg/max/mdev = 0.041/0.052/0.090/0.010 ms
    return float(result.stdout.strip().splitlines()[-1].split("=")[1].split("/")[1])


def measure(topo: Topology, name: str, server: str, client: str, address: str, seconds: int) -> Row:
    return Row(
        name,
        tcp_1=iperf(topo, server, client, address, streams=1, seconds=seconds),
        tcp_4=iperf(topo, server, client, address, streams=4, seconds=seconds),
        rtt_ms=ping_rtt(topo, client, address),
    )


# Raw path and reference tunnels


def raw_path(topo: Topology, seconds: int) -> Row:
    topo.forward_port("b", "tcp", IPERF_PORT)
    # Echo requests to router-b's public address go on to dev-b, so ping measures the same path.
    topo.run(
        "router-b",
        *("iptables", "-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "icmp"),
        *("-j", "DNAT", "--to-destination", topo.devices["b"].address),
    )
    return measure(
        topo,
        "raw routed (NAT port forward)",
        "dev-b",
        "dev-a",
        topo.devices["b"].router_public,
        seconds,
    )


def wireguard(topo: Topology, seconds: int) -> Row:
    if shutil.which("wireguard-go") is None or shutil.which("wg") is None:
        return Row(
            "wireguard-go",
            skipped="wireguard-go or wg not installed (Debian: wireguard-go, wireguard-tools)",
        )
    topo.forward_port("b", "udp", WG_PORT)
    keys = {}
    for side in ("a", "b"):
        private = subprocess.run(
            ["wg", "genkey"], capture_output=True, text=True, check=True
        ).stdout.strip()
        public = subprocess.run(
            ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True
        ).stdout.strip()
        keys[side] = (private, public)
    workdir = Path(tempfile.mkdtemp(prefix="wg-", dir=topo.workdir))
    # wireguard-go's control socket /var/run/wireguard/<name>.sock is shared by all namespaces,
    # so each interface gets a name unique to this run and side.
    names = {side: f"wg{os.getpid() % 100000}{side}" for side in ("a", "b")}
    for side, address, peer, endpoint in (
        ("a", "10.250.0.1", "b", f"{topo.devices['b'].router_public}:{WG_PORT}"),
        ("b", "10.250.0.2", "a", None),
    ):
        role = f"dev-{side}"
        key_file = workdir / f"{side}.key"
        key_file.write_text(keys[side][0])
        key_file.chmod(0o600)
        topo.run(role, "wireguard-go", names[side])
        peer_allowed = "10.250.0.2/32" if side == "a" else "10.250.0.1/32"
        argv = ["wg", "set", names[side], "private-key", str(key_file)]
        argv += ["listen-port", str(WG_PORT)] if side == "b" else []
        argv += ["peer", keys[peer][1], "allowed-ips", peer_allowed]
        argv += ["endpoint", endpoint, "persistent-keepalive", "1"] if endpoint else []
        topo.run(role, *argv)
        topo.run(role, "ip", "addr", "add", f"{address}/24", "dev", names[side])
        topo.run(role, "ip", "link", "set", names[side], "mtu", "1420", "up")
    topo.run("dev-a", "ping", "-c", "3", "-W", "2", "10.250.0.2", check=False)
    try:
        return measure(topo, "wireguard-go", "dev-b", "dev-a", "10.250.0.2", seconds)
    finally:
        for side in ("a", "b"):
            topo.run(f"dev-{side}", "ip", "link", "del", names[side], check=False)


def nebula(topo: Topology, seconds: int) -> Row:
    if shutil.which("nebula") is None or shutil.which("nebula-cert") is None:
        return Row("nebula", skipped="nebula not installed (Debian package nebula)")
    topo.forward_port("b", "udp", NEBULA_PORT)
    workdir = Path(tempfile.mkdtemp(prefix="nebula-", dir=topo.workdir))
    subprocess.run(
        [
            "nebula-cert",
            "ca",
            "-name",
            "bench",
            "-out-crt",
            workdir / "ca.crt",
            "-out-key",
            workdir / "ca.key",
        ],
        check=True,
    )
    addresses = {"a": "10.251.0.1", "b": "10.251.0.2"}
    processes = []
    for side, address in addresses.items():
        subprocess.run(
            ["nebula-cert", "sign", "-ca-crt", workdir / "ca.crt", "-ca-key", workdir / "ca.key",
             "-name", side, "-ip", f"{address}/24",
             "-out-crt", workdir / f"{side}.crt", "-out-key", workdir / f"{side}.key"],
            check=True,
        )  # fmt: skip
        config = {
            "pki": {"ca": str(workdir / "ca.crt"), "cert": str(workdir / f"{side}.crt"),
                    "key": str(workdir / f"{side}.key")},
            "static_host_map": {
                addresses["b"]: [f"{topo.devices['b'].router_public}:{NEBULA_PORT}"]
            },
            "lighthouse": {"am_lighthouse": side == "b",
                           "hosts": [] if side == "b" else [addresses["b"]]},
            "listen": {"host": "0.0.0.0", "port": NEBULA_PORT if side == "b" else 0},
            "punchy": {"punch": True},
            "tun": {"dev": "nebula1", "mtu": 1300},
            "firewall": {"outbound": [{"port": "any", "proto": "any", "host": "any"}],
                         "inbound": [{"port": "any", "proto": "any", "host": "any"}]},
            "logging": {"level": "warning"},
        }  # fmt: skip
        (workdir / f"{side}.yml").write_text(json.dumps(config))
        processes.append(
            topo.spawn(
                f"dev-{side}",
                ["nebula", "-config", str(workdir / f"{side}.yml")],
                name=f"nebula-{side}",
            )
        )
    try:
        time.sleep(2)
        topo.run("dev-a", "ping", "-c", "3", "-W", "2", addresses["b"], check=False)
        return measure(topo, "nebula", "dev-b", "dev-a", addresses["b"], seconds)
    finally:
        for process in processes:
            topo.stop(process)


# Netsody


def netsody_rows(topo: Topology, seconds: int) -> list[Row]:
    """Measure Netsody's three path kinds and timings; a skipped row carries the reason."""
    from harness import (
        ADMIN_EMAIL,
        Admin,
        Agent,
        HarnessError,
        Services,
        sign_in_with_pkce,
        wait_for,
    )

    services = Services(topo)
    try:
        services.start_controller()
        services.start_superpeer()
        agents = {name: Agent(topo, name) for name in "abcd"}
        for agent in agents.values():
            agent.start()
            agent.pk = agent.status()["identity"]
            agent.login(services, ADMIN_EMAIL)
        admin = Admin(services, sign_in_with_pkce(services, ADMIN_EMAIL))
        network = admin.call(
            "POST", "/networks", {"name": "bench", "subnet": "10.200.0.0/24"}, expect=201
        )
        base = f"/networks/{network['id']}"
        devices = {device["pk"]: device for device in admin.call("GET", "/devices", expect=200)}
        for name, agent in agents.items():
            agent.node = admin.call(
                "POST",
                f"{base}/nodes",
                {"device_id": devices[agent.pk]["id"], "hostname": f"dev-{name}"},
                expect=201,
            )
        start = time.monotonic()
        wait_for(
            lambda: agents["a"].ping(agents["b"].node["ip"], wait=1),
            "first ping a to b",
            timeout=60,
        )
        first_ping = time.monotonic() - start
    except HarnessError as error:
        reason = f"Netsody not measurable yet: {str(error).splitlines()[0]}"
        print(f"time from netsody run to the first ping: skipped ({reason})")
        print(f"time from a policy change in the API to enforcement: skipped ({reason})")
        return [
            Row(name, skipped=reason)
            for name in ("netsody direct", "netsody relay-h3", "netsody relay-h2")
        ]
    print(f"time from adding the nodes to the first ping a->b: {first_ping:.2f} s")
    paths = [
        ("netsody direct", "dev-b", "dev-a", agents["b"].node["ip"]),
        ("netsody relay-h3", "dev-a", "dev-c", agents["a"].node["ip"]),
        ("netsody relay-h2", "dev-a", "dev-d", agents["a"].node["ip"]),
    ]
    rows = [
        guarded(name, measure, topo, name, server, client, address, seconds)
        for name, server, client, address in paths
    ]
    try:
        print_timings(agents, admin, base)
    except HarnessError as error:
        print(f"timings stopped: {str(error).splitlines()[0]}")
    return rows


def print_timings(agents: dict[str, Any], admin: Any, base: str) -> None:
    """Time an agent restart to its first ping, then a policy deletion to enforcement."""
    from harness import wait_for

    # The design's "agent start to first ping": restart b with its identity and state present.
    agents["b"].stop()
    start = time.monotonic()
    agents["b"].start()
    wait_for(
        lambda: agents["a"].ping(agents["b"].node["ip"], wait=1), "ping after restart", timeout=60
    )
    restarted = time.monotonic() - start
    print(f"time from netsody run (identity present) to the first ping: {restarted:.2f} s")
    policies = admin.call("GET", f"{base}/policies", expect=200)
    for policy in policies:
        admin.call("DELETE", f"{base}/policies/{policy['id']}", expect=204)
    enforced = wait_for(
        lambda: not agents["a"].ping(agents["b"].node["ip"], wait=1), "policy enforced", timeout=60
    )
    print(
        f"time from deleting the policy in the API to blocked traffic: {enforced:.2f} s "
        "(ping granularity 1 s)"
    )


def guarded(name: str, run: Callable[..., Row], *args: Any) -> Row:
    """Run one measurement; a failure becomes a skipped row with the error."""
    try:
        return run(*args)
    except (TopologyError, subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
        return Row(name, skipped=f"failed: {str(error).splitlines()[0]}")


# Output


def print_table(rows: list[Row]) -> None:
    raw = rows[0]
    print(
        f"{'path':34} {'TCP 1 stream':>14} {'TCP 4 streams':>14} {'ping RTT':>10} "
        f"{'1 stream / raw':>15}"
    )
    for row in rows:
        if row.skipped:
            print(f"{row.path:34} skipped: {row.skipped}")
            continue
        ratio = f"{row.tcp_1 / raw.tcp_1:.3f}" if raw.tcp_1 and row.tcp_1 is not None else "-"
        print(
            f"{row.path:34} {row.tcp_1:>9.3f} Gb/s {row.tcp_4:>9.3f} Gb/s "
            f"{row.rtt_ms:>7.3f} ms {ratio:>15}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=int,
        default=5,
        help="iperf3 duration per measurement in seconds (default 5)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument(
        "--skip-netsody",
        action="store_true",
        help="measure only the raw path and the reference tunnels",
    )
    args = parser.parse_args(argv)

    topo = Topology().build()
    try:
        rows = [
            raw_path(topo, args.seconds),
            guarded("wireguard-go", wireguard, topo, args.seconds),
            guarded("nebula", nebula, topo, args.seconds),
        ]
        if not args.skip_netsody:
            rows += netsody_rows(topo, args.seconds)
    finally:
        topo.teardown()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
