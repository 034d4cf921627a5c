"""The environment, URLs and login command of `netsody-controller dev`."""

from pathlib import Path

import pytest

from netsody_controller.devmode import (
    build_parser,
    controller_urls,
    dev_environment,
    login_command,
)


def test_environment_points_at_provider(tmp_path: Path) -> None:
    env = dev_environment(tmp_path, host="127.0.0.1", port=8080, idp_url="http://127.0.0.1:9001")

    discovery = "http://127.0.0.1:9001/.well-known/openid-configuration"
    assert env["OAUTH_PATH"] == discovery
    assert env["OAUTH_AGENT_PATH"] == discovery
    assert env["OAUTH_AUDIENCE"] == "netsody-controller"
    assert env["OAUTH_CLIENT_ID"] == "netsody-controller"
    assert env["OAUTH_AGENT_AUDIENCE"] == "netsody-agent"
    assert env["REDIS_URL"] == ""
    assert env["DATABASE_URL"] == f"sqlite:///{tmp_path}/controller.sqlite3"
    assert env["NETSODY_CONTROLLER_SECRET_PATH"] == str(tmp_path / "controller_secret")
    assert env["NETSODY_DEV"] == "true"
    assert env["APP_PORT"] == "8080"


def test_login_command_repeats_super_peers() -> None:
    command = login_command(
        "http://127.0.0.1:8080",
        "http://127.0.0.1:9001",
        ["https://127.0.0.1:8443/", "https://sp2.test:8443/"],
    )

    assert command == (
        "netsody login --controller http://127.0.0.1:8080/api --auth-url http://127.0.0.1:9001 "
        "--auth-client-id netsody-agent --super-peer https://127.0.0.1:8443/ "
        "--super-peer https://sp2.test:8443/"
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param(
            "127.0.0.1", ["http://127.0.0.1:8080", "http://localhost:8080"], id="loopback"
        ),
        pytest.param("0.0.0.0", ["http://127.0.0.1:8080", "http://localhost:8080"], id="wildcard"),
        pytest.param("10.1.2.3", ["http://10.1.2.3:8080"], id="namespace-address"),
        pytest.param("::1", ["http://[::1]:8080"], id="ipv6"),
    ],
)
def test_controller_urls(host: str, expected: list[str]) -> None:
    assert controller_urls(host, 8080) == expected


def test_parser_defaults() -> None:
    args = build_parser().parse_args([])

    assert args.host == "127.0.0.1"
    assert args.port == 8080
    assert args.idp_host == "127.0.0.1"
    assert args.idp_port == 9001
    assert args.state_dir == Path(".netsody-dev")
    assert args.super_peer is None
