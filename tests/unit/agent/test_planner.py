"""The reconciler's plan: desired versus actual state, as a pure function."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

import pytest

from netsody_agent.reconciler import ActualState, DesiredState, DnsLink, GatewayRule, plan
from netsody_agent.reconciler.planner import teardown_plan

ADDR_A = IPv4Interface("10.1.0.10/24")
ADDR_B = IPv4Interface("10.2.0.10/24")
NET_X = IPv4Network("192.168.5.0/24")
NET_Y = IPv4Network("172.16.0.0/16")
RULE_X = GatewayRule(IPv4Network("10.1.0.11/32"), NET_X)
RULE_Y = GatewayRule(IPv4Network("10.1.0.12/32"), NET_Y)
DNS = DnsLink("127.0.0.153", "netsody.me")


def kinds(actions) -> list[str]:
    return [str(action) for action in actions]


CASES = [
    pytest.param(
        DesiredState(mtu=1280),
        ActualState(mtu=1280),
        [],
        id="nothing-to-do",
    ),
    pytest.param(
        DesiredState(mtu=1280, addresses=frozenset({ADDR_A}), routes=frozenset({NET_X}), dns=DNS),
        ActualState(mtu=1500),
        ["set-mtu 1280", "add-address 10.1.0.10/24", "add-route 192.168.5.0/24",
         f"set-dns {DNS}"],
        id="first-apply",
    ),
    pytest.param(
        DesiredState(mtu=1280, addresses=frozenset({ADDR_A, ADDR_B}), routes=frozenset({NET_X})),
        ActualState(mtu=1280, addresses=frozenset({ADDR_A}), routes=frozenset({NET_X})),
        ["add-address 10.2.0.10/24"],
        id="second-network-leaves-first-untouched",
    ),
    pytest.param(
        DesiredState(mtu=1280, addresses=frozenset({ADDR_A})),
        ActualState(mtu=1280, addresses=frozenset({ADDR_A}), routes=frozenset({NET_X, NET_Y})),
        ["remove-route 172.16.0.0/16", "remove-route 192.168.5.0/24"],
        id="routes-removed",
    ),
    pytest.param(
        DesiredState(mtu=1280, addresses=frozenset({ADDR_B}), routes=frozenset({NET_Y})),
        ActualState(mtu=1280, addresses=frozenset({ADDR_A}), routes=frozenset({NET_X})),
        ["remove-route 192.168.5.0/24", "remove-address 10.1.0.10/24",
         "add-address 10.2.0.10/24", "add-route 172.16.0.0/16"],
        id="routes-leave-before-and-come-after-addresses",
    ),
    pytest.param(
        DesiredState(mtu=1280, gateway_rules=frozenset({RULE_X})),
        ActualState(mtu=1280, forwarding=False),
        ["enable-forwarding", f"add-forward-rule {RULE_X}", f"add-nat-rule {RULE_X}"],
        id="gateway-duty-starts",
    ),
    pytest.param(
        DesiredState(mtu=1280, gateway_rules=frozenset({RULE_X})),
        ActualState(mtu=1280, forwarding=True, forwarding_owned=False),
        [f"add-forward-rule {RULE_X}", f"add-nat-rule {RULE_X}"],
        id="forwarding-already-on",
    ),
    pytest.param(
        DesiredState(mtu=1280, gateway_rules=frozenset({RULE_Y})),
        ActualState(mtu=1280, forwarding=True, forwarding_owned=True,
                    forward_rules=frozenset({RULE_X, RULE_Y}), nat_rules=frozenset({RULE_X})),
        [f"remove-forward-rule {RULE_X}", f"remove-nat-rule {RULE_X}", f"add-nat-rule {RULE_Y}"],
        id="gateway-rule-changes-only-what-differs",
    ),
    pytest.param(
        DesiredState(mtu=1280),
        ActualState(mtu=1280, forwarding=True, forwarding_owned=True,
                    forward_rules=frozenset({RULE_X}), nat_rules=frozenset({RULE_X})),
        [f"remove-forward-rule {RULE_X}", f"remove-nat-rule {RULE_X}", "restore-forwarding"],
        id="gateway-duty-ends-restores-forwarding",
    ),
    pytest.param(
        DesiredState(mtu=1280),
        ActualState(mtu=1280, forwarding=True, forwarding_owned=False),
        [],
        id="forwarding-not-ours-left-alone",
    ),
    pytest.param(
        DesiredState(mtu=1280),
        ActualState(mtu=1280, dns=DNS),
        ["remove-dns"],
        id="dns-removed-when-no-names",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("desired", "actual", "expected"), CASES)
def test_plan(desired: DesiredState, actual: ActualState, expected: list[str]) -> None:
    assert kinds(plan(desired, actual)) == expected


def test_plan_is_empty_once_applied() -> None:
    desired = DesiredState(
        mtu=1280,
        addresses=frozenset({ADDR_A}),
        routes=frozenset({NET_X}),
        gateway_rules=frozenset({RULE_X}),
        dns=DNS,
    )
    actual = ActualState(
        mtu=1280,
        addresses=frozenset({ADDR_A}),
        routes=frozenset({NET_X}),
        forward_rules=frozenset({RULE_X}),
        nat_rules=frozenset({RULE_X}),
        forwarding=True,
        forwarding_owned=True,
        dns=DNS,
    )
    assert plan(desired, actual) == []


def test_teardown_removes_everything_but_mtu() -> None:
    actual = ActualState(
        mtu=1280,
        addresses=frozenset({ADDR_A}),
        routes=frozenset({NET_X}),
        forward_rules=frozenset({RULE_X}),
        nat_rules=frozenset({RULE_X}),
        forwarding=True,
        forwarding_owned=True,
        dns=DNS,
    )
    assert kinds(teardown_plan(actual)) == [
        "remove-route 192.168.5.0/24",
        "remove-address 10.1.0.10/24",
        f"remove-forward-rule {RULE_X}",
        f"remove-nat-rule {RULE_X}",
        "restore-forwarding",
        "remove-dns",
    ]
