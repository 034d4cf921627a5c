"""Every user endpoint of the controller API against PostgreSQL, Redis and a real provider."""

from __future__ import annotations

import tomllib

import pytest

from netsody_common.document import DocumentError, parse_document

DOCUMENT = """
name = "lab"
network = "10.30.0.0/24"

[[node]]
hostname = "gw"
ip = "10.30.0.1"
pk = "{gw}"
groups = ["servers"]

[[node]]
hostname = "laptop"
ip = "10.30.0.2"
pk = "{laptop}"
groups = ["staff"]

[[resource]]
dest = "192.168.50.0/24"
gw = "{gw}"
groups = ["servers"]
name = "printers"

[[policy]]
name = "staff to servers"
source_groups = ["staff", "node::laptop"]
destination_groups = ["servers", "resource::192.168.50.0/24"]
[[policy.rules]]
protocol = "tcp"
ports = [22, "8000-8080"]
[policy.conditions]
os_types = ["linux"]
"""


def test_health_endpoints(django_setup):
    from django.test import Client

    client = Client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"
    assert ready.json()["redis"] == "ok"


def test_request_id_echoed(client_for):
    alice = client_for("alice")
    response = alice.get("/api/me", HTTP_X_REQUEST_ID="trace-42")
    assert response.headers["X-Request-ID"] == "trace-42"


def test_me_returns_profile(client_for):
    alice = client_for("alice")
    me = alice.get("/api/me")
    assert me.status == 200
    assert me.body["email"] == alice.email


def test_network_lifecycle(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice)
    assert network["role"] == "owner"
    assert network["owner"]["email"] == alice.email
    assert network["subnet"] == "10.20.0.0/24"
    listed = alice.get("/api/networks").body
    assert [item["id"] for item in listed] == [network["id"]]
    renamed = alice.patch(f"/api/networks/{network['id']}", {"name": "hq"})
    assert renamed.status == 200
    assert renamed.body["name"] == "hq"
    assert renamed.body["revision"] > network["revision"]
    assert alice.delete(f"/api/networks/{network['id']}").status == 204
    assert alice.get(f"/api/networks/{network['id']}").status == 404


def test_new_network_has_all_to_all_policy(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice)
    policies = alice.get(f"/api/networks/{network['id']}/policies").body
    assert len(policies) == 1
    assert policies[0]["sources"]["groups"] == ["ALL"]
    assert policies[0]["destinations"]["groups"] == ["ALL"]


def test_network_subnet_rejected_when_public(client_for):
    alice = client_for("alice")
    response = alice.post("/api/networks", {"name": "x", "subnet": "8.8.8.0/24"})
    assert response.status == 400
    assert response.body["code"] == "invalid"
    assert "not a private range" in response.body["detail"]


def test_network_subnet_rejected_when_not_network_address(client_for):
    alice = client_for("alice")
    response = alice.post("/api/networks", {"name": "x", "subnet": "10.0.0.5/24"})
    assert response.status == 400
    assert "10.0.0.5/24" in response.body["detail"]


def test_unknown_network_is_404_envelope(client_for):
    alice = client_for("alice")
    response = alice.get("/api/networks/00000000-0000-0000-0000-000000000000")
    assert response.status == 404
    assert set(response.body) == {"detail", "code"}
    assert response.body["code"] == "not_found"


def test_invalid_body_is_422_envelope(client_for):
    alice = client_for("alice")
    response = alice.post("/api/networks", {"name": ""})
    assert response.status == 422
    assert response.body["code"] == "invalid"
    assert "subnet" in response.body["detail"]


def test_nodes_add_rename_group_remove(client_for, network_of, pair_device):
    alice = client_for("alice")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    device = pair_device(alice, hostname="Alice's Laptop.local")
    devices = alice.get("/api/devices").body
    assert [item["id"] for item in devices] == [device["device_id"]]
    added = alice.post(f"{base}/nodes", {"device_id": device["device_id"]})
    assert added.status == 201, added.body
    assert added.body["ip"] == "10.20.0.1"
    assert added.body["hostname"] == "alice-s-laptop"
    assert added.body["pk"] == device["identity"].pk
    node_id = added.body["id"]
    again = alice.post(f"{base}/nodes", {"device_id": device["device_id"]})
    assert again.status == 409
    patched = alice.patch(f"{base}/nodes/{node_id}", {"hostname": "lap", "groups": ["staff"]})
    assert patched.status == 200
    assert patched.body["hostname"] == "lap"
    assert patched.body["groups"] == ["staff"]
    bad = alice.patch(f"{base}/nodes/{node_id}", {"hostname": "-bad-"})
    assert bad.status == 400
    assert "not a DNS label" in bad.body["detail"]
    assert alice.get(f"{base}/nodes/{node_id}").body["online"] is False
    assert alice.delete(f"{base}/nodes/{node_id}").status == 204
    assert alice.get(f"{base}/nodes").body == []


def test_node_gets_default_groups_of_adding_member(client_for, network_of, pair_device):
    alice = client_for("alice")
    bob = client_for("bob")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    member = {"email": bob.email, "role": "editor", "default_groups": ["bobs"]}
    assert alice.post(f"{base}/members", member).status == 201
    device = pair_device(bob)
    added = bob.post(f"{base}/nodes", {"device_id": device["device_id"], "groups": ["extra"]})
    assert added.status == 201, added.body
    assert added.body["groups"] == ["bobs", "extra"]


def test_hostnames_made_unique(client_for, network_of, pair_device):
    alice = client_for("alice")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    first = pair_device(alice, hostname="box")
    second = pair_device(alice, hostname="box")
    one = alice.post(f"{base}/nodes", {"device_id": first["device_id"]}).body
    two = alice.post(f"{base}/nodes", {"device_id": second["device_id"]}).body
    assert one["hostname"] == "box"
    assert two["hostname"] == "box-2"
    assert {one["ip"], two["ip"]} == {"10.20.0.1", "10.20.0.2"}


def test_address_pool_exhausted(client_for, network_of, pair_device):
    alice = client_for("alice")
    network = network_of(alice, subnet="10.21.0.0/30")
    base = f"/api/networks/{network['id']}"
    first = pair_device(alice)
    second = pair_device(alice)
    assert alice.post(f"{base}/nodes", {"device_id": first["device_id"]}).status == 201
    response = alice.post(f"{base}/nodes", {"device_id": second["device_id"]})
    assert response.status == 409
    assert response.body["code"] == "address_pool_exhausted"


def test_members_roles_and_ownership(client_for, network_of):
    alice = client_for("alice")
    bob = client_for("bob")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    added = alice.post(f"{base}/members", {"email": bob.email, "role": "admin"})
    assert added.status == 201, added.body
    members = alice.get(f"{base}/members").body
    assert {item["user"]["email"]: item["role"] for item in members} == {
        alice.email: "owner",
        bob.email: "admin",
    }
    assert bob.delete(f"{base}/members/{alice.user_id}").status == 403
    assert bob.post(f"{base}/transfer", {"user_id": bob.user_id}).status == 403
    transferred = alice.post(f"{base}/transfer", {"user_id": bob.user_id})
    assert transferred.status == 200
    assert transferred.body["role"] == "owner"
    assert bob.get(f"/api/networks/{network['id']}").body["owner"]["email"] == bob.email
    assert alice.get(f"/api/networks/{network['id']}").body["role"] == "admin"


def test_member_unknown_email_is_404(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice)
    response = alice.post(
        f"/api/networks/{network['id']}/members", {"email": "nobody@example.test"}
    )
    assert response.status == 404
    assert "has signed in" in response.body["detail"]


def test_member_may_leave(client_for, network_of):
    alice = client_for("alice")
    bob = client_for("bob")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    alice.post(f"{base}/members", {"email": bob.email})
    assert bob.delete(f"{base}/members/{bob.user_id}").status == 204
    assert bob.get(base).status == 404


def test_owner_cannot_leave(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice)
    response = alice.delete(f"/api/networks/{network['id']}/members/{alice.user_id}")
    assert response.status == 403
    assert "Owner cannot be removed" in response.body["detail"]


def test_policies_and_resources(client_for, network_of, pair_device):
    alice = client_for("alice")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    device = pair_device(alice)
    gateway = alice.post(f"{base}/nodes", {"device_id": device["device_id"]}).body
    resource = alice.post(
        f"{base}/resources",
        {"dest": "*.Lab.Example.internal", "gateway_node_id": gateway["id"], "groups": ["lab"]},
    )
    assert resource.status == 201, resource.body
    assert resource.body["dest"] == "*.lab.example.internal"
    policy = alice.post(
        f"{base}/policies",
        {
            "name": "ssh",
            "sources": {"groups": ["staff"], "nodes": [gateway["id"]]},
            "destinations": {"resources": [resource.body["id"]]},
            "rules": [{"protocol": "tcp", "ports": [22, "8000-8080"]}],
            "conditions": {"os_types": ["linux"], "min_agent_version": "0.1.0"},
        },
    )
    assert policy.status == 201, policy.body
    assert policy.body["position"] == 1
    patched = alice.patch(f"{base}/policies/{policy.body['id']}", {"name": "ssh2"})
    assert patched.body["name"] == "ssh2"
    groups = {item["name"]: item for item in alice.get(f"{base}/groups").body}
    assert groups["ALL"]["nodes"] == 1
    assert groups["ALL"]["policies"] == 1
    assert groups["staff"]["policies"] == 1
    assert groups["lab"]["resources"] == 1
    blocked = alice.delete(f"{base}/nodes/{gateway['id']}")
    assert blocked.status == 409
    assert "gateway" in blocked.body["detail"]
    assert alice.delete(f"{base}/resources/{resource.body['id']}").status == 204
    # The policy named only that resource, so it permits nothing any more and is gone too.
    assert alice.get(f"{base}/policies/{policy.body['id']}").status == 404


def test_policy_invalid_port_uses_document_message(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice)
    response = alice.post(
        f"/api/networks/{network['id']}/policies",
        {
            "sources": {"groups": ["ALL"]},
            "destinations": {"groups": ["ALL"]},
            "rules": [{"protocol": "tcp", "ports": [70000]}],
        },
    )
    assert response.status == 400
    assert response.body["code"] == "invalid_document"
    assert "policy[1].rules[0].ports[0]" in response.body["detail"]


def test_resource_duplicate_dest_conflicts(client_for, network_of, pair_device):
    alice = client_for("alice")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}"
    device = pair_device(alice)
    gateway = alice.post(f"{base}/nodes", {"device_id": device["device_id"]}).body
    body = {"dest": "10.99.0.0/16", "gateway_node_id": gateway["id"]}
    assert alice.post(f"{base}/resources", body).status == 201
    assert alice.post(f"{base}/resources", body).status == 409


def test_join_keys_create_list_revoke(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}/join-keys"
    created = alice.post(base, {"name": "ci", "max_uses": 2, "groups": ["ci"]})
    assert created.status == 201
    assert created.body["secret"].startswith("nsj_")
    listed = alice.get(base).body
    assert [item["id"] for item in listed] == [created.body["id"]]
    assert "secret" not in listed[0]
    assert alice.delete(f"{base}/{created.body['id']}").status == 204
    assert alice.get(base).body[0]["revoked_at"] is not None


def test_invitations_rate_limited(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice)
    base = f"/api/networks/{network['id']}/invitations"
    for index in range(3):
        created = alice.post(base, {"email": f"guest{index}@example.test", "role": "member"})
        assert created.status == 201, created.body
    limited = alice.post(base, {"email": "guest9@example.test"})
    assert limited.status == 429
    listed = alice.get(base).body
    assert len(listed) == 3
    assert alice.delete(f"{base}/{listed[0]['id']}").status == 204


def _identities_document():
    from netsody_common.identity import Identity

    gw = Identity.generate(4, progress=False)
    laptop = Identity.generate(4, progress=False)
    return DOCUMENT.format(gw=gw.pk, laptop=laptop.pk)


def test_import_export_round_trip(client_for):
    alice = client_for("alice")
    text = _identities_document()
    created = alice.post("/api/networks/import", {"document": text})
    assert created.status == 201, created.body
    assert created.body["subnet"] == "10.30.0.0/24"
    base = f"/api/networks/{created.body['id']}"
    first = alice.get(f"{base}/document").body["document"]
    assert parse_document(first) == parse_document(text)
    replaced = alice.put(f"{base}/document", {"document": first})
    assert replaced.status == 200, replaced.body
    second = alice.get(f"{base}/document").body["document"]
    assert second == first
    data = tomllib.loads(second)
    assert data["policy"][0]["rules"] == [{"protocol": "tcp", "ports": [22, "8000-8080"]}]


def test_import_invalid_document_message_matches_common(client_for):
    alice = client_for("alice")
    text = 'network = "10.30.0.0/24"\n[[node]]\nhostname = "a"\nip = "10.30.0.300"\npk = "x"\n'
    response = alice.post("/api/networks/import", {"document": text})
    assert response.status == 400
    assert response.body["code"] == "invalid_document"
    with pytest.raises(DocumentError) as raised:
        parse_document(text)
    assert response.body["detail"] == str(raised.value)


def test_text_with_nul_rejected(client_for):
    alice = client_for("alice")
    response = alice.post("/api/networks", {"name": "a\u0000b", "subnet": "10.0.0.0/24"})
    assert response.status == 400
    assert "NUL" in response.body["detail"]


def test_unknown_path_and_method_get_envelope(client_for):
    alice = client_for("alice")
    missing = alice.get("/api/no-such-thing")
    assert missing.status == 404
    assert missing.body["code"] == "not_found"
    wrong = alice.put("/api/networks", {})
    assert wrong.status == 405
    assert wrong.body["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


def test_swagger_ui_configured_for_pkce(django_setup, dev_idp):
    from django.test import Client

    client = Client()
    page = client.get("/swagger-ui/")
    assert page.status_code == 200
    assert b'"clientId": "netsody-controller"' in page.content
    assert b"oauth2-redirect.html" in page.content
    init = client.get("/swagger-ui/init.js").content
    assert b"usePkceWithAuthorizationCodeGrant: true" in init
    assert client.get("/swagger-ui/oauth2-redirect.html").status_code == 200
    assert client.get("/swagger-ui/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/swagger-ui/static/secret.py").status_code == 404
    document = client.get("/api-doc").json()
    flows = document["components"]["securitySchemes"]["OAuth2"]["flows"]
    discovery = dev_idp.idp.discovery_document()
    assert flows["authorizationCode"]["authorizationUrl"] == discovery["authorization_endpoint"]
    assert flows["authorizationCode"]["tokenUrl"] == discovery["token_endpoint"]


def test_every_operation_declares_error_statuses(django_setup):
    from netsody_controller.swagger import openapi_document

    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            statuses = {str(code) for code in operation["responses"]}
            assert "422" in statuses or path == "/api/agent/challenge", (method, path)
            assert "503" in statuses, (method, path)
