"""Settings parsing: typed environment helpers, RUST_LOG, database URLs and the secret file."""

from __future__ import annotations

import ipaddress
import os
import stat

import pytest

from netsody_controller import config
from netsody_controller.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("info,sqlx::query=warn", "INFO"),
        ("debug", "DEBUG"),
        ("sqlx::query=warn,warn", "WARNING"),
        ("trace", "DEBUG"),
        ("netsody=debug", None),
        ("", None),
        (" error , tower=info", "ERROR"),
    ],
)
def test_parse_rust_log(value, level):
    assert config.parse_rust_log(value) == level


def test_log_level_precedence():
    env = {"RUST_LOG": "error", "LOG_LEVEL": "warn", "NETSODY_LOG_LEVEL": "debug"}
    assert config.log_level(env) == "DEBUG"
    assert config.log_level({"RUST_LOG": "error", "LOG_LEVEL": "warn"}) == "WARNING"
    assert config.log_level({"RUST_LOG": "info,sqlx::query=warn"}) == "INFO"
    assert config.log_level({}) == "INFO"


def test_log_level_invalid_names_variable():
    with pytest.raises(ConfigError, match="NETSODY_LOG_LEVEL='loud' is not a log level"):
        config.log_level({"NETSODY_LOG_LEVEL": "loud"})


def test_env_int_parses_and_defaults():
    assert config.env_int({"N": " 42 "}, "N", 1) == 42
    assert config.env_int({"N": ""}, "N", 7) == 7
    assert config.env_int({}, "N", 7) == 7


def test_env_int_invalid():
    with pytest.raises(ConfigError, match=r"USER_CACHE_TTL_SECS='soon' is not an integer"):
        config.env_int({"USER_CACHE_TTL_SECS": "soon"}, "USER_CACHE_TTL_SECS", 1)
    with pytest.raises(ConfigError, match="below the minimum 1"):
        config.env_int({"APP_PORT": "0"}, "APP_PORT", 8080, minimum=1)


def test_env_str_strips_quotes():
    assert config.env_str({"S": '"openid profile email"'}, "S") == "openid profile email"
    assert config.env_str({"S": "'x'"}, "S") == "x"


def test_env_bool():
    assert config.env_bool({"B": "true"}, "B", False) is True
    assert config.env_bool({"B": "0"}, "B", True) is False
    with pytest.raises(ConfigError, match="not a boolean"):
        config.env_bool({"B": "maybe"}, "B", True)


def test_env_networks_guide_value():
    networks = config.env_networks({"T": "127.0.0.1/32,172.16.0.0/12"}, "T")
    assert networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("172.16.0.0/12"),
    )


def test_env_networks_invalid():
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES: 'proxy' is not an IP network"):
        config.env_networks({"TRUSTED_PROXIES": "proxy"}, "TRUSTED_PROXIES")


def test_cache_limits_from_guide_variables():
    env = {"USER_CACHE_MAX_ENTRIES": "10000", "USER_CACHE_TTL_SECS": "300"}
    limits = config.cache_limits(env, "USER_CACHE", max_entries=1, ttl_secs=1)
    assert limits == config.CacheLimits(max_entries=10000, ttl_secs=300)


def test_database_url_postgres():
    parsed = config.parse_database_url("postgresql://svc:p%40ss@db.internal:5433/service-db")
    assert parsed["ENGINE"] == "django.db.backends.postgresql"
    assert parsed["NAME"] == "service-db"
    assert parsed["USER"] == "svc"
    assert parsed["PASSWORD"] == "p@ss"
    assert parsed["HOST"] == "db.internal"
    assert parsed["PORT"] == 5433


def test_database_url_sqlite_paths():
    assert config.parse_database_url("sqlite:///dev.db")["NAME"] == "dev.db"
    assert config.parse_database_url("sqlite:////tmp/dev.db")["NAME"] == "/tmp/dev.db"


def test_database_url_unknown_scheme():
    with pytest.raises(ConfigError, match="scheme 'mysql'"):
        config.parse_database_url("mysql://x@y/z")


def test_database_from_postgres_variables_of_guide():
    env = {"POSTGRES_DB": "service-db", "POSTGRES_USER": "service", "POSTGRES_PASSWORD": "pw"}
    parsed = config.database_settings(env)
    assert parsed["NAME"] == "service-db"
    assert parsed["HOST"] == "netsody-controller-db"
    assert parsed["PASSWORD"] == "pw"


def test_secret_created_with_mode_0600(tmp_path):
    path = tmp_path / "controller_secret"
    first = config.load_or_create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == config.SECRET_BYTES
    assert config.load_or_create_secret(path) == first


def test_secret_readable_by_others_rejected(tmp_path):
    path = tmp_path / "controller_secret"
    config.load_or_create_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        config.load_or_create_secret(path)


def test_secret_garbage_rejected(tmp_path):
    path = tmp_path / "controller_secret"
    path.write_text("not hex")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="does not contain a hex secret"):
        config.load_or_create_secret(path)
