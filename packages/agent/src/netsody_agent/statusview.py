"""Human-readable rendering of the status returned by the daemon."""

from __future__ import annotations

import time
from typing import Any


def _peer_line(peer: dict[str, Any]) -> str:
    parts = [
        str(peer.get("hostname") or "?"),
        str(peer.get("ip") or ""),
        f"path={peer.get('path', 'none')}",
    ]
    if peer.get("last_handshake") is not None:
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(peer["last_handshake"]))
        parts.append(f"last-handshake={moment}")
    for key in ("bytes_in", "bytes_out"):
        if key in peer:
            parts.append(f"{key.replace('_', '-')}={peer[key]}")
    return "  " + " ".join(parts) + f" ({str(peer.get('pk', ''))[:12]})"


def _super_peer_line(entry: Any) -> str:
    """Format one super peer of the data plane status (`url`, `connected`, `rtt_ms`, `error`)."""
    if not isinstance(entry, dict):
        return f"  {entry}"
    latency = entry.get("rtt_ms")
    shown = "unknown" if latency is None else f"{latency} ms"
    state = "connected" if entry.get("connected") else "not connected"
    line = f"  {entry.get('url', '?')} latency={shown} {state}"
    if entry.get("error"):
        line += f" (error: {entry['error']})"
    return line


def _network_lines(networks: list[dict[str, Any]]) -> list[str]:
    lines = []
    for net in networks:
        name = net.get("name") or net.get("id")
        lines.append(
            f"  {name} {net.get('network', '')} address={net.get('address', '-')} "
            f"state={net.get('state')} source={net.get('source')}"
        )
        if net.get("error"):
            lines.append(f"    error: {net['error']}")
        elif net.get("state") == "no-networks":
            lines.append("    this source assigns no network to this device yet")
    return lines or ["  none"]


def _domain_lines(dns: dict[str, Any]) -> list[str]:
    """Format the domain resources: routing domains, then each learned address."""
    domains = dns.get("resource_domains") or []
    learned = dns.get("learned") or []
    if not domains and not learned:
        return []
    lines = []
    if domains:
        lines.append(f"resource domains: {', '.join(domains)}")
        if dns.get("system_resolver") != "wired":
            lines.append(
                "  not routed to the agent's resolver: send these domains to "
                f"{dns.get('resolver') or 'the agent resolver'} yourself"
            )
    lines.append("learned domain addresses:")
    for entry in learned:
        direction = "via gateway" if entry.get("role") == "client" else "for client"
        lines.append(
            f"  {entry.get('resource')} {direction} {entry.get('peer')}: {entry.get('address')} "
            f"(expires in {entry.get('expires_in')} s)"
        )
    if not learned:
        lines.append("  none")
    return lines


def render_status(status: dict[str, Any]) -> str:
    """Return the status as lines of text for `netsody status`."""
    logged_in = " (logged in)" if status.get("logged_in") else ""
    lines = [
        f"node id:     {status.get('identity')}",
        f"version:     {status.get('version')}",
        f"controller:  {status.get('controller') or 'none'}{logged_in}",
    ]

    lines.append("super peers:")
    reported = [_super_peer_line(entry) for entry in status.get("super_peer_status") or []]
    configured = [f"  {url} latency=unknown" for url in status.get("super_peers", [])]
    lines += reported or configured or ["  none"]

    lines.append("networks:")
    lines += _network_lines(status.get("networks", []))

    lines.append("peers:")
    lines += [_peer_line(peer) for peer in status.get("peers", [])] or ["  none"]

    dns = status.get("dns", {})
    lines.append(
        f"dns:         resolver {dns.get('resolver') or 'not running'}, system resolver "
        f"{dns.get('system_resolver')} ({dns.get('detail')})"
    )
    lines += _domain_lines(dns)
    for error in [*status.get("errors", []), status.get("dataplane_error")]:
        if error:
            lines.append(f"error: {error}")
    return "\n".join(lines)
