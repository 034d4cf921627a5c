"""The systemd-resolved wiring, with a recording stand-in for `resolvectl`.

systemd-resolved cannot run in this test environment, so a script named `resolvectl` on PATH
records its arguments instead. The tests check the commands the agent issues.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netsody_agent.reconciler import DnsLink
from netsody_agent.reconciler.linux import ResolvectlDns


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    script = bin_dir / "resolvectl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def test_resolvectl_commands(recorded: Path, tmp_path: Path) -> None:
    dns = ResolvectlDns("netsody", runtime_dir=tmp_path)
    assert dns.available() == (True, "systemd-resolved")
    dns.apply(DnsLink("127.0.0.153", "netsody.me"))
    assert dns.observe() == DnsLink("127.0.0.153", "netsody.me")
    dns.remove()
    assert dns.observe() is None
    assert recorded.read_text().splitlines() == [
        "dns netsody 127.0.0.153",
        "domain netsody ~netsody.me",
        "revert netsody",
    ]


def test_resolved_not_running(recorded: Path, tmp_path: Path) -> None:
    dns = ResolvectlDns("netsody", runtime_dir=tmp_path / "missing")
    available, detail = dns.available()
    assert not available
    assert detail == "systemd-resolved is not running: point the system resolver at the agent"


def test_resolvectl_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    available, detail = ResolvectlDns("netsody", runtime_dir=tmp_path).available()
    assert not available
    assert detail.startswith("resolvectl not found")
