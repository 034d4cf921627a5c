"""Argument parsing and usage errors of the `netsody` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsody_agent import __version__, cli

PARSE_CASES = [
    pytest.param(
        ["login", "--controller", "https://c.example/api", "--auth-url", "https://id.example",
         "--auth-client-id", "agent", "--super-peer", "https://sp1.example/",
         "--super-peer", "https://sp2.example/"],
        {"command": "login", "controller": "https://c.example/api",
         "auth_url": "https://id.example", "auth_client_id": "agent",
         "super_peers": ["https://sp1.example/", "https://sp2.example/"]},
        id="login-all-options",
    ),
    pytest.param(
        ["login", "--super-peer", "https://sp.example/"],
        {"command": "login", "controller": None, "auth_url": None,
         "super_peers": ["https://sp.example/"]},
        id="login-super-peer-only",
    ),
    pytest.param(
        ["join", "--controller", "https://c.example/api", "--join-key", "nsj_abc"],
        {"command": "join", "join_key": "nsj_abc", "super_peers": None},
        id="join",
    ),
    pytest.param(
        ["run", "--state-dir", "/tmp/x", "--mtu", "1400", "--listen-port", "4500"],
        {"command": "run", "state_dir": Path("/tmp/x"), "mtu": 1400, "listen_port": 4500,
         "dns_address": "127.0.0.153:53", "device": "netsody"},
        id="run-options",
    ),
    pytest.param(["run"], {"state_dir": Path("/var/lib/netsody")}, id="run-default-state-dir"),
    pytest.param(
        ["run", "--peer-endpoint", "AB" * 32 + "=192.0.2.1:7000",
         "--peer-endpoint", "cd" * 32 + "=[2001:db8::1]:7001"],
        {"peer_endpoint": [("ab" * 32, "192.0.2.1", 7000), ("cd" * 32, "2001:db8::1", 7001)]},
        id="run-peer-endpoints",
    ),
    pytest.param(["status", "--json"], {"command": "status", "json": True}, id="status-json"),
    pytest.param(["status"], {"json": False}, id="status-text"),
    pytest.param(
        ["network", "add", "file:///etc/netsody/lab.toml"],
        {"command": "network", "action": "add", "url": "file:///etc/netsody/lab.toml"},
        id="network-add",
    ),
    pytest.param(
        ["network", "disable", "https://u:p@h.example/n.toml", "--state-dir", "/s"],
        {"action": "disable", "url": "https://u:p@h.example/n.toml", "state_dir": Path("/s")},
        id="network-disable-with-state-dir",
    ),
    pytest.param(["logout"], {"command": "logout"}, id="logout"),
    pytest.param(["version"], {"command": "version"}, id="version"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), PARSE_CASES)
def test_parser_accepts(argv: list[str], expected: dict[str, object], monkeypatch) -> None:
    monkeypatch.delenv(cli.STATE_DIR_ENV, raising=False)
    args = cli.build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


ERROR_CASES = [
    pytest.param([], "the following arguments are required: COMMAND", id="no-command"),
    pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="unknown-command"),
    pytest.param(
        ["login", "--auth-url", "https://id.example"],
        "--auth-url and --auth-client-id must be given together",
        id="auth-url-without-client-id",
    ),
    pytest.param(
        ["login", "--auth-client-id", "agent"],
        "--auth-url and --auth-client-id must be given together",
        id="client-id-without-auth-url",
    ),
    pytest.param(["join", "--join-key", "k"], "--controller", id="join-without-controller"),
    pytest.param(["join", "--controller", "https://c"], "--join-key", id="join-without-key"),
    pytest.param(["network"], "required: ACTION", id="network-without-action"),
    pytest.param(["network", "add"], "required: URL", id="network-add-without-url"),
    pytest.param(["network", "rename", "x"], "invalid choice: 'rename'", id="network-bad-action"),
    pytest.param(["run", "--mtu", "big"], "invalid int value: 'big'", id="run-bad-mtu"),
    pytest.param(
        ["run", "--mtu", "10"], "--mtu 10 is out of range: use 68 to 65535", id="run-tiny-mtu"
    ),
    pytest.param(["run", "--mtu", "70000"], "--mtu 70000 is out of range", id="run-huge-mtu"),
    pytest.param(
        ["run", "--peer-endpoint", "abc=1.2.3.4:5"],
        "'abc=1.2.3.4:5' is not PK=HOST:PORT",
        id="run-bad-peer-endpoint",
    ),
    pytest.param(
        ["run", "--peer-endpoint", "ab" * 32 + "=1.2.3.4:70000"],
        "is not PK=HOST:PORT",
        id="run-peer-endpoint-port-out-of-range",
    ),
    pytest.param(["run", "--log-format", "xml"], "invalid choice: 'xml'", id="run-bad-log-format"),
]


@pytest.mark.parametrize(("argv", "message"), ERROR_CASES)
def test_parser_rejects(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_every_option_has_help() -> None:
    parser = cli.build_parser()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if action.dest == "help":
                continue
            if action.choices and isinstance(action.choices, dict):
                pending.extend(action.choices.values())
                continue
            assert action.help, f"{current.prog}: {action.dest} has no help text"


def test_version_prints_version(capsys) -> None:
    assert cli.main(["version"]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == f"netsody {__version__}"


def test_state_dir_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(cli.STATE_DIR_ENV, str(tmp_path))
    args = cli.build_parser().parse_args(["status"])
    assert args.state_dir == tmp_path


def test_status_without_daemon_fails_clearly(tmp_path, capsys) -> None:
    code = cli.main(["status", "--state-dir", str(tmp_path)])
    assert code == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "the netsody daemon is not running" in err
    assert str(tmp_path / "netsody.sock") in err


def test_other_platform_not_supported(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli.sys, "platform", "darwin")
    assert cli.main(["status"]) == cli.EXIT_FAILED
    assert "not supported on this platform (darwin)" in capsys.readouterr().err


def test_run_rejects_missing_super_peer_ca(tmp_path, capsys) -> None:
    missing = tmp_path / "missing.pem"
    code = cli.main(["run", "--state-dir", str(tmp_path), "--super-peer-ca", str(missing)])
    assert code == cli.EXIT_FAILED
    assert f"super peer CA file {missing} not found" in capsys.readouterr().err


def test_super_peer_ca_from_ssl_cert_file(tmp_path, monkeypatch) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert cli._super_peer_ca(None) == str(bundle)
    assert cli._super_peer_ca(tmp_path / "ca.pem") == str(bundle)
    monkeypatch.delenv("SSL_CERT_FILE")
    assert cli._super_peer_ca(None) is None


def test_run_rejects_bad_dns_address(tmp_path, capsys) -> None:
    code = cli.main(["run", "--state-dir", str(tmp_path), "--dns-address", "nowhere"])
    assert code == cli.EXIT_USAGE
    assert "--dns-address 'nowhere' is not HOST:PORT" in capsys.readouterr().err
