"""Django settings of the controller, read from the environment through `config`.

The variables are those of the self-hosting guide's `.env` (APP_HOST, OAUTH_*, USER_CACHE_*, ...)
plus a few the guide lacks: DATABASE_URL, REDIS_URL, NETSODY_DEV, NETSODY_LOG_FORMAT,
NETSODY_LOG_LEVEL, ALLOWED_HOSTS and SMTP settings.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from netsody_controller import config
from netsody_controller.logsetup import logging_config

ENV = os.environ

# Development mode (`netsody-controller dev`): readable logs, in-process fallbacks allowed.
NETSODY_DEV = config.env_bool(ENV, "NETSODY_DEV", False)
DEBUG = config.env_bool(ENV, "DJANGO_DEBUG", False)

APP_HOST = config.env_str(ENV, "APP_HOST", "0.0.0.0")  # noqa: S104 - a container's server binds all
APP_PORT = config.env_int(ENV, "APP_PORT", 8080, minimum=1)

NETSODY_CONTROLLER_SECRET_PATH = Path(
    config.env_str(ENV, "NETSODY_CONTROLLER_SECRET_PATH", "./controller_secret")
)
CONTROLLER_SECRET = config.load_or_create_secret(NETSODY_CONTROLLER_SECRET_PATH)
# Django's own signing key is derived from the controller secret, so one file holds all secrets.
SECRET_KEY = hmac.new(CONTROLLER_SECRET, b"netsody django secret key", hashlib.sha256).hexdigest()

USER_CACHE = config.cache_limits(ENV, "USER_CACHE", max_entries=10000, ttl_secs=300)
NODE_HMAC_CACHE = config.cache_limits(ENV, "NODE_HMAC_CACHE", max_entries=10000, ttl_secs=3600)

OAUTH_CLIENT_ID = config.env_str(ENV, "OAUTH_CLIENT_ID")
OAUTH_PATH = config.env_str(ENV, "OAUTH_PATH")
OAUTH_AUDIENCE = config.env_str(ENV, "OAUTH_AUDIENCE")
OAUTH_AGENT_PATH = config.env_str(ENV, "OAUTH_AGENT_PATH")
OAUTH_AGENT_AUDIENCE = config.env_str(ENV, "OAUTH_AGENT_AUDIENCE")
TRUSTED_PROXIES = config.env_networks(ENV, "TRUSTED_PROXIES", ("127.0.0.1/32", "::1/128"))
# Shared secret of POST /api/hooks/zitadel/invalidate-cache (hooks.py); empty turns it off.
ZITADEL_CACHE_INVALIDATE_SECRET = config.env_str(ENV, "ZITADEL_CACHE_INVALIDATE_SECRET")

# The dashboard at `/`: its OIDC client, and the values of the `netsody login` command it shows.
# NETSODY_DASHBOARD_SUPER_PEERS (comma-separated URLs) defaults to https://<NETSODY_SP_DOMAIN>/.
NETSODY_DASHBOARD_API_BASE_URL = config.env_str(ENV, "NETSODY_DASHBOARD_API_BASE_URL")
NETSODY_DASHBOARD_OIDC_AUTHORITY = config.env_str(ENV, "NETSODY_DASHBOARD_OIDC_AUTHORITY")
NETSODY_DASHBOARD_OIDC_CLIENT_ID = config.env_str(ENV, "NETSODY_DASHBOARD_OIDC_CLIENT_ID")
NETSODY_DASHBOARD_OIDC_SCOPE = config.env_str(
    ENV, "NETSODY_DASHBOARD_OIDC_SCOPE", "openid profile email"
)
NETSODY_DASHBOARD_DEVICE_AUTHORIZATION_URL = config.env_str(
    ENV, "NETSODY_DASHBOARD_DEVICE_AUTHORIZATION_URL"
)
_SP_DOMAIN = config.env_str(ENV, "NETSODY_SP_DOMAIN")
NETSODY_DASHBOARD_SUPER_PEERS = config.env_list(
    ENV, "NETSODY_DASHBOARD_SUPER_PEERS", (f"https://{_SP_DOMAIN}/",) if _SP_DOMAIN else ()
)

# Invitations: optional Authentik automation (networks/authentik.py, on when the first three are
# set) and rate limits per inviting user and per network.
AUTHENTIK_BASE_URL = config.env_str(ENV, "AUTHENTIK_BASE_URL")
AUTHENTIK_TOKEN = config.env_str(ENV, "AUTHENTIK_TOKEN")
AUTHENTIK_INVITATION_FLOW_ID = config.env_str(ENV, "AUTHENTIK_INVITATION_FLOW_ID")
AUTHENTIK_INVITATION_EXPIRES_SECS = config.env_int(
    ENV, "AUTHENTIK_INVITATION_EXPIRES_SECS", 1209600, minimum=1
)
INVITATION_RATE_LIMIT_USER = config.env_int(ENV, "INVITATION_RATE_LIMIT_USER", 10)
INVITATION_RATE_LIMIT_NETWORK = config.env_int(ENV, "INVITATION_RATE_LIMIT_NETWORK", 20)
INVITATION_RATE_LIMIT_WINDOW_SECS = config.env_int(
    ENV, "INVITATION_RATE_LIMIT_WINDOW_SECS", 3600, minimum=1
)

# Profile pictures, fetched from the provider's picture URL or Gravatar into object storage
# (accounts/tasks.py). An empty S3_BUCKET turns the fetching off.
PROFILE_PICTURE_MAX_BYTES = config.env_int(ENV, "PROFILE_PICTURE_MAX_BYTES", 1048576, minimum=1)
GRAVATAR_BASE_URL = config.env_str(ENV, "GRAVATAR_BASE_URL", "https://www.gravatar.com/avatar")
GRAVATAR_SIZE = config.env_int(ENV, "GRAVATAR_SIZE", 200, minimum=1)
GRAVATAR_DEFAULT = config.env_str(ENV, "GRAVATAR_DEFAULT", "identicon")

S3_BUCKET = config.env_str(ENV, "S3_BUCKET", "netsody-profile-pictures")
S3_REGION = config.env_str(ENV, "S3_REGION", "eu-central-1")
S3_ACCESS_KEY_ID = config.env_str(ENV, "S3_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = config.env_str(ENV, "S3_SECRET_ACCESS_KEY")
S3_FORCE_PATH_STYLE = config.env_bool(ENV, "S3_FORCE_PATH_STYLE", True)
S3_ENDPOINT_URL = config.env_str(ENV, "S3_ENDPOINT_URL", "http://netsody-controller-minio:9000")

EMAIL_HOST = config.env_str(ENV, "SMTP_HOST", "localhost")
EMAIL_PORT = config.env_int(ENV, "SMTP_PORT", 25, minimum=1)
EMAIL_HOST_USER = config.env_str(ENV, "SMTP_USER")
EMAIL_HOST_PASSWORD = config.env_str(ENV, "SMTP_PASSWORD")
EMAIL_USE_TLS = config.env_bool(ENV, "SMTP_STARTTLS", False)
DEFAULT_FROM_EMAIL = config.env_str(ENV, "SMTP_FROM", "netsody@localhost")
EMAIL_BACKEND = config.env_str(
    ENV,
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if NETSODY_DEV
    else "django.core.mail.backends.smtp.EmailBackend",
)

DATABASES = {"default": config.database_settings(ENV)}
DATABASES["default"]["CONN_MAX_AGE"] = config.env_int(ENV, "DATABASE_CONN_MAX_AGE", 0)

# An empty REDIS_URL selects the local-memory cache and in-process notifications (development).
REDIS_URL = config.env_str(ENV, "REDIS_URL", "redis://redis:6379/0")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "netsody",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = "netsody"

ALLOWED_HOSTS = list(config.env_list(ENV, "ALLOWED_HOSTS", ("*",)))
LOG_LEVEL = config.log_level(ENV)
LOG_FORMAT = config.env_str(ENV, "NETSODY_LOG_FORMAT", "text" if NETSODY_DEV else "json")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "netsody_controller.accounts",
    "netsody_controller.networks",
    "netsody_controller.nodes",
    "netsody_controller.policies",
    "netsody_controller.keys",
    "netsody_controller.dashboard",
]
MIDDLEWARE = [
    "netsody_controller.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
]
ROOT_URLCONF = "netsody_controller.urls"
ASGI_APPLICATION = "netsody_controller.asgi.application"
TEMPLATES: list[dict[str, object]] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
APPEND_SLASH = False
# Agents and the dashboard send JSON bodies. The largest is an imported network document.
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = logging_config(level=LOG_LEVEL, json_lines=LOG_FORMAT != "text")
