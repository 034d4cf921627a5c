"""The dashboard's runtime configuration, rendered from the NETSODY_DASHBOARD_* settings.

The app reads it from `/dashboard/config.json`: where the API is, which OIDC client to sign in
with, and the values of the `netsody login` command that devices use for this deployment.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest

DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


def issuer_from_discovery_url(url: str) -> str:
    """Return the issuer URL of an OIDC discovery URL (the URL itself when it lacks the suffix)."""
    if url.endswith(DISCOVERY_SUFFIX):
        return url[: -len(DISCOVERY_SUFFIX)]
    return url.rstrip("/")


@dataclass(frozen=True)
class DashboardConfig:
    """Everything the dashboard needs at runtime. None of it is secret."""

    api_base_url: str
    oidc_authority: str
    oidc_client_id: str
    oidc_scope: str
    device_authorization_url: str
    agent_auth_url: str
    agent_client_id: str
    super_peers: tuple[str, ...]

    def login_command(self) -> str:
        """Return the `netsody login` command for devices of this deployment, shell-quoted."""
        parts = ["netsody", "login", "--controller", self.api_base_url]
        if self.agent_auth_url and self.agent_client_id:
            parts += ["--auth-url", self.agent_auth_url, "--auth-client-id", self.agent_client_id]
        for url in self.super_peers:
            parts += ["--super-peer", url]
        return shlex.join(parts)

    def join_command(self) -> str:
        """Return the `netsody join` command with `<JOIN_KEY>` where the key's secret goes."""
        parts = ["netsody", "join", "--controller", self.api_base_url, "--join-key", "JOIN_KEY"]
        for url in self.super_peers:
            parts += ["--super-peer", url]
        return shlex.join(parts).replace("JOIN_KEY", "<JOIN_KEY>")

    def as_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["super_peers"] = list(self.super_peers)
        document["login_command"] = self.login_command()
        document["join_command"] = self.join_command()
        return document


def dashboard_config(request: HttpRequest) -> DashboardConfig:
    """Build the configuration from the settings, filling unset values from the API settings.

    An unset NETSODY_DASHBOARD_API_BASE_URL becomes `/api` on the origin of `request`, an unset
    authority the issuer of OAUTH_PATH, and an unset client id OAUTH_CLIENT_ID.
    """
    authority = settings.NETSODY_DASHBOARD_OIDC_AUTHORITY or issuer_from_discovery_url(
        settings.OAUTH_PATH
    )
    agent_auth_url = issuer_from_discovery_url(settings.OAUTH_AGENT_PATH) or authority
    return DashboardConfig(
        api_base_url=(
            settings.NETSODY_DASHBOARD_API_BASE_URL or request.build_absolute_uri("/api")
        ).rstrip("/"),
        oidc_authority=authority.rstrip("/"),
        oidc_client_id=settings.NETSODY_DASHBOARD_OIDC_CLIENT_ID or settings.OAUTH_CLIENT_ID,
        oidc_scope=settings.NETSODY_DASHBOARD_OIDC_SCOPE,
        device_authorization_url=settings.NETSODY_DASHBOARD_DEVICE_AUTHORIZATION_URL,
        agent_auth_url=agent_auth_url,
        agent_client_id=settings.OAUTH_AGENT_AUDIENCE,
        super_peers=tuple(settings.NETSODY_DASHBOARD_SUPER_PEERS),
    )
