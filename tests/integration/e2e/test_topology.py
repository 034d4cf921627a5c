"""The namespace topology behaves as documented in topology.py: NAT kinds, blocked UDP, the LAN."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from topology import (
    LAN_HOST_ADDRESS,
    SERVICES_ADDRESS,
    SP_ADDRESS,
    SP_SECOND_ADDRESS,
    Topology,
    existing_namespaces,
)

pytestmark = pytest.mark.root

ECHO_PORT = 3478
RECEIVE_TIMEOUT = 1.0


@contextlib.contextmanager
def udp_reflector(topology: Topology, role: str, address: str) -> Iterator[None]:
    """Reply to every UDP datagram with the source address and port it arrived from."""
    sock = topology.socket(role)
    sock.bind((address, ECHO_PORT))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                _, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            sock.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def mapped_address(sock: socket.socket, server: str) -> tuple[str, int] | None:
    """Return the public address a reflector saw for `sock`, or None when no reply arrived."""
    sock.settimeout(RECEIVE_TIMEOUT)
    for _ in range(3):
        sock.sendto(b"probe", (server, ECHO_PORT))
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            continue
        host, port = data.decode().rsplit(":", 1)
        return host, int(port)
    return None


def device_socket(topology: Topology, device: str) -> socket.socket:
    sock = topology.socket(f"dev-{device}")
    sock.bind(("0.0.0.0", 0))
    return sock


def punch(
    first: socket.socket,
    first_public: tuple[str, int],
    second: socket.socket,
    second_public: tuple[str, int],
) -> tuple[bool, bool]:
    """Send from both sockets toward each other's public address at once, as hole punching does.

    Returns whether each side received a datagram from the other.
    """
    received = [False, False]
    for sock in (first, second):
        sock.settimeout(0.1)
    for _ in range(5):
        first.sendto(b"punch", second_public)
        second.sendto(b"punch", first_public)
        for index, sock in enumerate((first, second)):
            with contextlib.suppress(TimeoutError):
                data, _ = sock.recvfrom(2048)
                received[index] = received[index] or data == b"punch"
    return received[0], received[1]


@pytest.fixture(scope="module")
def reflectors(topology: Topology) -> Iterator[None]:
    with (
        udp_reflector(topology, "sp", SP_ADDRESS),
        udp_reflector(topology, "sp", SP_SECOND_ADDRESS),
        udp_reflector(topology, "services", SERVICES_ADDRESS),
    ):
        yield


@pytest.mark.usefixtures("reflectors")
@pytest.mark.parametrize("device", ["a", "b"])
def test_cone_nat_keeps_mapping_per_destination(topology: Topology, device: str) -> None:
    sock = device_socket(topology, device)
    seen = [
        mapped_address(sock, server) for server in (SP_ADDRESS, SERVICES_ADDRESS, SP_SECOND_ADDRESS)
    ]
    sock.close()

    assert None not in seen
    assert set(seen) == {(topology.devices[device].router_public, seen[0][1])}


@pytest.mark.usefixtures("reflectors")
def test_symmetric_nat_changes_mapping_per_destination(topology: Topology) -> None:
    sock = device_socket(topology, "c")
    seen = [
        mapped_address(sock, server) for server in (SP_ADDRESS, SERVICES_ADDRESS, SP_SECOND_ADDRESS)
    ]
    sock.close()

    assert None not in seen
    assert {host for host, _ in seen} == {topology.devices["c"].router_public}
    # --random-fully draws each port at random: three equal draws would take odds of about 1e-9.
    assert len({port for _, port in seen}) > 1


@pytest.mark.usefixtures("reflectors")
def test_hole_punching_between_cone_nats(topology: Topology) -> None:
    sock_a, sock_b = device_socket(topology, "a"), device_socket(topology, "b")
    public_a, public_b = mapped_address(sock_a, SP_ADDRESS), mapped_address(sock_b, SP_ADDRESS)
    assert public_a is not None
    assert public_b is not None

    received_a, received_b = punch(sock_a, public_a, sock_b, public_b)
    sock_a.close()
    sock_b.close()

    assert received_a
    assert received_b


@pytest.mark.usefixtures("reflectors")
def test_hole_punching_fails_toward_symmetric_nat(topology: Topology) -> None:
    sock_a, sock_c = device_socket(topology, "a"), device_socket(topology, "c")
    public_a, public_c = mapped_address(sock_a, SP_ADDRESS), mapped_address(sock_c, SP_ADDRESS)
    assert public_a is not None
    assert public_c is not None

    received_a, received_c = punch(sock_a, public_a, sock_c, public_c)
    sock_a.close()
    sock_c.close()

    assert not received_a
    assert not received_c


@pytest.mark.usefixtures("reflectors")
def test_udp_blocked_router_drops_udp_only(topology: Topology) -> None:
    sock = device_socket(topology, "d")
    assert mapped_address(sock, SP_ADDRESS) is None
    sock.close()

    listener = topology.socket("sp", socket.SOCK_STREAM)
    listener.bind((SP_ADDRESS, 8443))
    listener.listen(1)
    client = topology.socket("dev-d", socket.SOCK_STREAM)
    client.settimeout(5)
    try:
        client.connect((SP_ADDRESS, 8443))
        accepted, (source, _) = listener.accept()
        accepted.close()
    finally:
        client.close()
        listener.close()
    assert source == topology.devices["d"].router_public


@pytest.mark.parametrize("device", ["a", "b", "c", "d"])
def test_devices_reach_super_peer_and_services(topology: Topology, device: str) -> None:
    for address in (SP_ADDRESS, SERVICES_ADDRESS):
        result = topology.run(f"dev-{device}", "ping", "-c", "1", "-W", "2", address, check=False)
        assert result.returncode == 0, result.stdout


def test_lan_host_reachable_from_its_gateway_only(topology: Topology) -> None:
    from_gateway = topology.run(
        "dev-a", "ping", "-c", "1", "-W", "2", LAN_HOST_ADDRESS, check=False
    )
    from_other = topology.run("dev-b", "ping", "-c", "1", "-W", "1", LAN_HOST_ADDRESS, check=False)
    from_internet = topology.run("sp", "ping", "-c", "1", "-W", "1", LAN_HOST_ADDRESS, check=False)

    assert from_gateway.returncode == 0, from_gateway.stdout
    assert from_other.returncode != 0
    assert from_internet.returncode != 0


def test_devices_unreachable_from_internet(topology: Topology) -> None:
    result = topology.run(
        "sp", "ping", "-c", "1", "-W", "1", topology.devices["a"].address, check=False
    )
    assert result.returncode != 0


def test_teardown_removes_namespaces_and_processes() -> None:
    topo = Topology().build()
    process = topo.spawn("dev-a", ["sleep", "600"], name="sleeper")
    unmanaged = topo.run("dev-b", "sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!")
    unmanaged_pid = int(unmanaged.stdout.strip())
    etc_dirs = [Path("/etc/netns") / name for name in topo.namespaces]
    assert topo.pids("dev-b") == [unmanaged_pid]

    topo.teardown()

    assert existing_namespaces(topo.prefix) == []
    assert process.poll() is not None
    assert not Path(f"/proc/{unmanaged_pid}").exists() or _is_zombie(unmanaged_pid)
    assert not any(path.exists() for path in etc_dirs)


def test_teardown_leaves_other_runs_alone(topology: Topology) -> None:
    other = Topology().build()
    other.teardown()

    assert len(existing_namespaces(topology.prefix)) == len(topology.namespaces)


def _is_zombie(pid: int) -> bool:
    # Reaping belongs to the parent (init here), which may not have run yet.
    time.sleep(0.2)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z"
    except (OSError, IndexError):
        return True
