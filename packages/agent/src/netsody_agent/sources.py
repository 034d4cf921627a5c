"""Configuration sources: the controller (long poll), `file://` and `https://` URLs.

Each source's `next()` waits for the next configuration and returns a `Snapshot`, or None when
nothing changed. Failures raise `ConfigSourceError`; the daemon then keeps the last valid
configuration and retries with exponential backoff. Snapshots are cached on disk so a restarted
agent comes up with its last valid configuration even when the source is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import httpx

from netsody_agent.controller import ControllerClient
from netsody_agent.errors import ConfigSourceError, ControllerError
from netsody_agent.settings import CONFIG_CACHE_DIR, write_private_file
from netsody_agent.urls import redact_url, split_basic_auth

logger = logging.getLogger(__name__)

CONTROLLER_SOURCE_ID = "controller"
FILE_POLL_SECONDS = 1.0
HTTPS_POLL_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 15.0
MAX_DOCUMENT_BYTES = 16 << 20


@dataclass(frozen=True)
class NetworkText:
    """One network of a source: its id, name and TOML document text."""

    network_id: str
    name: str
    document: str


@dataclass(frozen=True)
class Snapshot:
    """Everything one source currently configures, with the revision when it has one."""

    source_id: str
    revision: int | None
    networks: tuple[NetworkText, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "revision": self.revision,
            "networks": [vars(net) for net in self.networks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            source_id=str(data["source_id"]),
            revision=data.get("revision"),
            networks=tuple(NetworkText(**net) for net in data["networks"]),
        )


class Source(Protocol):
    """A configuration source."""

    source_id: str
    description: str

    async def next(self) -> Snapshot | None: ...
    async def close(self) -> None: ...


class FileSource:
    """A TOML document in a local file, polled by modification time and size."""

    def __init__(
        self, source_id: str, url: str, *, poll_seconds: float = FILE_POLL_SECONDS
    ) -> None:
        self.source_id = source_id
        self.description = url
        self.path = Path(unquote(urlsplit(url).path))
        self.poll_seconds = poll_seconds
        self._seen: tuple[int, int] | None = None

    async def next(self) -> Snapshot | None:
        if self._seen is not None:
            await asyncio.sleep(self.poll_seconds)
        try:
            stat = self.path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if key == self._seen:
                return None
            # SECURITY: read at most one byte over the limit, so a huge file or a device such as
            # /dev/zero cannot exhaust the daemon's memory.
            with self.path.open("rb") as file:
                data = file.read(MAX_DOCUMENT_BYTES + 1)
            if len(data) > MAX_DOCUMENT_BYTES:
                raise ConfigSourceError(
                    f"{self.path} is larger than {MAX_DOCUMENT_BYTES} bytes: shorten the document"
                )
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._seen = None
            raise ConfigSourceError(f"cannot read {self.path}: {exc}") from exc
        self._seen = key
        return Snapshot(self.source_id, None, (NetworkText(self.source_id, "", text),))

    def forget(self) -> None:
        """Make the next call read the file again even if it did not change."""
        self._seen = None

    async def close(self) -> None:
        return None


def _check_status(description: str, status: int) -> None:
    if status == 200:
        return
    hint = ": check the user and password in the URL" if status == 401 else ""
    raise ConfigSourceError(f"GET {description} returned HTTP {status}{hint}")


async def _read_limited(description: str, response: httpx.Response) -> bytes:
    """Return the body, stopping once it exceeds MAX_DOCUMENT_BYTES (never reading it all)."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_DOCUMENT_BYTES:
            raise ConfigSourceError(
                f"{description} is larger than {MAX_DOCUMENT_BYTES} bytes: shorten the document"
            )
    return bytes(data)


class HttpsSource:
    """A TOML document behind an https:// URL (basic auth from the URL), polled with ETags."""

    def __init__(
        self, source_id: str, url: str, *, poll_seconds: float = HTTPS_POLL_SECONDS
    ) -> None:
        self.source_id = source_id
        # SECURITY: the description is what logs and status show, so it carries no password.
        self.description = redact_url(url)
        self.url, auth = split_basic_auth(url)
        self.poll_seconds = poll_seconds
        self._client = httpx.AsyncClient(auth=auth, timeout=HTTP_TIMEOUT_SECONDS)
        self._etag: str | None = None
        self._polled = False

    async def next(self) -> Snapshot | None:
        if self._polled:
            await asyncio.sleep(self.poll_seconds)
        self._polled = True
        headers = {"If-None-Match": self._etag} if self._etag else {}
        try:
            async with self._client.stream("GET", self.url, headers=headers) as response:
                if response.status_code == 304:
                    return None
                _check_status(self.description, response.status_code)
                data = await _read_limited(self.description, response)
                etag = response.headers.get("ETag")
        except httpx.HTTPError as exc:
            raise ConfigSourceError(f"GET {self.description} failed: {exc!r}") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigSourceError(f"{self.description} is not UTF-8 text: {exc}") from exc
        self._etag = etag
        return Snapshot(self.source_id, None, (NetworkText(self.source_id, "", text),))

    def forget(self) -> None:
        """Drop the ETag so the next fetch returns the document even if it did not change."""
        self._etag = None

    async def close(self) -> None:
        await self._client.aclose()


class ControllerSource:
    """The controller's `GET /api/agent/config`, long-polled with the last revision."""

    def __init__(self, client: ControllerClient, revision: int | None = None) -> None:
        self.source_id = CONTROLLER_SOURCE_ID
        self.description = client.base
        self.client = client
        self.revision = revision

    async def next(self) -> Snapshot | None:
        try:
            body = await self.client.fetch_config(self.revision)
        except ControllerError as exc:
            raise ConfigSourceError(str(exc)) from exc
        try:
            revision = int(body["revision"])
            networks = tuple(
                NetworkText(str(net["id"]), str(net.get("name", "")), str(net["document"]))
                for net in body["networks"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigSourceError(
                f"configuration from {self.description} is malformed: {exc!r}"
            ) from exc
        if revision == self.revision:
            return None
        self.revision = revision
        return Snapshot(self.source_id, revision, networks)

    def forget(self) -> None:
        """Make the next fetch return the current configuration without waiting."""
        self.revision = None

    async def close(self) -> None:
        await self.client.close()


class SnapshotCache:
    """The last valid snapshot of each source, under `<state>/config/<source_id>.json`."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / CONFIG_CACHE_DIR

    def load(self, source_id: str) -> Snapshot | None:
        path = self.directory / f"{source_id}.json"
        try:
            return Snapshot.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring the unreadable cached configuration %s: %s", path, exc)
            return None

    def store(self, snapshot: Snapshot) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{snapshot.source_id}.json"
        write_private_file(path, json.dumps(snapshot.to_json()))

    def remove(self, source_id: str) -> None:
        (self.directory / f"{source_id}.json").unlink(missing_ok=True)
