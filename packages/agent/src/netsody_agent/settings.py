"""Agent settings stored in the state directory (`settings.json`, mode 0600).

The file contains the controller URL, the OIDC settings used by `netsody login`, the super peers,
the node credential issued by the controller, and the manually managed networks. It is written
atomically (temporary file, then rename) so a crash never leaves half a file behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from netsody_agent.errors import SettingsError
from netsody_agent.urls import redact_url

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
IDENTITY_FILE = "identity.key"
LOCAL_TOKEN_FILE = "local-token"  # noqa: S105 (a file name, not a secret)
SOCKET_FILE = "netsody.sock"
CONFIG_CACHE_DIR = "config"
DEFAULT_STATE_DIR = Path("/var/lib/netsody")


@dataclass(frozen=True)
class ManualNetwork:
    """A manually managed network: a TOML document read from a `file://` or `https://` URL."""

    url: str
    enabled: bool = True

    @property
    def source_id(self) -> str:
        """A stable id derived from the URL, used for the cache file and in status output."""
        return "url-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        # SECURITY: the URL may carry basic-auth credentials.
        return f"ManualNetwork(url={redact_url(self.url)!r}, enabled={self.enabled})"


@dataclass(frozen=True)
class Settings:
    """Everything the agent stores about its controller, login and networks."""

    controller: str | None = None
    auth_url: str | None = None
    auth_client_id: str | None = None
    super_peers: tuple[str, ...] = ()
    node_credential: str | None = field(default=None, repr=False)
    manual_networks: tuple[ManualNetwork, ...] = ()

    def with_network(self, url: str) -> Settings:
        """Return settings with `url` added as an enabled manual network (no duplicate)."""
        if any(net.url == url for net in self.manual_networks):
            return self
        return replace(self, manual_networks=(*self.manual_networks, ManualNetwork(url)))

    def find_network(self, url: str) -> ManualNetwork | None:
        """Return the manual network whose URL, redacted URL or source id equals `url`."""
        for net in self.manual_networks:
            if url in (net.url, redact_url(net.url), net.source_id):
                return net
        return None


def _split_url(url: str, label: str) -> SplitResult:
    """Split `url`, raising `SettingsError` for a malformed host or port (never ValueError).

    SECURITY: the message leaves the URL out, because it may carry basic-auth credentials.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port, which raises ValueError when out of range
    except ValueError as exc:
        raise SettingsError(
            f"{label} is not a valid URL ({exc}): check its host and port"
        ) from None
    return parts


def validate_network_url(url: str) -> str:
    """Return `url` if it is a `file://` or `https://` URL, else raise `SettingsError`."""
    parts = _split_url(url, "network URL")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            # file://tmp/x.toml names host "tmp" and path /x.toml, which is never what was meant.
            raise SettingsError(
                f"network URL {url!r} names host {parts.netloc!r}: use three slashes for a "
                f"local file, e.g. file:///{parts.netloc}{parts.path}"
            )
        if not parts.path.startswith("/"):
            raise SettingsError(
                f"network URL {url!r} needs an absolute path, e.g. file:///etc/x.toml"
            )
        return url
    if parts.scheme in ("https", "http") and parts.hostname:
        # NOTE: plain http is accepted for loopback test servers only.
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SettingsError(
                f"network URL {redact_url(url)!r} uses http: use https:// (http only for loopback)"
            )
        return url
    raise SettingsError(
        f"network URL {redact_url(url)!r} is not supported: use file:///path or https://host/path"
    )


def validate_http_url(url: str, *, option: str) -> str:
    """Return `url` stripped of a trailing slash if it is an http(s) URL with a host."""
    parts = _split_url(url, option)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError(f"{option} {url!r} is not an http(s) URL: use https://host[/path]")
    return url.rstrip("/")


def load_settings(state_dir: Path) -> Settings:
    """Read the settings file; a missing file gives default settings."""
    path = state_dir / SETTINGS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}; fix or delete it") from exc
    try:
        return Settings(
            controller=raw.get("controller"),
            auth_url=raw.get("auth_url"),
            auth_client_id=raw.get("auth_client_id"),
            super_peers=tuple(raw.get("super_peers", ())),
            node_credential=raw.get("node_credential"),
            manual_networks=tuple(
                ManualNetwork(url=str(item["url"]), enabled=bool(item.get("enabled", True)))
                for item in raw.get("manual_networks", ())
            ),
        )
    except (TypeError, KeyError, AttributeError) as exc:
        raise SettingsError(f"settings file {path} has an invalid entry: {exc}") from exc


def save_settings(state_dir: Path, settings: Settings) -> None:
    """Write the settings file atomically with mode 0600."""
    data = asdict(settings)
    data["super_peers"] = list(settings.super_peers)
    data["manual_networks"] = [asdict(net) for net in settings.manual_networks]
    write_private_file(state_dir / SETTINGS_FILE, json.dumps(data, indent=2) + "\n")


def write_private_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by the owner only (mode 0600)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
