"""The dashboard's config endpoint, login command and Content-Security-Policy header."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsody_controller.dashboard.config import DashboardConfig, issuer_from_discovery_url
from netsody_controller.dashboard.csp import content_security_policy

GUIDE_DASHBOARD_ENV = {
    "OAUTH_CLIENT_ID": "controller-client",
    "OAUTH_PATH": "https://id.example.com/.well-known/openid-configuration",
    "OAUTH_AUDIENCE": "controller-client",
    "OAUTH_AGENT_PATH": "https://id.example.com/.well-known/openid-configuration",
    "OAUTH_AGENT_AUDIENCE": "agent-client",
    "NETSODY_SP_DOMAIN": "sp.example.com",
    "NETSODY_DASHBOARD_API_BASE_URL": "https://controller.example.com/api",
    "NETSODY_DASHBOARD_OIDC_AUTHORITY": "https://id.example.com",
    "NETSODY_DASHBOARD_OIDC_CLIENT_ID": "controller-client",
    "NETSODY_DASHBOARD_OIDC_SCOPE": '"openid profile email"',
    "NETSODY_DASHBOARD_DEVICE_AUTHORIZATION_URL": "https://id.example.com/device",
}

# Requests the dashboard's URLs through Django's test client in a fresh process, so the settings
# are read from the environment given to that process.
PROBE = """
import json
import django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="controller.example.com")
results = {}
for path in ("/", "/callback", "/dashboard/config.json", "/dashboard/assets/app.js",
             "/dashboard/assets/views.py", "/dashboard/assets/..%2Fviews.py"):
    response = client.get(path)
    results[path] = {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": b"".join(response.streaming_content).decode() if response.streaming
        else response.content.decode(),
    }
results["post /"] = {"status": client.post("/").status_code}
print(json.dumps(results))
"""


def _probe(tmp_path: Path, env: dict[str, str]) -> dict[str, dict]:
    full_env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("NETSODY_")},
        **env,
        "DJANGO_SETTINGS_MODULE": "netsody_controller.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "NETSODY_CONTROLLER_SECRET_PATH": str(tmp_path / "secret"),
        "NETSODY_LOG_LEVEL": "error",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def guide_responses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return _probe(tmp_path_factory.mktemp("dashboard"), GUIDE_DASHBOARD_ENV)


def test_config_endpoint_renders_guide_settings(guide_responses: dict[str, dict]) -> None:
    response = guide_responses["/dashboard/config.json"]
    config = json.loads(response["body"])

    assert response["status"] == 200
    assert config["api_base_url"] == "https://controller.example.com/api"
    assert config["oidc_authority"] == "https://id.example.com"
    assert config["oidc_client_id"] == "controller-client"
    assert config["oidc_scope"] == "openid profile email"
    assert config["device_authorization_url"] == "https://id.example.com/device"
    assert config["agent_auth_url"] == "https://id.example.com"
    assert config["agent_client_id"] == "agent-client"
    assert config["super_peers"] == ["https://sp.example.com/"]


def test_config_endpoint_login_command(guide_responses: dict[str, dict]) -> None:
    config = json.loads(guide_responses["/dashboard/config.json"]["body"])

    assert config["login_command"] == (
        "netsody login --controller https://controller.example.com/api "
        "--auth-url https://id.example.com --auth-client-id agent-client "
        "--super-peer https://sp.example.com/"
    )
    assert config["join_command"] == (
        "netsody join --controller https://controller.example.com/api --join-key <JOIN_KEY> "
        "--super-peer https://sp.example.com/"
    )


def test_config_endpoint_falls_back_to_api_settings(tmp_path: Path) -> None:
    env = {
        "OAUTH_CLIENT_ID": "controller-client",
        "OAUTH_PATH": "https://id.example.com/.well-known/openid-configuration",
        "OAUTH_AGENT_PATH": "https://agents.example.com/.well-known/openid-configuration",
        "OAUTH_AGENT_AUDIENCE": "agent-client",
        "NETSODY_DASHBOARD_SUPER_PEERS": "https://sp1.example.com/, https://sp2.example.com/",
    }

    config = json.loads(_probe(tmp_path, env)["/dashboard/config.json"]["body"])

    assert config["api_base_url"] == "http://controller.example.com/api"
    assert config["oidc_authority"] == "https://id.example.com"
    assert config["oidc_client_id"] == "controller-client"
    assert config["agent_auth_url"] == "https://agents.example.com"
    assert config["super_peers"] == ["https://sp1.example.com/", "https://sp2.example.com/"]
    assert config["login_command"].endswith(
        "--super-peer https://sp1.example.com/ --super-peer https://sp2.example.com/"
    )


@pytest.mark.parametrize("path", ["/", "/callback"])
def test_app_page_has_strict_csp(guide_responses: dict[str, dict], path: str) -> None:
    response = guide_responses[path]
    policy = response["headers"]["Content-Security-Policy"]
    directives = dict(part.split(" ", 1) for part in policy.split("; "))

    assert response["status"] == 200
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == (
        "'self' https://controller.example.com https://id.example.com"
    )
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert response["headers"]["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/", "/callback"])
def test_app_page_has_no_inline_script(guide_responses: dict[str, dict], path: str) -> None:
    body = guide_responses[path]["body"]

    assert '<script type="module" src="/dashboard/assets/app.js"></script>' in body
    assert body.count("<script") == 1


def test_assets_served_only_from_list(guide_responses: dict[str, dict]) -> None:
    script = guide_responses["/dashboard/assets/app.js"]

    assert script["status"] == 200
    assert script["headers"]["Content-Type"] == "text/javascript; charset=utf-8"
    assert guide_responses["/dashboard/assets/views.py"]["status"] == 404
    assert guide_responses["/dashboard/assets/..%2Fviews.py"]["status"] == 404


def test_app_page_rejects_post(guide_responses: dict[str, dict]) -> None:
    assert guide_responses["post /"]["status"] == 405


def test_csp_names_each_origin_once() -> None:
    config = DashboardConfig(
        api_base_url="http://127.0.0.1:8080/api",
        oidc_authority="http://127.0.0.1:8080/idp",
        oidc_client_id="c",
        oidc_scope="openid",
        device_authorization_url="",
        agent_auth_url="",
        agent_client_id="",
        super_peers=(),
    )

    assert "connect-src 'self' http://127.0.0.1:8080;" in content_security_policy(config)


def test_login_command_quotes_values() -> None:
    config = DashboardConfig(
        api_base_url="https://c.example.com/api",
        oidc_authority="https://id.example.com",
        oidc_client_id="c",
        oidc_scope="openid",
        device_authorization_url="",
        agent_auth_url="https://id.example.com/realms/a b",
        agent_client_id="agent",
        super_peers=(),
    )

    assert "--auth-url 'https://id.example.com/realms/a b'" in config.login_command()


@pytest.mark.parametrize(
    ("url", "issuer"),
    [
        ("https://id.example.com/.well-known/openid-configuration", "https://id.example.com"),
        ("https://id.example.com/realms/x/", "https://id.example.com/realms/x"),
        ("", ""),
    ],
)
def test_issuer_from_discovery_url(url: str, issuer: str) -> None:
    assert issuer_from_discovery_url(url) == issuer
