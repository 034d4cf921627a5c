"""Profile pictures: fetched from a local picture host test double into real S3 (MinIO),
then served by the API to the user and to fellow members only.

Real Gravatar and identity providers are on the internet, which tests may not reach, so a small
HTTP server on 127.0.0.1 stands in for both. Its paths: `/ok.png` a PNG, `/big.png` an oversize
PNG with an honest Content-Length, `/endless.png` an oversize PNG without Content-Length,
`/page.html` HTML, `/broken.png` a 500, `/to-file` and `/to-ok` redirects, `/avatar/<hash>` the
Gravatar image; anything else is a 404.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

MAX_BYTES = 1024

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56
LARGE_BYTES = 4096


@dataclass
class PictureHost:
    url: str
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    host: PictureHost

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str, *, length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.host.requests.append(self.path)
        path = self.path.split("?")[0]
        if path == "/ok.png" or path.startswith("/avatar/"):
            self._send(200, PNG, "image/png")
        elif path == "/big.png":
            self._send(200, PNG + b"\x00" * LARGE_BYTES, "image/png")
        elif path == "/endless.png":
            # HTTP/1.0 without Content-Length: the body ends when the connection closes.
            self._send(200, PNG + b"\x00" * LARGE_BYTES, "image/png", length=False)
        elif path == "/page.html":
            self._send(200, b"<html></html>", "text/html; charset=utf-8")
        elif path == "/broken.png":
            self._send(500, b"failed", "text/plain")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/to-ok":
            self._redirect("/ok.png")
        else:
            self._send(404, b"not found", "text/plain")


@contextmanager
def running_picture_host() -> Iterator[PictureHost]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.host = PictureHost(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler.host
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def picture_host():
    with running_picture_host() as host:
        yield host


@pytest.fixture
def picture_settings(django_setup, s3_settings, picture_host):
    """S3 settings of the fixture with a bucket that does not exist yet, and the test double
    as Gravatar."""
    from django.test import override_settings

    overrides = {
        "S3_ENDPOINT_URL": s3_settings["endpoint_url"],
        "S3_ACCESS_KEY_ID": s3_settings["access_key"],
        "S3_SECRET_ACCESS_KEY": s3_settings["secret_key"],
        "S3_REGION": s3_settings["region"],
        "S3_BUCKET": f"netsody-pictures-{secrets.token_hex(4)}",
        "S3_FORCE_PATH_STYLE": True,
        "GRAVATAR_BASE_URL": f"{picture_host.url}/avatar",
        "GRAVATAR_SIZE": 80,
        "GRAVATAR_DEFAULT": "identicon",
        "PROFILE_PICTURE_MAX_BYTES": MAX_BYTES,
    }
    with override_settings(**overrides):
        yield overrides


def _set_provider_picture(user_id: str, url: str) -> None:
    from netsody_controller.accounts.models import User

    User.objects.filter(id=user_id).update(picture=url)


def _fetch(user_id: str):
    from netsody_controller.accounts.tasks import fetch_profile_picture_task

    return fetch_profile_picture_task(user_id)


def _picture(client, user_id: str):
    from django.test import Client

    return Client().get(
        f"/api/users/{user_id}/picture", HTTP_AUTHORIZATION=f"Bearer {client.token}"
    )


def test_gravatar_picture_is_stored_and_served(client_for, picture_settings, picture_host):
    alice = client_for("alice")
    assert _fetch(alice.user_id) is True
    digest = hashlib.sha256(alice.email.lower().encode()).hexdigest()
    assert f"/avatar/{digest}?s=80&d=identicon" in picture_host.requests
    response = _picture(alice, alice.user_id)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == PNG
    assert alice.get("/api/me").body["picture_url"] == f"/api/users/{alice.user_id}/picture"


def test_provider_picture_wins_over_gravatar(client_for, picture_settings, picture_host):
    alice = client_for("alice")
    _set_provider_picture(alice.user_id, f"{picture_host.url}/to-ok")
    assert _fetch(alice.user_id) is True
    assert _picture(alice, alice.user_id).status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/big.png", "/endless.png", "/page.html", "/missing.png", "/to-file"],
    ids=["oversize", "oversize-without-length", "wrong-content-type", "404", "redirect-to-file"],
)
def test_rejected_picture_not_stored(client_for, picture_settings, picture_host, path):
    from netsody_controller.accounts.models import User

    alice = client_for("alice")
    _set_provider_picture(alice.user_id, f"{picture_host.url}{path}")
    assert _fetch(alice.user_id) is False
    user = User.objects.get(id=alice.user_id)
    assert user.picture_key == ""
    # The rejected source is remembered, so the next sign-in does not fetch it again.
    assert user.picture_source == f"{picture_host.url}{path}"
    response = _picture(alice, alice.user_id)
    assert response.status_code == 404
    assert alice.get("/api/me").body["picture_url"] is None


def test_server_error_is_raised_for_a_retry(client_for, picture_settings, picture_host):
    from netsody_controller.accounts.pictures import PictureUnavailableError

    alice = client_for("alice")
    _set_provider_picture(alice.user_id, f"{picture_host.url}/broken.png")
    # Called directly, Celery's retry re-raises the cause instead of scheduling a new attempt.
    with pytest.raises(PictureUnavailableError, match="returned HTTP 500"):
        _fetch(alice.user_id)


def test_picture_visible_to_fellow_members_only(client_for, network_of, picture_settings):
    alice, bob, carol = client_for("alice"), client_for("bob"), client_for("carol")
    assert _fetch(alice.user_id) is True
    network = network_of(alice)
    member = {"email": bob.email, "role": "member"}
    assert alice.post(f"/api/networks/{network['id']}/members", member).status == 201
    assert _picture(bob, alice.user_id).status_code == 200
    assert _picture(carol, alice.user_id).status_code == 404
    assert _picture(carol, carol.user_id).status_code == 404


def test_sign_in_queues_the_fetch(client_for, picture_settings, redis_url):
    """A first sign-in puts a fetch task for the user on the Celery queue in Redis."""
    alice = client_for("alice")
    messages = redis.Redis.from_url(redis_url).lrange("netsody", 0, -1)
    queued = []
    for raw in messages:
        message = json.loads(raw)
        if message["headers"]["task"].endswith("fetch_profile_picture_task"):
            queued.append(json.loads(base64.b64decode(message["body"]))[0])
    assert [alice.user_id] in queued


@pytest.fixture
def broken_broker():
    """Point the Celery app at a closed loopback port, then restore its broker."""
    from netsody_controller.celery import app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    original = app.conf.broker_url
    app.pool.force_close_all()
    app._pool = None
    app.conf.broker_url = f"redis://127.0.0.1:{closed_port}/0"
    try:
        yield
    finally:
        app.pool.force_close_all()
        app._pool = None
        app.conf.broker_url = original


def test_sign_in_survives_broker_outage(client_for, picture_settings, broken_broker, caplog):
    with caplog.at_level(logging.ERROR):
        alice = client_for("alice")
    assert alice.get("/api/me").status == 200
    assert "queueing a profile picture fetch failed" in caplog.text


def test_storage_outage_is_503(client_for, picture_settings):
    from django.test import override_settings

    alice = client_for("alice")
    assert _fetch(alice.user_id) is True
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with override_settings(S3_ENDPOINT_URL=f"http://127.0.0.1:{closed_port}"):
        response = _picture(alice, alice.user_id)
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
