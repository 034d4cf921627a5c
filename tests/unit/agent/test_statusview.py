"""The text form of `netsody status`."""

from __future__ import annotations

from netsody_agent.statusview import render_status

STATUS = {
    "identity": "ab" * 32,
    "version": "0.1.0",
    "controller": "https://c.example/api",
    "logged_in": True,
    "super_peers": ["https://sp1.example", "https://sp2.example"],
    "super_peer_status": [
        {"url": "https://sp1.example", "connected": True, "rtt_ms": 12.5, "error": None},
        {"url": "https://sp2.example", "connected": False, "rtt_ms": None, "error": "timed out"},
    ],
    "networks": [
        {"name": "lab", "network": "10.1.0.0/24", "address": "10.1.0.2", "state": "applied",
         "source": "https://c.example/api", "error": None},
        {"id": "url-1234", "name": "", "source": "https://u:***@h.example/n.toml",
         "state": "error", "error": "GET failed"},
    ],
    "peers": [
        {"pk": "cd" * 32, "hostname": "beta", "ip": "10.1.0.3", "path": "relay-h3",
         "last_handshake": 0.0, "bytes_in": 5, "bytes_out": 6},
    ],
    "dns": {"resolver": "127.0.0.153:53", "system_resolver": "not wired",
            "detail": "resolvectl not found"},
    "errors": ["add-route 10.9.0.0/16: failed"],
    "dataplane_error": None,
}  # fmt: skip


def test_render_status_lines() -> None:
    lines = render_status(STATUS).splitlines()
    assert lines[0] == f"node id:     {'ab' * 32}"
    assert "controller:  https://c.example/api (logged in)" in lines
    assert "  https://sp1.example latency=12.5 ms connected" in lines
    assert "  https://sp2.example latency=unknown not connected (error: timed out)" in lines
    assert "  lab 10.1.0.0/24 address=10.1.0.2 state=applied source=https://c.example/api" in lines
    assert "    error: GET failed" in lines
    assert (
        "  beta 10.1.0.3 path=relay-h3 last-handshake=1970-01-01T00:00:00Z bytes-in=5 "
        "bytes-out=6 (cdcdcdcdcdcd)" in lines
    )
    assert lines[-1] == "error: add-route 10.9.0.0/16: failed"


def test_render_status_empty() -> None:
    text = render_status({"identity": "ab", "super_peers": [], "networks": [], "peers": []})
    assert text.splitlines().count("  none") == 3
    assert "controller:  none" in text


def test_render_status_source_without_networks() -> None:
    status = {
        "identity": "ab",
        "super_peers": [],
        "peers": [],
        "networks": [{"id": "controller", "name": "", "source": "https://c.example/api",
                      "state": "no-networks", "error": None}],
    }  # fmt: skip
    lines = render_status(status).splitlines()
    assert "  controller  address=- state=no-networks source=https://c.example/api" in lines
    assert "    this source assigns no network to this device yet" in lines
