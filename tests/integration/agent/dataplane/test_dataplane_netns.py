"""Two data plane agents in network namespaces: ping, TCP, policy, anti-spoofing and restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import LISTEN_PORT, OVERLAY, UNDERLAY, wait_for

pytestmark = pytest.mark.root

ICMP_ONLY = """
[[policy]]
source_groups = ["ALL"]
destination_groups = ["ALL"]

[[policy.rules]]
protocol = "icmp"
"""

ECHO_PORT = 5000
ECHO_SERVER = f"""
import socket
server = socket.create_server(("0.0.0.0", {ECHO_PORT}))
server.settimeout(30)
print("listening", flush=True)
while True:
    connection, _ = server.accept()
    with connection:
        while data := connection.recv(65536):
            connection.sendall(data)
"""
ECHO_CLIENT = f"""
import os, socket, sys
payload = os.urandom(int(sys.argv[1]))
with socket.create_connection(("{OVERLAY["b"]}", {ECHO_PORT}), timeout=5) as connection:
    connection.sendall(payload)
    connection.shutdown(socket.SHUT_WR)
    received = b""
    while len(received) < len(payload) and (data := connection.recv(65536)):
        received += data
sys.exit(0 if received == payload else 1)
"""
FORGE_PEER = Path(__file__).with_name("forge_peer.py")


@pytest.fixture
def echo_server(pair):
    process = pair.popen("b", sys.executable, "-c", ECHO_SERVER, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "listening"
    yield process
    process.kill()
    process.wait(timeout=10)


def ping(pair, side: str, address: str, count: int = 3) -> subprocess.CompletedProcess:
    return pair.exec(side, "ping", "-c", str(count), "-i", "0.2", "-W", "2", address, check=False)


def echo_roundtrip(pair, size: int = 200_000) -> subprocess.CompletedProcess:
    """Send `size` random bytes from a to b's echo server; exit code 0 when all came back."""
    return pair.exec("a", sys.executable, "-c", ECHO_CLIENT, str(size), check=False, timeout=30)


def test_ping_over_overlay(pair):
    pair.start("a")
    pair.start("b")
    pair.wait_connected("a", "b")

    result = ping(pair, "a", OVERLAY["b"])

    assert result.returncode == 0, result.stdout
    assert pair.agents["a"].peer()["path"] == "direct"
    assert pair.agents["b"].peer()["path"] == "direct"


def test_tcp_echo_over_overlay(pair, echo_server):
    pair.start("a")
    pair.start("b")
    pair.wait_connected("a", "b")

    result = echo_roundtrip(pair, 4_000_000)

    # 4 MB both ways, compared byte for byte: TCP segmentation offload on the sender and
    # coalescing on the receiver cut and join thousands of segments on the way.
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: pair.agents["a"].peer().get("bytes_out", 0) >= 4_000_000,
        "status to count the echoed bytes",
        pair,
    )
    assert pair.agents["a"].status()["tun_offload"] is True


def test_policy_deny_then_allow_on_reload(pair, echo_server):
    pair.write_network(ICMP_ONLY)
    pair.start("a")
    pair.start("b")
    pair.wait_connected("a", "b")
    handshake = pair.agents["a"].peer()["last_handshake"]

    denied = echo_roundtrip(pair)
    pinged = ping(pair, "a", OVERLAY["b"])

    assert denied.returncode != 0
    assert pinged.returncode == 0, pinged.stdout
    assert pair.agents["a"].status()["drops"].get("egress-policy", 0) > 0

    pair.write_network()
    pair.reload("a")
    pair.reload("b")
    wait_for(lambda: echo_roundtrip(pair).returncode == 0, "TCP allowed after reload", pair)

    assert pair.agents["a"].peer()["last_handshake"] == handshake


def test_forged_source_dropped(pair):
    # Only agent b runs; the forging program authenticates as a and forges its source address.
    agent = pair.start("b")
    wait_for(lambda: agent.status().get("listen_port") == LISTEN_PORT, "agent b started", pair)

    result = pair.exec(
        "a",
        sys.executable,
        str(FORGE_PEER),
        str(pair.workdir / "a.key"),
        pair.identities["b"].pk,
        UNDERLAY["b"],
        str(LISTEN_PORT),
        "10.9.0.77",
        OVERLAY["b"],
        "5",
        check=False,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: agent.peer().get("drops", {}).get("spoofed-source", 0) == 5,
        "five packets counted as spoofed",
        pair,
    )
    assert agent.peer()["packets_in"] == 0


def test_peers_reconnect_after_restart(pair):
    pair.start("a")
    pair.start("b")
    pair.wait_connected("a", "b")
    assert ping(pair, "a", OVERLAY["b"]).returncode == 0

    for side in ("b", "a"):
        pair.stop(side)
        pair.start(side)
        pair.wait_connected("a", "b")
        wait_for(
            lambda: ping(pair, "a", OVERLAY["b"], count=1).returncode == 0,
            f"ping after restarting {side}",
            pair,
        )


def block_direct(pair, *, blocked: bool) -> None:
    """Drop UDP between the two agents' sockets in namespace b, or remove that rule again."""
    action = "-A" if blocked else "-D"
    a = UNDERLAY["a"]
    pair.exec(
        "b",
        "iptables",
        action,
        "OUTPUT",
        "-p",
        "udp",
        "-d",
        a,
        "--dport",
        str(LISTEN_PORT),
        "-j",
        "DROP",
    )
    pair.exec(
        "b",
        "iptables",
        action,
        "INPUT",
        "-p",
        "udp",
        "-s",
        a,
        "--sport",
        str(LISTEN_PORT),
        "-j",
        "DROP",
    )


def test_super_peer_discovery_gives_direct_path(pair, superpeer):
    pair.start("a", super_peer=superpeer)
    pair.start("b", super_peer=superpeer)
    pair.wait_connected("a", "b")

    result = ping(pair, "a", OVERLAY["b"])

    assert result.returncode == 0, result.stdout
    assert pair.agents["a"].peer()["path"] == "direct"
    assert pair.agents["a"].status()["super_peers"][0]["connected"]


def test_relay_when_direct_blocked_then_upgrade(pair, superpeer, echo_server):
    block_direct(pair, blocked=True)
    pair.start("a", super_peer=superpeer)
    pair.start("b", super_peer=superpeer)
    pair.wait_connected("a", "b")
    handshake = pair.agents["a"].peer()["last_handshake"]

    pinged = ping(pair, "a", OVERLAY["b"])
    echoed = echo_roundtrip(pair)

    assert pinged.returncode == 0, pinged.stdout
    assert echoed.returncode == 0, echoed.stderr
    assert pair.agents["a"].peer()["path"] == "relay-h3"
    assert pair.agents["b"].peer()["path"] == "relay-h3"

    block_direct(pair, blocked=False)
    wait_for(
        lambda: all(pair.agents[side].peer()["path"] == "direct" for side in ("a", "b")),
        "both agents to move to the direct path",
        pair,
    )

    assert pair.agents["a"].peer()["last_handshake"] == handshake
    assert ping(pair, "a", OVERLAY["b"]).returncode == 0


def test_http2_relay_when_udp_blocked(pair, superpeer):
    # Namespace b reaches namespace a only over TCP: no HTTP/3 to the super peer, no direct UDP.
    a = UNDERLAY["a"]
    pair.exec("b", "iptables", "-A", "OUTPUT", "-p", "udp", "-d", a, "-j", "DROP")
    pair.exec("b", "iptables", "-A", "INPUT", "-p", "udp", "-s", a, "-j", "DROP")
    pair.start("a", super_peer=superpeer)
    pair.start("b", super_peer=superpeer)
    pair.wait_connected("a", "b")

    result = ping(pair, "a", OVERLAY["b"])

    assert result.returncode == 0, result.stdout
    assert pair.agents["b"].peer()["path"] == "relay-h2"
    assert pair.agents["b"].status()["super_peers"][0]["transport"] == "h2"


NO_POLICY = ""


def test_unpermitted_dialer_rejected(pair):
    # No policy relates a and b, so b rejects a's authenticated connection attempt.
    pair.write_network(NO_POLICY)
    agent = pair.start("b")
    wait_for(lambda: agent.status().get("listen_port") == LISTEN_PORT, "agent b started", pair)

    result = pair.exec(
        "a",
        sys.executable,
        str(FORGE_PEER),
        str(pair.workdir / "a.key"),
        pair.identities["b"].pk,
        UNDERLAY["b"],
        str(LISTEN_PORT),
        OVERLAY["a"],
        OVERLAY["b"],
        "1",
        check=False,
        timeout=30,
    )

    assert result.returncode == 3, result.stderr
    assert agent.status()["peers"] == []
    assert "is not permitted by any policy" in agent.log_path.read_text()


def test_removed_peer_disconnected_on_reload(pair):
    pair.start("a")
    pair.start("b")
    pair.wait_connected("a", "b")

    pair.write_network(NO_POLICY)
    pair.reload("a")
    pair.reload("b")

    wait_for(
        lambda: all(pair.agents[side].status().get("peers") == [] for side in ("a", "b")),
        "both agents to drop the peer",
        pair,
    )
    assert "no policy permits this peer any more" in pair.agents["a"].log_path.read_text()
    assert ping(pair, "a", OVERLAY["b"], count=1).returncode != 0


def wait_ping(pair, what: str, timeout: float = 90.0) -> None:
    wait_for(
        lambda: ping(pair, "a", OVERLAY["b"], count=1).returncode == 0,
        what,
        pair,
        timeout=timeout,
    )


def test_relayed_pair_recovers_after_super_peer_restart(pair, superpeer):
    block_direct(pair, blocked=True)
    pair.start("a", super_peer=superpeer)
    pair.start("b", super_peer=superpeer)
    pair.wait_connected("a", "b")
    assert ping(pair, "a", OVERLAY["b"]).returncode == 0
    assert pair.agents["b"].peer()["path"] == "relay-h3"

    superpeer.restart()

    wait_ping(pair, "ping over a new relay path after the super peer restarted")
    # Traffic from a's new relay port may arrive before the candidates that name it, so the
    # path label settles on relay-h3 once b has heard them.
    wait_for(
        lambda: pair.agents["b"].peer()["path"] == "relay-h3", "b's path labelled relay-h3", pair
    )
    assert pair.agents["b"].status()["super_peers"][0]["connected"]


@pytest.mark.parametrize("side", ["a", "b"])
def test_peer_reconnects_after_agent_killed(pair, superpeer, side):
    pair.start("a", super_peer=superpeer)
    pair.start("b", super_peer=superpeer)
    pair.wait_connected("a", "b")
    assert ping(pair, "a", OVERLAY["b"]).returncode == 0

    pair.stop(side, kill=True)
    pair.start(side, super_peer=superpeer)

    wait_ping(pair, f"ping after agent {side} was killed and restarted")
