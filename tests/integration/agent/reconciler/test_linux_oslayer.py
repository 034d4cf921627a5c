"""The Linux OS layer (ip, iptables, /proc/sys) driven by the reconciler in a namespace."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

SCRIPT = Path(__file__).with_name("reconcile_script.py")


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60)


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    name = f"nsd-recon-{secrets.token_hex(3)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        yield name
    finally:
        run("ip", "netns", "delete", name, check=False)


def reconcile(namespace: str, state_dir: Path) -> dict:
    result = run("ip", "netns", "exec", namespace, sys.executable, str(SCRIPT), str(state_dir))
    return json.loads(result.stdout)


def test_linux_layer_apply_change_teardown(namespace: str, tmp_path: Path) -> None:
    steps = reconcile(namespace, tmp_path)
    assert steps["first_errors"] == []
    assert steps["first"] == {
        "mtu": 1280,
        "addresses": ["10.1.0.10/24", "10.2.0.10/24"],
        "routes": ["10.200.0.0/16", "192.168.50.0/24"],
        "forward_rules": ["10.1.0.11/32>192.168.60.0/24", "10.2.0.12/32>172.20.0.0/16"],
        "nat_rules": ["10.1.0.11/32>192.168.60.0/24", "10.2.0.12/32>172.20.0.0/16"],
        "forwarding": True,
        "forwarding_owned": True,
    }
    assert steps["first_again_errors"] == []
    assert steps["second_errors"] == []
    assert steps["second"] == {
        "mtu": 1400,
        "addresses": ["10.1.0.10/24"],
        "routes": ["192.168.50.0/24"],
        "forward_rules": ["10.1.0.11/32>192.168.60.0/24"],
        "nat_rules": ["10.1.0.11/32>192.168.60.0/24"],
        "forwarding": True,
        "forwarding_owned": True,
    }
    assert steps["teardown_errors"] == []
    assert steps["teardown"]["addresses"] == []
    assert steps["teardown"]["routes"] == []
    assert steps["teardown"]["forward_rules"] == []
    assert steps["teardown"]["forwarding"] is False
    assert "NETSODY" not in steps["iptables_after"]


def test_stale_rules_from_a_crash_are_removed(namespace: str, tmp_path: Path) -> None:
    def ipt(*args: str) -> None:
        run("ip", "netns", "exec", namespace, "iptables", "-w", *args)

    ipt("-N", "NETSODY-FWD")
    ipt("-A", "FORWARD", "-j", "NETSODY-FWD")
    ipt("-A", "NETSODY-FWD", "-i", "netsody", "-s", "10.9.9.9/32", "-d", "10.8.0.0/16",
        "-j", "ACCEPT")  # fmt: skip
    ipt("-t", "nat", "-N", "NETSODY-NAT")
    ipt("-t", "nat", "-A", "NETSODY-NAT", "-s", "10.9.9.9/32", "-d", "10.8.0.0/16",
        "-j", "MASQUERADE")  # fmt: skip
    steps = reconcile(namespace, tmp_path)
    assert "10.9.9.9/32>10.8.0.0/16" not in steps["first"]["forward_rules"]
    assert "10.9.9.9/32>10.8.0.0/16" not in steps["first"]["nat_rules"]
    assert "NETSODY" not in steps["iptables_after"]
    assert steps["teardown_errors"] == []
