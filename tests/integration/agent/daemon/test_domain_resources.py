"""A domain resource reached by name through its gateway, with three daemons in namespaces.

`client` may use `*.example.internal` through `gateway`; `other` may only send DNS queries to
the gateway node. A fourth namespace behind the gateway (`lan`) runs a tiny DNS server and an
HTTP server on 172.31.250.2. The gateway's system resolver is that DNS server: `ip netns exec`
mounts /etc/netns/<namespace>/resolv.conf over /etc/resolv.conf, and the test writes that file
and removes it again. All addresses exist only inside the test's namespaces.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import AgentNamespace, new_agent, remove_agent, run, wait_for

pytestmark = pytest.mark.root

PORT = "7000"
LAN_ADDRESS = "172.31.250.2"
GATEWAY_LAN_ADDRESS = "172.31.250.1"
# Underlay veth pairs: client and other each reach the gateway over a /30 of their own.
CLIENT_LINK = ("192.168.89.1", "192.168.89.2")
OTHER_LINK = ("192.168.89.5", "192.168.89.6")
RESPONDER = Path(__file__).with_name("dns_responder.py")

DOCUMENT = """
name = "domains"
network = "10.56.0.0/24"

[[node]]
hostname = "client"
ip = "10.56.0.1"
pk = "{client}"

[[node]]
hostname = "gateway"
ip = "10.56.0.2"
pk = "{gateway}"

[[node]]
hostname = "other"
ip = "10.56.0.3"
pk = "{other}"

[[resource]]
dest = "*.example.internal"
gw = "{gateway}"

[[policy]]
source_groups = ["node::client"]
destination_groups = ["resource::*.example.internal"]
[[policy.rules]]
protocol = "tcp"
ports = [8080]
[[policy.rules]]
protocol = "icmp"

[[policy]]
source_groups = ["node::other"]
destination_groups = ["node::gateway"]
[[policy.rules]]
protocol = "udp"
ports = [53]
"""

DNS_QUERY = """
import json, socket, sys
from netsody_agent.dns import build_query, parse_a_answers
server, names = sys.argv[1], sys.argv[2:]
answers = {}
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(10)
    for number, name in enumerate(names):
        sock.sendto(build_query(name, query_id=number), (server, 53))
        try:
            rcode, addresses = parse_a_answers(sock.recv(1024))
        except TimeoutError:
            answers[name] = "timeout"
            continue
        answers[name] = [rcode, [str(a) for a in addresses]]
print(json.dumps(answers))
"""

HTTP_GET = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).status)
"""


@dataclass
class Lab:
    client: AgentNamespace
    gateway: AgentNamespace
    other: AgentNamespace
    lan: str


def _veth(first: AgentNamespace | str, second: AgentNamespace | str, addresses) -> None:
    names = [f"nsd-{secrets.token_hex(3)}", f"nsd-{secrets.token_hex(3)}"]
    namespaces = [ns if isinstance(ns, str) else ns.namespace for ns in (first, second)]
    run("ip", "link", "add", names[0], "netns", namespaces[0], "type", "veth",
        "peer", "name", names[1], "netns", namespaces[1])  # fmt: skip
    for namespace, device, address in zip(namespaces, names, addresses, strict=True):
        run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{address}/30", "dev", device)
        run("ip", "netns", "exec", namespace, "ip", "link", "set", device, "up")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    agents: list[AgentNamespace] = []
    lan = f"nsd-lan-{secrets.token_hex(3)}"
    resolv_dir: Path | None = None
    processes: list[subprocess.Popen] = []
    try:
        agents = [new_agent(tmp_path / name) for name in ("client", "gateway", "other")]
        client, gateway, other = agents
        run("ip", "netns", "add", lan)
        run("ip", "netns", "exec", lan, "ip", "link", "set", "lo", "up")
        _veth(client, gateway, CLIENT_LINK)
        _veth(other, gateway, OTHER_LINK)
        _veth(gateway, lan, (GATEWAY_LAN_ADDRESS, LAN_ADDRESS))
        resolv_dir = Path("/etc/netns") / gateway.namespace
        resolv_dir.mkdir(parents=True)
        (resolv_dir / "resolv.conf").write_text(f"nameserver {LAN_ADDRESS}\n")
        processes.append(_start_in(lan, tmp_path / "dns.log", sys.executable, str(RESPONDER),
                                   LAN_ADDRESS, "53", f"app.example.internal={LAN_ADDRESS}",
                                   "alias.example.internal=>app.example.internal"))  # fmt: skip
        processes.append(_start_in(lan, tmp_path / "http.log", sys.executable, "-m",
                                   "http.server", "8080", "--bind", LAN_ADDRESS,
                                   "--directory", str(tmp_path)))  # fmt: skip
        yield Lab(client, gateway, other, lan)
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)
        for agent in agents:
            remove_agent(agent)
        run("ip", "netns", "delete", lan, check=False)
        if resolv_dir is not None:
            (resolv_dir / "resolv.conf").unlink(missing_ok=True)
            resolv_dir.rmdir()


def _start_in(namespace: str, log_path: Path, *command: str) -> subprocess.Popen:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command], stdout=log, stderr=subprocess.STDOUT
        )


def dns(agent: AgentNamespace, server: str, *names: str) -> dict:
    return json.loads(agent.exec(sys.executable, "-c", DNS_QUERY, server, *names).stdout)


def static_routes(agent: AgentNamespace) -> list[str]:
    routes = json.loads(
        agent.exec("ip", "-j", "route", "show", "dev", "netsody", "proto", "static").stdout
    )
    return sorted(route["dst"] for route in routes)


def forward_rules(agent: AgentNamespace) -> list[str]:
    result = agent.exec("iptables", "-w", "-S", "NETSODY-FWD", check=False)
    return [line for line in result.stdout.splitlines() if line.startswith("-A ")]


def gateway_listens(agent: AgentNamespace) -> bool:
    # The socket is bound to the TUN device, which `ss` shows as 10.56.0.2%netsody:53.
    return re.search(r"10\.56\.0\.2(%\S+)?:53\b", agent.exec("ss", "-uln").stdout) is not None


def ping(agent: AgentNamespace, address: str) -> bool:
    return agent.exec("ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


def start_all(lab: Lab, document: Path) -> None:
    client, gateway, other = lab.client, lab.gateway, lab.other
    pks = {"client": client, "gateway": gateway, "other": other}
    document.write_text(DOCUMENT.format(**{k: v.identity.pk for k, v in pks.items()}))
    client.start("--listen-port", PORT,
                 "--peer-endpoint", f"{gateway.identity.pk}={CLIENT_LINK[1]}:{PORT}")  # fmt: skip
    other.start("--listen-port", PORT,
                "--peer-endpoint", f"{gateway.identity.pk}={OTHER_LINK[1]}:{PORT}")  # fmt: skip
    gateway.start("--listen-port", PORT,
                  "--peer-endpoint", f"{client.identity.pk}={CLIENT_LINK[0]}:{PORT}",
                  "--peer-endpoint", f"{other.identity.pk}={OTHER_LINK[0]}:{PORT}")  # fmt: skip
    for agent in (client, gateway, other):
        agent.netsody("network", "add", document.as_uri())
    wait_for(lambda: gateway_listens(gateway), "the gateway's resolver on its overlay address")
    wait_for(
        lambda: (
            all(p["path"] == "direct" for p in gateway.status()["peers"])
            and len(gateway.status()["peers"]) == 2
        ),
        "direct connections from the gateway to both nodes",
    )


def test_domain_resource_resolved_and_reached(lab: Lab, tmp_path: Path) -> None:
    client, gateway = lab.client, lab.gateway
    start_all(lab, tmp_path / "domains.toml")
    assert static_routes(client) == []

    answers = dns(client, "127.0.0.153", "app.example.internal", "ALIAS.example.internal.",
                  "missing.example.internal", "example.internal")  # fmt: skip
    assert answers["app.example.internal"] == [0, [LAN_ADDRESS]]
    assert answers["ALIAS.example.internal."] == [0, [LAN_ADDRESS]]
    assert answers["missing.example.internal"] == [3, []]
    assert answers["example.internal"] == [5, []]

    assert static_routes(client) == [LAN_ADDRESS]
    rule = f"-A NETSODY-FWD -s 10.56.0.1/32 -d {LAN_ADDRESS}/32 -i netsody -j ACCEPT"
    assert rule in forward_rules(gateway)
    wait_for(lambda: ping(client, LAN_ADDRESS), "a ping from client to the resolved address")

    # The client's system resolver is pointed at the agent, as a user without systemd-resolved
    # would do, so the name resolves through the C library.
    resolv_dir = Path("/etc/netns") / client.namespace
    resolv_dir.mkdir(parents=True)
    try:
        (resolv_dir / "resolv.conf").write_text("nameserver 127.0.0.153\n")
        fetched = client.exec(sys.executable, "-c", HTTP_GET, "http://app.example.internal:8080/")
    finally:
        (resolv_dir / "resolv.conf").unlink()
        resolv_dir.rmdir()
    assert fetched.stdout.strip() == "200"

    learned = client.status()["dns"]["learned"]
    assert [(e["resource"], e["role"], e["peer"], e["address"]) for e in learned] == [
        ("*.example.internal", "client", "gateway", LAN_ADDRESS)
    ]
    assert 0 < learned[0]["expires_in"] <= 120
    served = gateway.status()["dns"]["learned"]
    assert [(e["resource"], e["role"], e["peer"]) for e in served] == [
        ("*.example.internal", "gateway", "client")
    ]
    text = client.netsody("status").stdout
    assert "resource domains: example.internal" in text
    assert f"*.example.internal via gateway gateway: {LAN_ADDRESS}" in text

    assert client.stop() == 0
    assert gateway.stop() == 0
    assert forward_rules(gateway) == []


def test_domain_resource_refused_without_policy(lab: Lab, tmp_path: Path) -> None:
    client, gateway, other = lab.client, lab.gateway, lab.other
    start_all(lab, tmp_path / "domains.toml")

    own = dns(other, "127.0.0.153", "app.example.internal")
    assert own["app.example.internal"] == [5, []]
    # The gateway node is reachable for DNS, but refuses a node no policy permits to use
    # the resource, and never asks its upstream server.
    direct = dns(other, "10.56.0.2", "app.example.internal")
    assert direct["app.example.internal"] == [5, []]
    assert static_routes(other) == []
    assert forward_rules(gateway) == []
    assert gateway.status()["dns"]["learned"] == []
    assert "QUERY" not in (tmp_path / "dns.log").read_text()
    assert "refused a DNS query for app.example.internal from 10.56.0.3" in gateway.log()

    assert other.stop() == 0
    assert gateway.stop() == 0
    assert client.stop() == 0
