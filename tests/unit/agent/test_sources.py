"""Configuration sources: https:// with basic auth and ETags, file://, and URL redaction."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from netsody_agent import sources
from netsody_agent.errors import ConfigSourceError
from netsody_agent.settings import ManualNetwork, Settings
from netsody_agent.sources import FileSource, HttpsSource, Snapshot, SnapshotCache
from netsody_agent.urls import controller_api_base, redact_url, split_basic_auth
from netsody_common.selfsigned import self_signed_certificate, write_pem

USER, PASSWORD = "ops", "pa55:word"
BODY = 'name = "lab"\nnetwork = "10.77.0.0/24"\n'


class _DocumentServer(ThreadingHTTPServer):
    body = BODY
    etag = '"v1"'
    content_length: int | None = None
    requests: list[dict[str, str]]


class _Handler(BaseHTTPRequestHandler):
    server: _DocumentServer

    def do_GET(self) -> None:
        self.server.requests.append(dict(self.headers))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        if self.headers.get("If-None-Match") == self.server.etag:
            self.send_response(304)
            self.end_headers()
            return
        data = self.server.body.encode()
        self.send_response(200)
        self.send_header("ETag", self.server.etag)
        self.send_header("Content-Length", str(self.server.content_length or len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[_DocumentServer]:
    httpd = _DocumentServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _url(server: _DocumentServer, password: str = PASSWORD) -> str:
    quoted = password.replace(":", "%3A")
    return f"http://{USER}:{quoted}@127.0.0.1:{server.server_address[1]}/lab.toml"


async def test_https_source_basic_auth_and_etag(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    source = HttpsSource("url-1", _url(server), poll_seconds=0)
    try:
        first = await source.next()
        assert first is not None
        assert first.networks[0].document == BODY
        assert await source.next() is None
        assert server.requests[-1]["If-None-Match"] == '"v1"'
        server.body, server.etag = BODY + "# changed\n", '"v2"'
        changed = await source.next()
        assert changed is not None
        assert changed.networks[0].document.endswith("# changed\n")
    finally:
        await source.close()
    assert PASSWORD not in caplog.text
    assert "pa55" not in source.description


async def test_https_source_wrong_password(server) -> None:
    source = HttpsSource("url-1", _url(server, "wrong"), poll_seconds=0)
    try:
        with pytest.raises(ConfigSourceError) as error:
            await source.next()
    finally:
        await source.close()
    message = str(error.value)
    assert "HTTP 401: check the user and password in the URL" in message
    assert "wrong" not in message


async def test_https_source_unreachable() -> None:
    source = HttpsSource("url-1", "http://u:secret@127.0.0.1:9/x.toml", poll_seconds=0)
    try:
        with pytest.raises(ConfigSourceError, match=r"GET http://u:\*\*\*@127\.0\.0\.1:9/x\.toml"):
            await source.next()
    finally:
        await source.close()


async def test_file_source_reports_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(BODY)
    source = FileSource("url-2", path.as_uri(), poll_seconds=0)
    assert (await source.next()) is not None
    assert (await source.next()) is None
    path.write_text(BODY + "# more\n")
    snapshot = await source.next()
    assert snapshot is not None
    assert snapshot.networks[0].document.endswith("# more\n")
    path.unlink()
    with pytest.raises(ConfigSourceError, match="cannot read"):
        await source.next()


def test_snapshot_cache_round_trip(tmp_path: Path) -> None:
    cache = SnapshotCache(tmp_path)
    source = FileSource("url-3", (tmp_path / "x.toml").as_uri())
    snapshot = Snapshot(source.source_id, 7, ())
    cache.store(snapshot)
    assert cache.load("url-3") == snapshot
    assert (tmp_path / "config" / "url-3.json").stat().st_mode & 0o777 == 0o600
    cache.remove("url-3")
    assert cache.load("url-3") is None


REDACT_CASES = [
    ("https://u:p@h.example/n.toml", "https://u:***@h.example/n.toml"),
    ("https://u:p@h.example:8443/n.toml?x=1", "https://u:***@h.example:8443/n.toml?x=1"),
    ("https://u@h.example/n.toml", "https://u@h.example/n.toml"),
    ("https://h.example/n.toml", "https://h.example/n.toml"),
    ("file:///etc/n.toml", "file:///etc/n.toml"),
]


@pytest.mark.parametrize(("url", "expected"), REDACT_CASES)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_split_basic_auth() -> None:
    assert split_basic_auth("https://u:p@h.example/n") == ("https://h.example/n", ("u", "p"))
    assert split_basic_auth("https://h.example/n") == ("https://h.example/n", None)
    assert split_basic_auth("https://u:a%3Ab@h.example/n")[1] == ("u", "a:b")


@pytest.mark.parametrize(
    ("url", "base"),
    [("https://c.example/api", "https://c.example/api"),
     ("https://c.example/api/", "https://c.example/api"),
     ("https://c.example", "https://c.example/api")],
)  # fmt: skip
def test_controller_api_base(url: str, base: str) -> None:
    assert controller_api_base(url) == base


def test_settings_repr_hides_secrets() -> None:
    settings = Settings(
        node_credential="nsn_secret",
        manual_networks=(ManualNetwork("https://u:hunter2@h.example/n.toml"),),
    )
    assert "nsn_secret" not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert settings.find_network("https://u:***@h.example/n.toml") is not None


def _self_signed(directory: Path) -> tuple[Path, Path]:
    certificate, key = self_signed_certificate(
        "127.0.0.1", ip_addresses=["127.0.0.1"], days=1, ca=True
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    write_pem(certificate, key, cert_path=cert_path, key_path=key_path)
    return cert_path, key_path


async def test_https_source_trusts_ssl_cert_file(server, tmp_path, monkeypatch) -> None:
    import ssl

    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    url = _url(server).replace("http://", "https://")

    untrusted = HttpsSource("url-1", url, poll_seconds=0)
    try:
        with pytest.raises(ConfigSourceError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.next()
    finally:
        await untrusted.close()

    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    trusted = HttpsSource("url-1", url, poll_seconds=0)
    try:
        snapshot = await trusted.next()
    finally:
        await trusted.close()
    assert snapshot is not None
    assert snapshot.networks[0].document == BODY


async def test_file_source_rejects_oversized(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "MAX_DOCUMENT_BYTES", 64)
    path = tmp_path / "big.toml"
    path.write_text(BODY + "#" * 100)
    source = FileSource("url-5", path.as_uri(), poll_seconds=0)
    with pytest.raises(ConfigSourceError, match="larger than 64 bytes"):
        await source.next()


async def test_https_source_stops_reading_oversized(server, monkeypatch) -> None:
    monkeypatch.setattr(sources, "MAX_DOCUMENT_BYTES", 64)
    # The server announces far more than it sends: a reader that waits for the whole body
    # fails on the short body instead of stopping at the limit.
    server.body = BODY + "#" * 100
    server.content_length = 1 << 40
    source = HttpsSource("url-6", _url(server), poll_seconds=0)
    try:
        with pytest.raises(ConfigSourceError, match="larger than 64 bytes"):
            await source.next()
    finally:
        await source.close()
