"""`netsody run` in a network namespace applying a file-based network.

Checks the TUN device, its address and MTU, the resource route, the gateway's iptables chains
and IPv4 forwarding, the DNS answers for `<peer>.netsody.me`, a live configuration change, and
that a clean shutdown removes everything the daemon installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from netsody_common.identity import Identity

from .conftest import AgentNamespace, wait_for

pytestmark = pytest.mark.root

DIFFICULTY = 8

DOCUMENT = """
name = "lab"
network = "10.77.0.0/24"

[[node]]
hostname = "alpha"
ip = "10.77.0.10"
pk = "{me}"
groups = ["staff"]

[[node]]
hostname = "{peer_name}"
ip = "10.77.0.11"
pk = "{peer}"

[[node]]
hostname = "gamma"
ip = "10.77.0.12"
pk = "{gateway}"

[[resource]]
dest = "192.168.50.0/24"
gw = "{gateway}"
groups = ["staff"]

[[policy]]
source_groups = ["ALL"]
destination_groups = ["ALL"]

[[policy]]
source_groups = ["staff"]
destination_groups = ["staff"]
"""

SERVED_RESOURCE = """
[[resource]]
dest = "192.168.60.0/24"
gw = "{me}"
groups = ["ALL"]
"""

DNS_QUERY = """
import json, socket, sys
from netsody_agent.dns import build_query, parse_a_answers
answers = {}
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(5)
    for name in sys.argv[1:]:
        sock.sendto(build_query(name, query_id=1), ("127.0.0.153", 53))
        rcode, addresses = parse_a_answers(sock.recv(512))
        answers[name] = [rcode, [str(a) for a in addresses]]
print(json.dumps(answers))
"""


PEER_PK = Identity.generate(DIFFICULTY, progress=False).pk
GATEWAY_PK = Identity.generate(DIFFICULTY, progress=False).pk


def write_document(path: Path, me: str, *, peer_name: str = "beta", serve: bool = True) -> None:
    """Write the lab network; with `serve`, this node is the gateway of 192.168.60.0/24."""
    text = DOCUMENT.format(me=me, peer=PEER_PK, gateway=GATEWAY_PK, peer_name=peer_name)
    if serve:
        text += SERVED_RESOURCE.format(me=me)
    path.write_text(text)


def addresses(agent: AgentNamespace) -> dict:
    link = json.loads(agent.exec("ip", "-j", "addr", "show", "dev", "netsody").stdout)[0]
    inet = [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"]
    return {"mtu": link["mtu"], "up": "UP" in link["flags"], "inet": inet}


def static_routes(agent: AgentNamespace) -> list[str]:
    routes = json.loads(
        agent.exec("ip", "-j", "route", "show", "dev", "netsody", "proto", "static").stdout
    )
    return sorted(route["dst"] for route in routes)


def chain(agent: AgentNamespace, table: str, name: str) -> list[str] | None:
    result = agent.exec("iptables", "-w", "-t", table, "-S", name, check=False)
    if result.returncode != 0:
        return None
    return [line for line in result.stdout.splitlines() if line.startswith("-A ")]


def dns(agent: AgentNamespace, *names: str) -> dict:
    return json.loads(agent.exec(sys.executable, "-c", DNS_QUERY, *names).stdout)


def test_daemon_applies_file_network(agent_ns: AgentNamespace, tmp_path: Path) -> None:
    document = tmp_path / "lab.toml"
    write_document(document, agent_ns.identity.pk)
    agent_ns.start()

    added = agent_ns.netsody("network", "add", document.as_uri())
    assert "networks lab" in added.stdout

    link = addresses(agent_ns)
    assert link == {"mtu": 1280, "up": True, "inet": ["10.77.0.10/24"]}
    assert static_routes(agent_ns) == ["192.168.50.0/24"]
    forward = chain(agent_ns, "filter", "NETSODY-FWD")
    assert forward is not None
    assert "-A NETSODY-FWD -s 10.77.0.11/32 -d 192.168.60.0/24 -i netsody -j ACCEPT" in forward
    nat = chain(agent_ns, "nat", "NETSODY-NAT")
    assert "-A NETSODY-NAT -s 10.77.0.12/32 -d 192.168.60.0/24 -j MASQUERADE" in nat
    assert "-A FORWARD -j NETSODY-FWD" in agent_ns.exec("iptables", "-S", "FORWARD").stdout
    assert agent_ns.ip_forward() == "1"

    answers = dns(
        agent_ns, "beta.netsody.me", "gamma.netsody.me", "nobody.netsody.me", "example.com"
    )
    assert answers["beta.netsody.me"] == [0, ["10.77.0.11"]]
    assert answers["gamma.netsody.me"] == [0, ["10.77.0.12"]]
    assert answers["nobody.netsody.me"] == [3, []]
    assert answers["example.com"] == [5, []]

    status = agent_ns.status()
    assert status["identity"] == agent_ns.identity.pk
    assert status["networks"][0]["state"] == "applied"
    assert status["dns"]["resolver"] == "127.0.0.153:53"

    assert agent_ns.stop() == 0
    assert agent_ns.exec("ip", "link", "show", "netsody", check=False).returncode != 0
    assert chain(agent_ns, "filter", "NETSODY-FWD") is None
    assert chain(agent_ns, "nat", "NETSODY-NAT") is None
    assert "NETSODY" not in agent_ns.exec("iptables-save").stdout
    assert agent_ns.ip_forward() == "0"
    assert "netsody agent stopped" in agent_ns.log()


def test_daemon_follows_file_changes(agent_ns: AgentNamespace, tmp_path: Path) -> None:
    document = tmp_path / "lab.toml"
    write_document(document, agent_ns.identity.pk)
    agent_ns.start()
    agent_ns.netsody("network", "add", document.as_uri())
    assert agent_ns.ip_forward() == "1"

    # The gateway duty ends and the peer is renamed: chains empty, forwarding off, new name.
    write_document(document, agent_ns.identity.pk, peer_name="bravo", serve=False)
    wait_for(
        lambda: dns(agent_ns, "bravo.netsody.me")["bravo.netsody.me"][0] == 0, "the renamed peer"
    )
    wait_for(lambda: chain(agent_ns, "nat", "NETSODY-NAT") in (None, []), "the NAT rules to go")
    assert chain(agent_ns, "filter", "NETSODY-FWD") in (None, [])
    assert agent_ns.ip_forward() == "0"
    assert dns(agent_ns, "beta.netsody.me")["beta.netsody.me"][0] == 3
    assert addresses(agent_ns)["inet"] == ["10.77.0.10/24"]

    # An invalid document keeps the last valid configuration in force.
    document.write_text(document.read_text().replace('"10.77.0.11"', '"10.99.0.11"'))
    wait_for(lambda: agent_ns.status()["networks"][0]["error"] is not None, "the invalid document")
    assert "keeping the last valid configuration" in agent_ns.status()["networks"][0]["error"]
    assert dns(agent_ns, "bravo.netsody.me")["bravo.netsody.me"] == [0, ["10.77.0.11"]]

    agent_ns.netsody("network", "disable", document.as_uri())
    assert addresses(agent_ns)["inet"] == []
    assert static_routes(agent_ns) == []
    agent_ns.netsody("network", "remove", document.as_uri())
    assert agent_ns.status()["networks"] == []
    assert agent_ns.stop() == 0
