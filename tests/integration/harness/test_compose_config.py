"""The compose stack renders with the example settings, as `docker-compose config` checks it."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
GUIDE_SERVICES = {
    "traefik",
    "netsody-dashboard",
    "netsody-controller",
    "netsody-controller-worker",
    "netsody-controller-db",
    "netsody-controller-minio",
    "redis",
    "netsody-sp",
    "netsody-sp-certbot",
}
COMPOSE_TIMEOUT_SECONDS = 60


def run_compose(*arguments: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    command = [executable, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), *arguments]
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_SECONDS,
        check=False,
    )


def test_compose_config_valid() -> None:
    result = run_compose("config", "-q")

    assert result.returncode == 0, result.stderr
    assert "is not set" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def rendered_config() -> str:
    result = run_compose("config")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compose_services_match_guide(rendered_config: str) -> None:
    services = yaml.safe_load(rendered_config)["services"]
    assert GUIDE_SERVICES - set(services) == set()
    assert services["pocket-id"]["profiles"] == ["pocket-id"]
    for name in GUIDE_SERVICES:
        assert "profiles" not in services[name], name
    assert "netsody-controller" not in services["netsody-sp"]["networks"]
    assert set(services["pocket-id"]["networks"]) == {"netsody-idp"}


def test_compose_super_peer_command(rendered_config: str) -> None:
    rendered = rendered_config
    assert "/etc/letsencrypt/live/sp.example.com/fullchain.pem" in rendered
    assert "/etc/letsencrypt/live/sp.example.com/privkey.pem" in rendered
    assert "203.0.113.10" in rendered
    assert "49152-49407" in rendered
    assert "127.0.0.1" in rendered
    database_url = "postgresql://service:replace-with-database-password@netsody-controller-db:5432"
    assert f"{database_url}/service-db" in rendered
