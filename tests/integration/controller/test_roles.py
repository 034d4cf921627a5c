"""Every role against every operation of a network, as one table.

Allowed operations must succeed with their success status; every other must return 403 with the
error envelope. The table mirrors the permission table of `netsody_controller.permissions`.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from netsody_controller.devidp.provider import CONTROLLER_CLIENT_ID

ROLES = ("owner", "admin", "editor", "member")
ALL = frozenset(ROLES)
EDITORS = frozenset({"owner", "admin", "editor"})
ADMINS = frozenset({"owner", "admin"})
OWNER = frozenset({"owner"})
_counter = itertools.count()


@dataclass
class Team:
    network_id: str
    clients: dict
    node_id: str
    policy_id: str

    @property
    def base(self) -> str:
        return f"/api/networks/{self.network_id}"


@pytest.fixture(scope="module")
def team(django_setup, dev_idp, agent_tools) -> Team:
    suffix = secrets.token_hex(4)
    clients = {}
    for role in ROLES:
        email = f"{role}-{suffix}@example.test"
        client = agent_tools.client(
            dev_idp.idp.issue_access_token(email=email, client_id=CONTROLLER_CLIENT_ID)
        )
        client.email = email
        client.user_id = client.get("/api/me").body["id"]
        clients[role] = client
    owner = clients["owner"]
    network = owner.post("/api/networks", {"name": "roles", "subnet": "10.40.0.0/22"}).body
    base = f"/api/networks/{network['id']}"
    for role in ("admin", "editor", "member"):
        added = owner.post(f"{base}/members", {"email": clients[role].email, "role": role})
        assert added.status == 201, added.body
    gateway = _pair(dev_idp, agent_tools, owner)
    node = owner.post(f"{base}/nodes", {"device_id": gateway}).body
    policy = owner.get(f"{base}/policies").body[0]
    return Team(network["id"], clients, node["id"], policy["id"])


def _pair(dev_idp, agent_tools, client) -> str:
    from netsody_controller.devidp.provider import AGENT_CLIENT_ID

    agent = agent_tools.client(
        dev_idp.idp.issue_access_token(email=client.email, client_id=AGENT_CLIENT_ID)
    )
    body = agent_tools.signed_proof(agent, agent_tools.new_identity(), "netsody-pair:")
    response = agent.post("/api/agent/pair", body)
    assert response.status == 200, response.body
    return response.body["device_id"]


@dataclass(frozen=True)
class Operation:
    name: str
    allowed: frozenset[str]
    run: Callable  # (team, client, role, context) -> response
    success: int = 200


def _unique() -> str:
    return f"x{next(_counter)}"


OPERATIONS = [
    Operation("read network", ALL, lambda t, c, r, x: c.get(t.base)),
    Operation("list nodes", ALL, lambda t, c, r, x: c.get(f"{t.base}/nodes")),
    Operation("read node", ALL, lambda t, c, r, x: c.get(f"{t.base}/nodes/{t.node_id}")),
    Operation("list policies", ALL, lambda t, c, r, x: c.get(f"{t.base}/policies")),
    Operation("list resources", ALL, lambda t, c, r, x: c.get(f"{t.base}/resources")),
    Operation("list groups", ALL, lambda t, c, r, x: c.get(f"{t.base}/groups")),
    Operation("list members", ALL, lambda t, c, r, x: c.get(f"{t.base}/members")),
    Operation("export document", ALL, lambda t, c, r, x: c.get(f"{t.base}/document")),
    Operation(
        "add own device",
        EDITORS,
        lambda t, c, r, x: c.post(f"{t.base}/nodes", {"device_id": x["device"]}),
        201,
    ),
    Operation(
        "edit node",
        EDITORS,
        lambda t, c, r, x: c.patch(f"{t.base}/nodes/{t.node_id}", {"groups": [_unique()]}),
    ),
    Operation(
        "create policy",
        EDITORS,
        lambda t, c, r, x: c.post(
            f"{t.base}/policies",
            {"sources": {"groups": [_unique()]}, "destinations": {"groups": ["ALL"]}},
        ),
        201,
    ),
    Operation(
        "edit policy",
        EDITORS,
        lambda t, c, r, x: c.patch(f"{t.base}/policies/{t.policy_id}", {"name": _unique()}),
    ),
    Operation(
        "create resource",
        EDITORS,
        lambda t, c, r, x: c.post(
            f"{t.base}/resources",
            {"dest": f"{_unique()}.example.internal", "gateway_node_id": t.node_id},
        ),
        201,
    ),
    Operation("create join key", ADMINS, lambda t, c, r, x: c.post(f"{t.base}/join-keys", {}), 201),
    Operation("list join keys", ADMINS, lambda t, c, r, x: c.get(f"{t.base}/join-keys")),
    Operation(
        "add member",
        ADMINS,
        lambda t, c, r, x: c.post(f"{t.base}/members", {"email": x["outsider"]}),
        201,
    ),
    Operation(
        "set default groups",
        ADMINS,
        lambda t, c, r, x: c.patch(
            f"{t.base}/members/{t.clients['member'].user_id}", {"default_groups": [_unique()]}
        ),
    ),
    Operation("list invitations", ADMINS, lambda t, c, r, x: c.get(f"{t.base}/invitations")),
    Operation("edit network", ADMINS, lambda t, c, r, x: c.patch(t.base, {"name": _unique()})),
    Operation(
        "replace document",
        ADMINS,
        lambda t, c, r, x: c.put(f"{t.base}/document", {"document": x["document"]}),
    ),
    Operation(
        "remove the owner",
        frozenset(),
        lambda t, c, r, x: c.delete(f"{t.base}/members/{t.clients['owner'].user_id}"),
        204,
    ),
]


def _context(team: Team, role: str, dev_idp, agent_tools) -> dict:
    client = team.clients[role]
    outsider = f"outsider-{_unique()}-{secrets.token_hex(3)}@example.test"
    agent_tools.client(
        dev_idp.idp.issue_access_token(email=outsider, client_id=CONTROLLER_CLIENT_ID)
    ).get("/api/me")
    return {
        "device": _pair(dev_idp, agent_tools, client),
        "outsider": outsider,
        "document": team.clients["owner"].get(f"{team.base}/document").body["document"],
    }


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.name)
def test_role_table(team, operation, dev_idp, agent_tools):
    for role in ROLES:
        context = _context(team, role, dev_idp, agent_tools)
        response = operation.run(team, team.clients[role], role, context)
        if role in operation.allowed:
            assert response.status == operation.success, (role, response.body)
        else:
            assert response.status == 403, (role, response.status, response.body)
            assert response.body["code"] == "forbidden", role


def test_outsider_sees_no_network(team, dev_idp, agent_tools):
    outsider = agent_tools.client(
        dev_idp.idp.issue_access_token(
            email=f"stranger-{secrets.token_hex(3)}@example.test", client_id=CONTROLLER_CLIENT_ID
        )
    )
    assert outsider.get(team.base).status == 404
    assert outsider.get(f"{team.base}/nodes").status == 404


def test_owner_role_not_assignable(team):
    owner = team.clients["owner"]
    member = team.clients["member"].user_id
    response = owner.patch(f"{team.base}/members/{member}", {"role": "owner"})
    assert response.status == 422
    assert response.body["code"] == "invalid"


@pytest.mark.parametrize("role", ["admin", "editor", "member"])
def test_only_owner_transfers_or_deletes(team, role):
    client = team.clients[role]
    transfer = client.post(f"{team.base}/transfer", {"user_id": client.user_id})
    assert transfer.status == 403
    assert client.delete(team.base).status == 403
