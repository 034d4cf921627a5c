"""The agent API: challenge, pair, join, config with long poll, status, and credential rules."""

from __future__ import annotations

import asyncio
import threading
import tomllib

import httpx
import pytest

from netsody_common.document import parse_document

LONG_POLL_WAIT_SECS = 20


def _join(tools, key: str, *, identity=None, hostname: str = "joiner") -> tuple[int, dict, object]:
    identity = identity or tools.new_identity()
    anonymous = tools.client(None)
    body = tools.signed_proof(anonymous, identity, "netsody-join:", hostname=hostname, join_key=key)
    response = anonymous.post("/api/agent/join", body)
    return response.status, response.body, identity


def _join_key(client, network_id: str, **fields) -> str:
    response = client.post(f"/api/networks/{network_id}/join-keys", fields)
    assert response.status == 201, response.body
    return response.body["secret"]


def test_challenge_is_single_use(client_for, token_for, pair_device, agent_tools):
    alice = client_for("alice")
    agent = agent_tools.client(token_for(alice.email, agent=True))
    identity = agent_tools.new_identity()
    body = agent_tools.signed_proof(agent, identity, "netsody-pair:")
    assert agent.post("/api/agent/pair", body).status == 200
    replay = agent.post("/api/agent/pair", body)
    assert replay.status == 401
    assert replay.body["code"] == "challenge_invalid"


def test_pair_rejects_bad_signature(client_for, token_for, agent_tools):
    alice = client_for("alice")
    agent = agent_tools.client(token_for(alice.email, agent=True))
    identity = agent_tools.new_identity()
    body = agent_tools.signed_proof(agent, identity, "netsody-join:")  # wrong prefix for pairing
    response = agent.post("/api/agent/pair", body)
    assert response.status == 401
    assert response.body["code"] == "signature_invalid"


def test_pair_rejects_weak_proof_of_work(client_for, token_for, agent_tools):
    alice = client_for("alice")
    agent = agent_tools.client(token_for(alice.email, agent=True))
    identity = agent_tools.new_identity()
    body = agent_tools.signed_proof(agent, identity, "netsody-pair:")
    body["pow_nonce"] = (identity.pow_nonce + 1) % 2**64
    weak = agent.post("/api/agent/pair", body)
    # The neighbouring nonce is a valid 4-bit proof with probability 1/16; retry with others.
    nonce = identity.pow_nonce
    while weak.status == 200:
        nonce += 1
        body = agent_tools.signed_proof(agent, identity, "netsody-pair:")
        body["pow_nonce"] = nonce
        weak = agent.post("/api/agent/pair", body)
    assert weak.status == 400
    assert weak.body["code"] == "proof_of_work_invalid"


def test_pair_with_controller_token_rejected(client_for, agent_tools):
    alice = client_for("alice")
    body = agent_tools.signed_proof(alice, agent_tools.new_identity(), "netsody-pair:")
    response = alice.post("/api/agent/pair", body)
    assert response.status == 401
    assert response.body["code"] == "token_wrong_audience"


def test_paired_device_fetches_config(client_for, network_of, pair_device, agent_tools):
    alice = client_for("alice")
    network = network_of(alice)
    device = pair_device(alice, hostname="laptop")
    node = agent_tools.client(device["node_credential"])
    empty = node.get("/api/agent/config")
    assert empty.status == 200
    assert empty.body["networks"] == []
    added = alice.post(f"/api/networks/{network['id']}/nodes", {"device_id": device["device_id"]})
    assert added.status == 201
    config = node.get("/api/agent/config")
    assert config.body["revision"] > empty.body["revision"]
    [entry] = config.body["networks"]
    assert entry["id"] == network["id"]
    document = parse_document(entry["document"])
    assert [item.pk for item in document.nodes] == [device["identity"].pk]
    assert str(document.network) == "10.20.0.0/24"


def test_repairing_revokes_old_credential(client_for, pair_device, agent_tools):
    alice = client_for("alice")
    identity = agent_tools.new_identity()
    first = pair_device(alice, identity=identity)
    second = pair_device(alice, identity=identity)
    assert first["device_id"] == second["device_id"]
    assert agent_tools.client(second["node_credential"]).get("/api/agent/config").status == 200
    stale = agent_tools.client(first["node_credential"]).get("/api/agent/config")
    assert stale.status == 401
    assert "revoked" in stale.body["detail"]


def test_removed_device_credential_revoked(client_for, pair_device, agent_tools):
    alice = client_for("alice")
    device = pair_device(alice)
    node = agent_tools.client(device["node_credential"])
    assert node.get("/api/agent/config").status == 200
    assert alice.delete(f"/api/devices/{device['device_id']}").status == 204
    assert node.get("/api/agent/config").status == 401


def test_forged_credential_rejected(client_for, pair_device, agent_tools):
    alice = client_for("alice")
    device = pair_device(alice)
    forged = device["node_credential"][:-4] + "AAAA"
    response = agent_tools.client(forged).get("/api/agent/config")
    assert response.status == 401
    assert response.body["code"] == "invalid_token"


def test_user_token_rejected_on_node_endpoints(client_for):
    alice = client_for("alice")
    for method, path in (("GET", "/api/agent/config"), ("POST", "/api/agent/status")):
        response = alice.request(method, path, {} if method == "POST" else None)
        assert response.status == 401, path
        assert "node credential" in response.body["detail"]


def test_node_credential_rejected_on_user_endpoints(client_for, pair_device, agent_tools):
    alice = client_for("alice")
    device = pair_device(alice)
    node = agent_tools.client(device["node_credential"])
    for path in ("/api/me", "/api/networks", "/api/devices"):
        response = node.get(path)
        assert response.status == 401, path
        assert "node credential is not accepted" in response.body["detail"]


def test_join_with_key_and_status(client_for, network_of, agent_tools):
    alice = client_for("alice")
    network = network_of(alice)
    key = _join_key(alice, network["id"], groups=["ci"], max_uses=5)
    status, body, identity = _join(agent_tools, key, hostname="runner")
    assert status == 200, body
    assert body["network_id"] == network["id"]
    node = agent_tools.client(body["node_credential"])
    config = node.get("/api/agent/config").body
    report = {
        "revision": config["revision"],
        "error": None,
        "os": "linux",
        "agent_version": "0.1.0",
        "addresses": ["192.168.1.20", "[2001:db8::1]:4433", "not-an-ip"],
        "peers": [{"pk": "a" * 64, "path": "relay-h3"}],
    }
    assert node.post("/api/agent/status", report).status == 204
    [listed] = alice.get(f"/api/networks/{network['id']}/nodes").body
    assert listed["pk"] == identity.pk
    assert listed["hostname"] == "runner"
    assert listed["groups"] == ["ci"]
    assert listed["online"] is True
    assert listed["applied_revision"] == config["revision"]
    assert listed["addresses"] == ["192.168.1.20", "2001:db8::1"]
    assert listed["peers"] == [{"pk": "a" * 64, "path": "relay-h3"}]
    assert listed["os"] == "linux"
    assert listed["error"] is None


def test_join_twice_uses_key_once(client_for, network_of, agent_tools):
    alice = client_for("alice")
    network = network_of(alice)
    key = _join_key(alice, network["id"], max_uses=1)
    status, _, identity = _join(agent_tools, key)
    assert status == 200
    again, body, _ = _join(agent_tools, key, identity=identity)
    assert again == 200, body
    other, body, _ = _join(agent_tools, key)
    assert other == 401
    assert body["code"] == "join_key_invalid"


@pytest.mark.parametrize("case", ["revoked", "expired", "unknown"])
def test_join_key_rejected(client_for, network_of, case, agent_tools):
    from django.utils import timezone

    from netsody_controller.keys.models import JoinKey

    alice = client_for("alice")
    network = network_of(alice)
    key = _join_key(alice, network["id"])
    if case == "revoked":
        key_id = alice.get(f"/api/networks/{network['id']}/join-keys").body[0]["id"]
        alice.delete(f"/api/networks/{network['id']}/join-keys/{key_id}")
    elif case == "expired":
        JoinKey.objects.filter(network_id=network["id"]).update(expires_at=timezone.now())
    else:
        key = key[:-6] + "abcdef"
    status, body, _ = _join(agent_tools, key)
    assert status == 401
    assert body["code"] == "join_key_invalid"


def test_removing_joined_node_revokes_credential(client_for, network_of, agent_tools):
    alice = client_for("alice")
    network = network_of(alice)
    status, body, _ = _join(agent_tools, _join_key(alice, network["id"]))
    assert status == 200
    node = agent_tools.client(body["node_credential"])
    [listed] = alice.get(f"/api/networks/{network['id']}/nodes").body
    assert alice.delete(f"/api/networks/{network['id']}/nodes/{listed['id']}").status == 204
    assert node.get("/api/agent/config").status == 401


def test_conditions_evaluated_with_node_facts(client_for, network_of, agent_tools):
    alice = client_for("alice")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    policies = alice.get(f"{base}/policies").body
    alice.delete(f"{base}/policies/{policies[0]['id']}")
    alice.post(
        f"{base}/policies",
        {
            "sources": {"groups": ["ALL"]},
            "destinations": {"groups": ["ALL"]},
            "conditions": {"os_types": ["linux"]},
        },
    )
    key = _join_key(alice, network["id"])
    _, first, first_identity = _join(agent_tools, key, hostname="one")
    _, second, _ = _join(agent_tools, key, hostname="two")
    one, two = (
        agent_tools.client(first["node_credential"]),
        agent_tools.client(second["node_credential"]),
    )
    for client, os_type in ((one, "windows"), (two, "windows")):
        client.post("/api/agent/status", {"os": os_type, "agent_version": "0.1.0"})
    view = tomllib.loads(two.get("/api/agent/config").body["networks"][0]["document"])
    assert [node["hostname"] for node in view["node"]] == ["two"]
    one.post("/api/agent/status", {"os": "linux", "agent_version": "0.1.0"})
    view = tomllib.loads(two.get("/api/agent/config").body["networks"][0]["document"])
    assert sorted(node["hostname"] for node in view["node"]) == ["one", "two"]
    assert first_identity.pk in {node["pk"] for node in view["node"]}


async def test_long_poll_returns_on_change_in_process(client_for, network_of, pair_device):
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    alice = await sync_to_async(client_for)("alice")
    network = await sync_to_async(network_of)(alice)
    device = await sync_to_async(pair_device)(alice)
    await sync_to_async(alice.post)(
        f"/api/networks/{network['id']}/nodes", {"device_id": device["device_id"]}
    )
    client = AsyncClient()
    headers = {"Authorization": f"Bearer {device['node_credential']}"}
    current = (await client.get("/api/agent/config", headers=headers)).json()["revision"]
    poll = asyncio.create_task(
        client.get(
            f"/api/agent/config?revision={current}&wait={LONG_POLL_WAIT_SECS}", headers=headers
        )
    )
    await asyncio.sleep(0.5)
    assert not poll.done()
    await sync_to_async(alice.patch)(f"/api/networks/{network['id']}", {"name": "renamed"})
    response = await asyncio.wait_for(poll, LONG_POLL_WAIT_SECS + 10)
    body = response.json()
    assert body["revision"] > current
    assert body["networks"][0]["name"] == "renamed"


def test_long_poll_unchanged_returns_same_revision(client_for, pair_device, agent_tools):
    alice = client_for("alice")
    device = pair_device(alice)
    node = agent_tools.client(device["node_credential"])
    current = node.get("/api/agent/config").body["revision"]
    again = node.get(f"/api/agent/config?revision={current}&wait=1")
    assert again.status == 200
    assert again.body["revision"] == current


def test_long_poll_across_processes(client_for, network_of, pair_device, controller_server):
    """A change made through one controller process wakes an agent waiting on another."""
    first, second = controller_server(), controller_server()
    alice = client_for("alice")
    network = network_of(alice)
    device = pair_device(alice)
    alice.post(f"/api/networks/{network['id']}/nodes", {"device_id": device["device_id"]})
    node_headers = {"Authorization": f"Bearer {device['node_credential']}"}
    user_headers = {"Authorization": f"Bearer {alice.token}"}
    current = httpx.get(f"{first.url}/api/agent/config", headers=node_headers).json()["revision"]
    result: dict = {}

    def poll() -> None:
        result["response"] = httpx.get(
            f"{first.url}/api/agent/config",
            params={"revision": current, "wait": LONG_POLL_WAIT_SECS},
            headers=node_headers,
            timeout=LONG_POLL_WAIT_SECS + 10,
        )

    waiter = threading.Thread(target=poll)
    waiter.start()
    # Give the poll a moment to start waiting. Had the rename come first, the poll would still
    # return the new revision at once, because it compares revisions before it waits.
    waiter.join(timeout=1.0)
    renamed = httpx.patch(
        f"{second.url}/api/networks/{network['id']}",
        json={"name": "moved"},
        headers=user_headers,
    )
    assert renamed.status_code == 200
    waiter.join(timeout=LONG_POLL_WAIT_SECS + 15)
    body = result["response"].json()
    assert body["revision"] > current
    assert body["networks"][0]["name"] == "moved"
