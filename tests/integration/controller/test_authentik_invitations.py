"""Netsody invitations that also create Authentik invitations.

Authentik is not available to the tests, so `AuthentikDouble`, a small HTTP server on 127.0.0.1,
is a test double of its invitation endpoint: it records each request and responds with a
configured status and a body shaped like Authentik's.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN = "authentik-api-token-for-tests"
FLOW_ID = "9a1f2c55-0000-4000-8000-000000000001"
FLOW_SLUG = "netsody-enrollment"
EXPIRES_SECS = 3600
INVITATIONS_PATH = "/api/v3/stages/invitation/invitations/"


@dataclass
class AuthentikDouble:
    """The recorded requests, and the status and body of the next responses."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 201
    error_body: dict[str, Any] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    double: AuthentikDouble

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.double.requests.append(
            {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
        )
        if self.double.status == 201:
            reply = {
                "pk": str(uuid.uuid4()),
                "name": body.get("name"),
                "flow": body.get("flow"),
                "flow_obj": {"pk": body.get("flow"), "slug": FLOW_SLUG},
                "fixed_data": body.get("fixed_data"),
                "single_use": body.get("single_use"),
            }
        else:
            reply = self.double.error_body
        payload = json.dumps(reply).encode()
        self.send_response(self.double.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def running_double() -> Iterator[AuthentikDouble]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.double = AuthentikDouble(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler.double
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def authentik(django_setup):
    from django.test import override_settings

    with running_double() as double:
        overrides = {
            "AUTHENTIK_BASE_URL": double.url + "/",
            "AUTHENTIK_TOKEN": TOKEN,
            "AUTHENTIK_INVITATION_FLOW_ID": FLOW_ID,
            "AUTHENTIK_INVITATION_EXPIRES_SECS": EXPIRES_SECS,
            "INVITATION_RATE_LIMIT_USER": 100,
        }
        with override_settings(**overrides):
            yield double


def _invite(client, network: dict, email: str = "dana@example.test"):
    return client.post(f"/api/networks/{network['id']}/invitations", {"email": email})


def test_request_shape_and_link(client_for, network_of, authentik):
    alice = client_for("alice")
    network = network_of(alice)
    before = datetime.now(UTC)
    response = _invite(alice, network)
    assert response.status == 201, response.body
    [request] = authentik.requests
    assert request["path"] == INVITATIONS_PATH
    assert request["authorization"] == f"Bearer {TOKEN}"
    body = request["body"]
    assert body["flow"] == FLOW_ID
    assert body["fixed_data"] == {"email": "dana@example.test"}
    assert body["single_use"] is True
    assert body["name"] == f"netsody-{response.body['id']}"
    expires = datetime.fromisoformat(body["expires"])
    assert before + timedelta(seconds=EXPIRES_SECS - 60) < expires
    assert expires < before + timedelta(seconds=EXPIRES_SECS + 60)
    link = response.body["enrollment_url"]
    assert link.startswith(f"{authentik.url}/if/flow/{FLOW_SLUG}/?itoken=")
    listed = alice.get(f"/api/networks/{network['id']}/invitations").body
    assert listed[0]["enrollment_url"] == link


def test_authentik_error_is_clear_api_error(client_for, network_of, authentik, caplog):
    alice = client_for("alice")
    network = network_of(alice)
    authentik.status = 400
    authentik.error_body = {"flow": ["Invalid pk - object does not exist."]}
    with caplog.at_level(logging.DEBUG):
        response = _invite(alice, network)
    assert response.status == 502
    assert response.body["code"] == "upstream_failed"
    assert "Authentik returned HTTP 400" in response.body["detail"]
    assert "Invalid pk" in response.body["detail"]
    assert TOKEN not in response.body["detail"]
    assert "Authentik rejected an invitation" in caplog.text
    assert TOKEN not in caplog.text
    # No Netsody invitation is left without its Authentik counterpart.
    assert alice.get(f"/api/networks/{network['id']}/invitations").body == []


def test_success_logs_no_token(client_for, network_of, authentik, caplog):
    alice = client_for("alice")
    network = network_of(alice)
    with caplog.at_level(logging.DEBUG):
        assert _invite(alice, network).status == 201
    assert TOKEN not in caplog.text


def test_unreachable_authentik_is_502(client_for, network_of, authentik):
    from django.test import override_settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    alice = client_for("alice")
    network = network_of(alice)
    with override_settings(AUTHENTIK_BASE_URL=f"http://127.0.0.1:{closed_port}"):
        response = _invite(alice, network)
    assert response.status == 502
    assert "could not be reached" in response.body["detail"]


@pytest.mark.parametrize(
    "unset", ["AUTHENTIK_BASE_URL", "AUTHENTIK_TOKEN", "AUTHENTIK_INVITATION_FLOW_ID"]
)
def test_unset_setting_skips_authentik(client_for, network_of, authentik, unset):
    from django.test import override_settings

    alice = client_for("alice")
    network = network_of(alice)
    with override_settings(**{unset: ""}):
        response = _invite(alice, network)
    assert response.status == 201
    assert response.body["enrollment_url"] is None
    assert authentik.requests == []


def test_email_carries_enrollment_link(client_for, network_of, authentik):
    from django.core import mail

    from netsody_controller.networks.tasks import send_invitation_task

    alice = client_for("alice")
    network = network_of(alice)
    response = _invite(alice, network, email="erin@example.test")
    assert send_invitation_task(response.body["id"]) is True
    [message] = [item for item in mail.outbox if item.to == ["erin@example.test"]]
    assert response.body["enrollment_url"] in message.body
