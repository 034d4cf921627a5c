"""Hostile input to the user API: oversized bodies and documents that bypass the field checks."""

from __future__ import annotations

import pytest


def test_oversized_body_is_413_with_envelope(client_for):
    from django.conf import settings

    alice = client_for("alice")
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = alice.post("/api/networks", {"name": "x" * (limit + 1), "subnet": "10.0.0.0/24"})
    assert response.status == 413
    assert response.body["code"] == "invalid"
    assert str(limit) in response.body["detail"]


def test_oversized_join_body_is_413_without_auth(django_setup):
    from django.conf import settings
    from django.test import Client

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = '{"join_key": "' + "x" * (limit + 1) + '"}'
    response = Client().post("/api/agent/join", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "invalid"


def test_validation_location_names_body_once(client_for):
    alice = client_for("alice")
    response = alice.post("/api/networks", {"name": "office"})
    assert response.status == 422
    assert "body.subnet: Field required" in response.body["detail"]
    assert "body.body" not in response.body["detail"]


@pytest.mark.parametrize("subnet", ["0.0.0.0/0", "8.8.8.0/24", "127.0.0.0/8"])
def test_document_replace_refuses_public_subnet(client_for, network_of, subnet):
    alice = client_for("alice")
    network = network_of(alice, subnet="10.40.0.0/24")
    text = f'name = "office"\nnetwork = "{subnet}"\n'
    response = alice.put(f"/api/networks/{network['id']}/document", {"document": text})
    assert response.status == 400
    assert "private range" in response.body["detail"]
    assert alice.get(f"/api/networks/{network['id']}").body["subnet"] == "10.40.0.0/24"


def test_document_import_refuses_public_subnet(client_for):
    alice = client_for("alice")
    text = 'name = "office"\nnetwork = "0.0.0.0/0"\n'
    response = alice.post("/api/networks/import", {"document": text})
    assert response.status == 400
    assert "private range" in response.body["detail"]


def test_document_import_refuses_long_name(client_for):
    alice = client_for("alice")
    text = f'name = "{"n" * 64}"\nnetwork = "10.41.0.0/24"\n'
    response = alice.post("/api/networks/import", {"document": text})
    assert response.status == 400
    assert "63" in response.body["detail"]
    assert alice.get("/api/networks").body == []


def test_document_replace_refuses_long_name(client_for, network_of):
    alice = client_for("alice")
    network = network_of(alice, subnet="10.42.0.0/24")
    text = f'name = "{"n" * 64}"\nnetwork = "10.42.0.0/24"\n'
    response = alice.put(f"/api/networks/{network['id']}/document", {"document": text})
    assert response.status == 400
    assert alice.get(f"/api/networks/{network['id']}").body["name"] == "office"
