"""Human-readable rendering of the status returned by the daemon."""

from __future__ import annotations

from typing import Any


def _peer_line(peer: dict[str, Any]) -> str:
    parts = [
        str(peer.get("hostname") or "?"),
        str(peer.get("ip") or ""),
        f"path={peer.get('path', 'none')}",
    ]
    if peer.get("last_handshake") is not None:
        parts.append(f"last-handshake={peer['last_handshake']}")
    for key in ("bytes_in", "bytes_out"):
        if key in peer:
            parts.append(f"{key.replace('_', '-')}={peer[key]}")
    return "  " + " ".join(parts) + f" ({str(peer.get('pk', ''))[:12]})"


def _super_peer_line(entry: Any) -> str:
    if not isinstance(entry, dict):
        return f"  {entry}"
    latency = entry.get("latency_ms")
    shown = "unknown" if latency is None else f"{latency} ms"
    return f"  {entry.get('url', '?')} latency={shown} {entry.get('state', '')}".rstrip()


def render_status(status: dict[str, Any]) -> str:
    """Return the status as lines of text for `netsody status`."""
    lines = [
        f"node id:     {status.get('identity')}",
        f"version:     {status.get('version')}",
        f"controller:  {status.get('controller') or 'none'}"
        + (" (logged in)" if status.get("logged_in") else ""),
        "super peers:",
    ]
    sp_status = status.get("super_peer_status") or []
    lines += (
        [_super_peer_line(e) for e in sp_status]
        or [f"  {url} latency=unknown" for url in status.get("super_peers", [])]
        or ["  none"]
    )
    lines.append("networks:")
    for net in status.get("networks", []):
        line = f"  {net.get('name') or net.get('id')} {net.get('network', '')} "
        line += (
            f"address={net.get('address', '-')} state={net.get('state')} source={net.get('source')}"
        )
        lines.append(line)
        if net.get("error"):
            lines.append(f"    error: {net['error']}")
    if not status.get("networks"):
        lines.append("  none")
    lines.append("peers:")
    lines += [_peer_line(peer) for peer in status.get("peers", [])] or ["  none"]
    dns = status.get("dns", {})
    lines.append(
        f"dns:         resolver {dns.get('resolver') or 'not running'}, system resolver "
        f"{dns.get('system_resolver')} ({dns.get('detail')})"
    )
    for error in [*status.get("errors", []), status.get("dataplane_error")]:
        if error:
            lines.append(f"error: {error}")
    return "\n".join(lines)
