"""Typed readers for the controller's environment variables.

Every setting of the controller comes from the environment (the operator's `.env`), read through
the small helpers here so that a bad value fails at start with a message naming the variable, the
value and what to write instead. `settings.py` is the only caller. Tests call the helpers with an
explicit mapping.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from netsody_controller.errors import ConfigError

logger = logging.getLogger(__name__)

Environ = Mapping[str, str]

_LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "off": "CRITICAL",
}
SECRET_BYTES = 32


def env_str(env: Environ, name: str, default: str = "") -> str:
    """Return the variable stripped of surrounding blanks and quotes, or `default` when unset."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def env_int(env: Environ, name: str, default: int, *, minimum: int = 0) -> int:
    """Return the variable as an integer of at least `minimum`, or `default` when empty or unset."""
    raw = env_str(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer: set it to a whole number") from None
    if value < minimum:
        raise ConfigError(
            f"{name}={value} is below the minimum {minimum}: set it to {minimum} or more"
        )
    return value


def env_bool(env: Environ, name: str, default: bool) -> bool:
    """Return the variable as a boolean (true/false, 1/0, yes/no, on/off)."""
    raw = env_str(env, name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: set it to true or false")


def env_list(env: Environ, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Return the comma-separated items of the variable, blanks dropped."""
    raw = env_str(env, name)
    if not raw:
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def env_networks(
    env: Environ, name: str, default: tuple[str, ...] = ()
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Return the comma-separated IP networks of the variable (a bare address is a /32 or /128)."""
    networks = []
    for item in env_list(env, name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name}: {item!r} is not an IP network: write CIDR blocks such as 127.0.0.1/32"
            ) from None
    return tuple(networks)


def parse_rust_log(value: str) -> str | None:
    """Return the Python level of the first bare level in a RUST_LOG filter, or None.

    `info,sqlx::query=warn` gives "INFO": directives with a `=` target a module of the former
    Rust controller and have no counterpart here, so only a bare level counts.
    """
    for directive in value.split(","):
        token = directive.strip().lower()
        if token and "=" not in token and "::" not in token and token in _LOG_LEVELS:
            return _LOG_LEVELS[token]
    return None


def log_level(env: Environ, default: str = "INFO") -> str:
    """Return the log level from NETSODY_LOG_LEVEL, else LOG_LEVEL, else RUST_LOG, else default."""
    for name in ("NETSODY_LOG_LEVEL", "LOG_LEVEL"):
        raw = env_str(env, name)
        if raw:
            level = _LOG_LEVELS.get(raw.lower())
            if level is None:
                choices = ", ".join(sorted(_LOG_LEVELS))
                raise ConfigError(f"{name}={raw!r} is not a log level: use one of {choices}")
            return level
    return parse_rust_log(env_str(env, "RUST_LOG")) or default


def database_settings(env: Environ) -> dict[str, object]:
    """Return Django's DATABASES["default"] from DATABASE_URL or the POSTGRES_* variables.

    DATABASE_URL takes `postgresql://user:password@host:port/name` (or `postgres://`) and, for
    development only, `sqlite:///path`. Without it, the compose stack's POSTGRES_DB, POSTGRES_USER,
    POSTGRES_PASSWORD on host `netsody-controller-db` (POSTGRES_HOST, POSTGRES_PORT) are used.
    """
    url = env_str(env, "DATABASE_URL")
    if not url:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env_str(env, "POSTGRES_DB", "service-db"),
            "USER": env_str(env, "POSTGRES_USER", "service"),
            "PASSWORD": env_str(env, "POSTGRES_PASSWORD"),
            "HOST": env_str(env, "POSTGRES_HOST", "netsody-controller-db"),
            "PORT": env_int(env, "POSTGRES_PORT", 5432, minimum=1),
        }
    return parse_database_url(url)


def parse_database_url(url: str) -> dict[str, object]:
    """Return a Django database dict for a postgresql:// or sqlite:// URL."""
    if url.startswith("sqlite://"):
        # sqlite:///relative.db and sqlite:////absolute/path.db, as dj-database-url reads them.
        rest = unquote(url.removeprefix("sqlite://"))
        path = rest[1:] if rest.startswith("/") else rest
        # NOTE: IMMEDIATE takes the write lock when a transaction begins, so concurrent requests
        # wait up to `timeout` seconds instead of failing with "database is locked" when two
        # read transactions both try to upgrade to a write.
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or ":memory:",
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    parts = urlsplit(url)
    if parts.scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ConfigError(
            f"DATABASE_URL has the scheme {parts.scheme!r}: use postgresql://user:password@host:port/db"
            " (or sqlite:///path for development)"
        )
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": parts.port or 5432,
        "OPTIONS": options,
    }


@dataclass(frozen=True)
class CacheLimits:
    """Size and lifetime of an in-process verification cache."""

    max_entries: int
    ttl_secs: int


def cache_limits(env: Environ, prefix: str, *, max_entries: int, ttl_secs: int) -> CacheLimits:
    """Read `<prefix>_MAX_ENTRIES` and `<prefix>_TTL_SECS`."""
    return CacheLimits(
        max_entries=env_int(env, f"{prefix}_MAX_ENTRIES", max_entries, minimum=1),
        ttl_secs=env_int(env, f"{prefix}_TTL_SECS", ttl_secs, minimum=0),
    )


def load_or_create_secret(path: Path) -> bytes:
    """Return the controller secret stored at `path`, creating it with mode 0600 when missing.

    The file holds the hex encoding of 32 random bytes. Raises ConfigError when the file is
    group- or world-readable or does not contain such a value.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(SECRET_BYTES) + "\n")
    logger.info("created the controller secret", extra={"path": str(path)})
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    # SECURITY: every node credential derives from this secret, so a readable copy mints them.
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"NETSODY_CONTROLLER_SECRET_PATH={path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):o}): run chmod 600 {path}"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) < SECRET_BYTES // 2:
        raise ConfigError(
            f"NETSODY_CONTROLLER_SECRET_PATH={path} does not contain a hex secret of at least "
            f"{SECRET_BYTES // 2} bytes: delete the file to have a new one generated "
            "(this invalidates every node credential)"
        )
    return value
