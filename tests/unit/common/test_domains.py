"""Domain resources in the policy engine: name matching, learned addresses, decisions."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from office_network import CLIENT, GATEWAY, OTHER, SECOND_GATEWAY, office_document, policy

from netsody_common._domains import (
    GATEWAY_GRACE_SECONDS,
    MAX_ADDRESSES_PER_RESOURCE,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    DomainMatcher,
    LearnedAddresses,
    clamp_ttl,
)
from netsody_common.document import parse_document
from netsody_common.policy import EGRESS, INGRESS, compile_for_node

DOCUMENT = office_document(
    nodes={"client": "10.1.0.1", "gateway": "10.1.0.2", "other": "10.1.0.3", "second": "10.1.0.4"},
    resources={"*.example.internal": GATEWAY, "db.example.internal": SECOND_GATEWAY},
    policies=[
        policy(
            ["node::client"],
            ["resource::*.example.internal", "resource::db.example.internal"],
            tcp_ports=[443],
        ),
    ],
)

APP = IPv4Address("192.168.7.10")
TCP, UDP = 6, 17


def compiled(pk: str):
    return compile_for_node(parse_document(DOCUMENT), pk)


MATCH_CASES = [
    pytest.param("db.example.internal", ("db.example.internal", "exact"), id="exact"),
    pytest.param("DB.Example.INTERNAL.", ("db.example.internal", "exact"), id="case-and-dot"),
    pytest.param("app.example.internal", ("*.example.internal", "wild"), id="wildcard"),
    pytest.param("a.b.example.internal", ("*.example.internal", "wild"), id="wildcard-deep"),
    pytest.param("x.lab.example.internal", ("*.lab.example.internal", "lab"), id="longest-suffix"),
    pytest.param("example.internal", None, id="apex-not-matched"),
    pytest.param("badexample.internal", None, id="label-boundary"),
    pytest.param("example.internal.evil.com", None, id="suffix-as-prefix"),
    pytest.param("internal", None, id="parent"),
]


@pytest.mark.parametrize(("name", "expected"), MATCH_CASES)
def test_domain_matcher(name: str, expected) -> None:
    matcher = DomainMatcher(
        {
            "db.example.internal": "exact",
            "*.example.internal": "wild",
            "*.lab.example.internal": "lab",
        }
    )
    assert matcher.match(name) == expected


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(0, MIN_TTL_SECONDS), (300, 300), (10**9, MAX_TTL_SECONDS)],
    ids=["zero-raised", "inside", "huge-lowered"],
)
def test_clamp_ttl(ttl: int, expected: int) -> None:
    assert clamp_ttl(ttl) == expected


def test_learned_ttl_clamped_and_expired() -> None:
    learned = LearnedAddresses()
    assert learned.learn_reachable("*.x.internal", GATEWAY, [APP], ttl=1, now=100.0) == [APP]
    assert learned.routes == {int(APP): GATEWAY}
    assert not learned.expire(100.0 + MIN_TTL_SECONDS - 1)
    assert learned.expire(100.0 + MIN_TTL_SECONDS)
    assert learned.routes == {}
    assert learned.reachable == {}


def test_learned_refresh_keeps_later_expiry() -> None:
    learned = LearnedAddresses()
    learned.learn_reachable("*.x.internal", GATEWAY, [APP], ttl=600, now=0.0)
    learned.learn_reachable("*.x.internal", GATEWAY, [APP], ttl=60, now=10.0)
    assert [entry.expires for entry in learned.entries()] == [600.0]


def test_learned_cap_per_resource() -> None:
    learned = LearnedAddresses()
    flood = [IPv4Address(f"10.9.{i // 250}.{i % 250 + 1}") for i in range(200)]
    accepted = learned.learn_reachable("*.x.internal", GATEWAY, flood, ttl=60, now=0.0)
    assert len(accepted) == MAX_ADDRESSES_PER_RESOURCE
    assert len(learned.routes) == MAX_ADDRESSES_PER_RESOURCE
    assert learned.learn_reachable("*.x.internal", GATEWAY, [APP], ttl=60, now=0.0) == []
    # A known address is still refreshed at the cap, and another resource has its own cap.
    assert learned.learn_reachable("*.x.internal", GATEWAY, flood[:1], ttl=60, now=0.0)
    assert learned.learn_reachable("*.y.internal", GATEWAY, [APP], ttl=60, now=0.0) == [APP]


def test_learned_address_keeps_first_gateway() -> None:
    learned = LearnedAddresses()
    learned.learn_reachable("*.x.internal", GATEWAY, [APP], ttl=60, now=0.0)
    assert learned.learn_reachable("db.y.internal", SECOND_GATEWAY, [APP], ttl=60, now=0.0) == []
    assert learned.routes == {int(APP): GATEWAY}


def test_learned_served_cap_counts_distinct_addresses() -> None:
    learned = LearnedAddresses()
    addresses = [IPv4Address(f"10.9.0.{i + 1}") for i in range(MAX_ADDRESSES_PER_RESOURCE)]
    learned.learn_served("*.x.internal", CLIENT, addresses, ttl=60, now=0.0)
    # The same addresses for a second client do not count again; a new one is over the cap.
    assert learned.learn_served("*.x.internal", OTHER, addresses, ttl=60, now=0.0) == addresses
    assert learned.learn_served("*.x.internal", OTHER, [APP], ttl=60, now=0.0) == []
    assert len(learned.served) == 2 * MAX_ADDRESSES_PER_RESOURCE


def test_learned_served_outlives_client_ttl() -> None:
    learned = LearnedAddresses()
    learned.learn_served("*.x.internal", CLIENT, [APP], ttl=60, now=0.0)
    assert not learned.expire(60.0 + GATEWAY_GRACE_SECONDS - 1)
    assert learned.expire(60.0 + GATEWAY_GRACE_SECONDS)


def test_reachable_domain_and_served_domain() -> None:
    client = compiled(CLIENT)
    assert client.reachable_domain("App.Example.Internal") == ("*.example.internal", GATEWAY)
    assert client.reachable_domain("db.example.internal") == ("db.example.internal", SECOND_GATEWAY)
    assert client.reachable_domain("example.internal") is None
    assert client.served_domain("app.example.internal") is None
    gateway = compiled(GATEWAY)
    assert gateway.reachable_domain("app.example.internal") is None
    assert gateway.served_domain("app.example.internal") == "*.example.internal"
    # The wildcard covers db.example.internal too; clients send it to the exact resource's
    # gateway, but this gateway may still resolve it for clients of the wildcard.
    assert gateway.served_domain("db.example.internal") == "*.example.internal"
    assert gateway.served_domain("example.internal") is None


def test_domain_client_only_permitted_nodes() -> None:
    gateway = compiled(GATEWAY)
    found = gateway.domain_client("*.example.internal", IPv4Address("10.1.0.1"))
    assert found is not None
    assert found.pk == CLIENT
    assert gateway.domain_client("*.example.internal", IPv4Address("10.1.0.3")) is None
    assert gateway.domain_client("db.example.internal", IPv4Address("10.1.0.1")) is None


def test_client_decide_with_learned_address() -> None:
    client = compiled(CLIENT)
    assert not client.decide(EGRESS, "10.1.0.1", APP, TCP, 443, GATEWAY)
    client.learned.learn_reachable("*.example.internal", GATEWAY, [APP], ttl=60, now=0.0)
    assert client.decide(EGRESS, "10.1.0.1", APP, TCP, 443, GATEWAY)
    assert not client.decide(EGRESS, "10.1.0.1", APP, TCP, 22, GATEWAY)
    assert not client.decide(EGRESS, "10.1.0.1", APP, TCP, 443, SECOND_GATEWAY)
    assert not client.decide(EGRESS, "10.1.0.9", APP, TCP, 443, GATEWAY)
    assert client.is_valid_source(GATEWAY, APP)
    assert not client.is_valid_source(SECOND_GATEWAY, APP)
    client.learned.expire(MIN_TTL_SECONDS)
    assert not client.decide(EGRESS, "10.1.0.1", APP, TCP, 443, GATEWAY)
    assert not client.is_valid_source(GATEWAY, APP)


def test_gateway_decide_with_learned_address() -> None:
    gateway = compiled(GATEWAY)
    assert not gateway.decide(INGRESS, "10.1.0.1", APP, TCP, 443, CLIENT)
    gateway.learned.learn_served("*.example.internal", CLIENT, [APP], ttl=60, now=0.0)
    assert gateway.decide(INGRESS, "10.1.0.1", APP, TCP, 443, CLIENT)
    assert not gateway.decide(INGRESS, "10.1.0.1", APP, UDP, 443, CLIENT)
    assert not gateway.decide(INGRESS, "10.1.0.3", APP, TCP, 443, OTHER)


def test_dns_queries_only_between_domain_client_and_gateway() -> None:
    client, gateway, other = compiled(CLIENT), compiled(GATEWAY), compiled(OTHER)
    assert client.decide(EGRESS, "10.1.0.1", "10.1.0.2", UDP, 53, GATEWAY)
    assert not client.decide(EGRESS, "10.1.0.1", "10.1.0.2", TCP, 22, GATEWAY)
    assert not client.decide(EGRESS, "10.1.0.1", "10.1.0.2", UDP, 54, GATEWAY)
    assert gateway.decide(INGRESS, "10.1.0.1", "10.1.0.2", UDP, 53, CLIENT)
    assert gateway.peer(OTHER) is None
    assert other.peer(GATEWAY) is None


def test_adopt_learned_drops_what_policy_no_longer_permits() -> None:
    old = compiled(CLIENT)
    old.learned.learn_reachable("*.example.internal", GATEWAY, [APP], ttl=60, now=0.0)
    same = compiled(CLIENT)
    same.adopt_learned(old)
    assert same.learned.routes == {int(APP): GATEWAY}

    without_policy = DOCUMENT.split("[[policy]]")[0]
    revoked = compile_for_node(parse_document(without_policy), CLIENT)
    revoked.adopt_learned(old)
    assert revoked.learned.routes == {}
    assert not revoked.learned
