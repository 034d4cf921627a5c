"""Run inside a network namespace: drive the Linux OS layer through the reconciler.

Prints one JSON object with the observed state after each step. Used by test_linux_oslayer.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from netsody_agent.reconciler import DesiredState, DnsLink, GatewayRule, Reconciler
from netsody_agent.reconciler.linux import linux_os_layer
from netsody_agent.tun import open_tun

RULE_A = GatewayRule(IPv4Network("10.1.0.11/32"), IPv4Network("192.168.60.0/24"))
RULE_B = GatewayRule(IPv4Network("10.2.0.12/32"), IPv4Network("172.20.0.0/16"))
FIRST = DesiredState(
    mtu=1280,
    addresses=frozenset({IPv4Interface("10.1.0.10/24"), IPv4Interface("10.2.0.10/24")}),
    routes=frozenset({IPv4Network("192.168.50.0/24"), IPv4Network("10.200.0.0/16")}),
    gateway_rules=frozenset({RULE_A, RULE_B}),
    dns=DnsLink("127.0.0.153", "netsody.me"),
)
SECOND = DesiredState(
    mtu=1400,
    addresses=frozenset({IPv4Interface("10.1.0.10/24")}),
    routes=frozenset({IPv4Network("192.168.50.0/24")}),
    gateway_rules=frozenset({RULE_A}),
)


def snapshot(reconciler: Reconciler) -> dict:
    actual = reconciler.observe()
    return {
        "mtu": actual.mtu,
        "addresses": sorted(str(a) for a in actual.addresses),
        "routes": sorted(str(r) for r in actual.routes),
        "forward_rules": sorted(f"{r.source}>{r.destination}" for r in actual.forward_rules),
        "nat_rules": sorted(f"{r.source}>{r.destination}" for r in actual.nat_rules),
        "forwarding": actual.forwarding,
        "forwarding_owned": actual.forwarding_owned,
    }


def iptables_save() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


def main() -> None:
    state_dir = Path(sys.argv[1])
    tun = open_tun("netsody")
    tun.set_up(True)
    reconciler = Reconciler(linux_os_layer(tun.name, state_dir))
    steps: dict[str, object] = {"dns_available": reconciler.dns_available}
    steps["first_errors"] = reconciler.apply(FIRST)
    steps["first"] = snapshot(reconciler)
    steps["first_again_errors"] = reconciler.apply(FIRST)
    steps["second_errors"] = reconciler.apply(SECOND)
    steps["second"] = snapshot(reconciler)
    steps["teardown_errors"] = reconciler.teardown()
    steps["teardown"] = snapshot(reconciler)
    steps["iptables_after"] = iptables_save()
    tun.close()
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
