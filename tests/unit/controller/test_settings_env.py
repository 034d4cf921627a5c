"""Django settings loaded from the controller section of the self-hosting guide's `.env`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

GUIDE_ENV = {
    "APP_HOST": "0.0.0.0",
    "APP_PORT": "8080",
    "RUST_LOG": "info,sqlx::query=warn",
    "USER_CACHE_MAX_ENTRIES": "10000",
    "USER_CACHE_TTL_SECS": "300",
    "NODE_HMAC_CACHE_MAX_ENTRIES": "10000",
    "NODE_HMAC_CACHE_TTL_SECS": "3600",
    "OAUTH_CLIENT_ID": "replace-with-controller-client-id",
    "OAUTH_PATH": "https://id.example.com/.well-known/openid-configuration",
    "OAUTH_AUDIENCE": "replace-with-controller-client-id",
    "OAUTH_AGENT_PATH": "https://id.example.com/.well-known/openid-configuration",
    "OAUTH_AGENT_AUDIENCE": "replace-with-agent-client-id",
    "AUTHENTIK_BASE_URL": "",
    "AUTHENTIK_TOKEN": "",
    "AUTHENTIK_INVITATION_FLOW_ID": "",
    "AUTHENTIK_INVITATION_EXPIRES_SECS": "1209600",
    "INVITATION_RATE_LIMIT_USER": "10",
    "INVITATION_RATE_LIMIT_NETWORK": "20",
    "INVITATION_RATE_LIMIT_WINDOW_SECS": "3600",
    "TRUSTED_PROXIES": "127.0.0.1/32,172.16.0.0/12",
    "ZITADEL_CACHE_INVALIDATE_SECRET": "",
    "PROFILE_PICTURE_MAX_BYTES": "1048576",
    "GRAVATAR_BASE_URL": "https://www.gravatar.com/avatar",
    "GRAVATAR_SIZE": "200",
    "GRAVATAR_DEFAULT": "identicon",
    "POSTGRES_DB": "service-db",
    "POSTGRES_USER": "service",
    "POSTGRES_PASSWORD": "replace-with-database-password",
    "S3_BUCKET": "netsody-profile-pictures",
    "S3_REGION": "eu-central-1",
    "S3_ACCESS_KEY_ID": "minio",
    "S3_SECRET_ACCESS_KEY": "replace-with-object-storage-password",
    "S3_FORCE_PATH_STYLE": "true",
}

PROBE = """
import json
from django.conf import settings
print(json.dumps({
    "host": settings.APP_HOST, "port": settings.APP_PORT, "level": settings.LOG_LEVEL,
    "user_cache": [settings.USER_CACHE.max_entries, settings.USER_CACHE.ttl_secs],
    "node_cache": [settings.NODE_HMAC_CACHE.max_entries, settings.NODE_HMAC_CACHE.ttl_secs],
    "audience": settings.OAUTH_AUDIENCE, "agent_audience": settings.OAUTH_AGENT_AUDIENCE,
    "proxies": [str(net) for net in settings.TRUSTED_PROXIES],
    "database": [settings.DATABASES["default"]["NAME"], settings.DATABASES["default"]["HOST"]],
    "cache": settings.CACHES["default"]["BACKEND"], "redis": settings.REDIS_URL,
    "json_logs": settings.LOG_FORMAT,
}))
"""


def _load(tmp_path, **extra: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OAUTH_", "REDIS_", "DATABASE_", "NETSODY_", "RUST_LOG"))
    }
    env.update(GUIDE_ENV)
    env["NETSODY_CONTROLLER_SECRET_PATH"] = str(tmp_path / "controller_secret")
    env["DJANGO_SETTINGS_MODULE"] = "netsody_controller.settings"
    env.update(extra)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_guide_env_loads_unchanged(tmp_path):
    loaded = _load(tmp_path)
    assert loaded["host"] == "0.0.0.0"
    assert loaded["port"] == 8080
    assert loaded["level"] == "INFO"
    assert loaded["user_cache"] == [10000, 300]
    assert loaded["node_cache"] == [10000, 3600]
    assert loaded["audience"] == "replace-with-controller-client-id"
    assert loaded["agent_audience"] == "replace-with-agent-client-id"
    assert loaded["proxies"] == ["127.0.0.1/32", "172.16.0.0/12"]
    assert loaded["database"] == ["service-db", "netsody-controller-db"]
    assert loaded["redis"] == "redis://redis:6379/0"
    assert loaded["cache"].endswith("RedisCache")
    assert loaded["json_logs"] == "json"


def test_secret_file_created_private(tmp_path):
    _load(tmp_path)
    mode = stat.S_IMODE((tmp_path / "controller_secret").stat().st_mode)
    assert mode == 0o600


def test_empty_redis_url_selects_local_memory(tmp_path):
    loaded = _load(tmp_path, REDIS_URL="")
    assert loaded["cache"].endswith("LocMemCache")
    assert loaded["redis"] == ""


def test_log_level_variable_beats_rust_log(tmp_path):
    assert _load(tmp_path, NETSODY_LOG_LEVEL="debug")["level"] == "DEBUG"
