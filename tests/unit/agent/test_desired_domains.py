"""Machine state, resolver wiring and status output for domain resources."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from office_network import CLIENT, GATEWAY, office_document, policy

from netsody_agent.desired import AppliedNetwork, build_desired
from netsody_agent.reconciler import DnsLink, GatewayRule
from netsody_agent.reconciler.linux import ResolvectlDns
from netsody_agent.statusview import render_status
from netsody_common._domains import MIN_TTL_SECONDS
from netsody_common.document import parse_document
from netsody_common.policy import compile_for_node

DOCUMENT = office_document(
    nodes={"client": "10.1.0.1", "gateway": "10.1.0.2"},
    resources={"*.example.internal": GATEWAY, "db.corp.internal": GATEWAY},
    policies=[
        policy(["node::client"], ["resource::*.example.internal", "resource::db.corp.internal"]),
    ],
)

APP = IPv4Address("192.168.9.10")


def applied(pk: str) -> AppliedNetwork:
    document = parse_document(DOCUMENT)
    return AppliedNetwork("n1", document.name, document.network, compile_for_node(document, pk))


def test_client_routes_learned_addresses_and_wires_domains() -> None:
    network = applied(CLIENT)
    desired, _ = build_desired([network], dns_server="127.0.0.153")
    assert desired.routes == frozenset()
    assert desired.dns == DnsLink(
        "127.0.0.153", "netsody.me", ("db.corp.internal", "example.internal")
    )

    network.compiled.learned.learn_reachable("*.example.internal", GATEWAY, [APP], ttl=60, now=0.0)
    desired, _ = build_desired([network], dns_server="127.0.0.153")
    assert desired.routes == {IPv4Network("192.168.9.10/32")}

    network.compiled.learned.expire(MIN_TTL_SECONDS)
    desired, _ = build_desired([network], dns_server="127.0.0.153")
    assert desired.routes == frozenset()


def test_gateway_rules_for_learned_addresses() -> None:
    network = applied(GATEWAY)
    desired, _ = build_desired([network])
    assert desired.gateway_rules == frozenset()
    assert not desired.forwarding

    network.compiled.learned.learn_served("*.example.internal", CLIENT, [APP], ttl=60, now=0.0)
    desired, _ = build_desired([network])
    assert desired.gateway_rules == {
        GatewayRule(IPv4Network("10.1.0.1/32"), IPv4Network("192.168.9.10/32"))
    }
    assert desired.forwarding


def test_resolvectl_routes_resource_domains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A recording stand-in for `resolvectl`, because systemd-resolved cannot run here.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    script = bin_dir / "resolvectl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    dns = ResolvectlDns("netsody", runtime_dir=tmp_path)
    dns.apply(DnsLink("127.0.0.153", "netsody.me", ("example.internal",)))
    assert log.read_text().splitlines() == [
        "dns netsody 127.0.0.153",
        "domain netsody ~netsody.me ~example.internal",
    ]


def test_status_shows_learned_addresses_and_unwired_resolver() -> None:
    status = {
        "dns": {
            "resolver": "127.0.0.153:53",
            "system_resolver": "not wired",
            "detail": "resolvectl not found",
            "resource_domains": ["example.internal"],
            "learned": [
                {
                    "network": "office",
                    "resource": "*.example.internal",
                    "role": "client",
                    "peer": "gateway",
                    "address": "192.168.9.10",
                    "expires_in": 42,
                }
            ],
        }
    }
    lines = render_status(status).splitlines()
    assert "resource domains: example.internal" in lines
    assert (
        "  not routed to the agent's resolver: send these domains to 127.0.0.153:53 yourself"
        in lines
    )
    assert "  *.example.internal via gateway gateway: 192.168.9.10 (expires in 42 s)" in lines
