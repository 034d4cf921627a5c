"""Settings of netsody-sp from command-line flags and environment variables (flags win)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from netsody_superpeer.errors import ConfigError

DEFAULT_LISTEN = "[::]:8443"
DEFAULT_PROXY_PORTS = "49152-49407"
LETSENCRYPT_LIVE = Path("/etc/letsencrypt/live")


@dataclass(frozen=True)
class Settings:
    """Everything netsody-sp needs to run; built by `parse_settings`."""

    listen_host: str
    listen_port: int
    cert: Path
    key: Path
    alt_svc_port: int
    proxy_public_addresses: tuple[IPv4Address | IPv6Address, ...]
    proxy_ports: range
    prometheus_listen: tuple[str, int] | None
    prometheus_token: str | None
    max_sessions: int = 20_000
    max_sessions_per_address: int = 16
    max_streams_per_connection: int = 32
    max_ports_per_agent: int = 1
    relay_pps: int = 50_000
    relay_bps: int = 50_000_000
    relay_total_bps: int = 250_000_000
    relay_idle_timeout: float = 300.0
    session_idle_timeout: float = 120.0
    auth_timeout: float = 10.0
    handshake_timeout: float = 10.0
    cert_poll_interval: float = 5.0

    def __repr__(self) -> str:
        # SECURITY: the metrics token never appears in logs or tracebacks.
        token = "<set>" if self.prometheus_token else None
        return f"Settings(listen={self.listen_host}:{self.listen_port}, token={token})"


def parse_host_port(value: str, *, what: str) -> tuple[str, int]:
    """Parse `host:port` or `[v6]:port`; raise `ConfigError` naming `what` on failure."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 < number < 65536:
        raise ConfigError(f"{what}: {value!r} is not HOST:PORT (for example [::]:8443)")
    return host, number


def parse_port_range(value: str) -> range:
    """Parse `FIRST-LAST` into an inclusive port range."""
    first, sep, last = value.strip().partition("-")
    try:
        start, end = int(first), int(last if sep else first)
    except ValueError:
        start, end = 0, -1
    if not (1 <= start <= end <= 65535):
        raise ConfigError(
            f"--proxy-ports: {value!r} is not a port range like {DEFAULT_PROXY_PORTS}"
        )
    return range(start, end + 1)


def parse_addresses(value: str) -> tuple[IPv4Address | IPv6Address, ...]:
    """Parse comma-separated IPv4 and IPv6 addresses."""
    result = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            result.append(ip_address(item))
        except ValueError:
            raise ConfigError(
                f"--proxy-public-addresses: {item!r} is not an IPv4 or IPv6 address"
            ) from None
    return tuple(result)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of netsody-sp."""
    parser = argparse.ArgumentParser(
        prog="netsody-sp",
        description="Netsody super peer: signaling, NAT traversal and a MASQUE relay "
        "over HTTP/3 (UDP) and HTTP/2 (TCP).",
    )
    add = parser.add_argument
    add(
        "--listen",
        help=f"address and port for HTTP/3 on UDP and HTTP/2 on TCP "
        f"(env NETSODY_SP_LISTEN, default {DEFAULT_LISTEN})",
    )
    add(
        "--cert",
        help="PEM certificate chain (env NETSODY_SP_CERT, default "
        "/etc/letsencrypt/live/$NETSODY_SP_DOMAIN/fullchain.pem); reloaded when it changes",
    )
    add(
        "--key",
        help="PEM private key (env NETSODY_SP_KEY, default "
        "/etc/letsencrypt/live/$NETSODY_SP_DOMAIN/privkey.pem)",
    )
    add(
        "--alt-svc-port",
        type=int,
        help="UDP port advertised for HTTP/3 in Alt-Svc "
        "(env NETSODY_SP_ALT_SVC_PORT, default the listen port)",
    )
    add(
        "--proxy-public-addresses",
        help="comma-separated IPv4/IPv6 addresses on which relay "
        "ports are bound and advertised (env NETSODY_SP_PROXY_PUBLIC_ADDRESSES); "
        "without them the relay is disabled",
    )
    add(
        "--proxy-ports",
        help="UDP port range for relay ports, FIRST-LAST "
        f"(env NETSODY_SP_PROXY_PORT_RANGE, default {DEFAULT_PROXY_PORTS})",
    )
    add(
        "--prometheus-listen",
        help="HOST:PORT of the Prometheus metrics endpoint "
        "(env NETSODY_PROMETHEUS_LISTEN, default disabled); requires "
        "'Authorization: Bearer $PROMETHEUS_TOKEN' when PROMETHEUS_TOKEN is set",
    )
    add("--max-sessions", type=int, default=20_000, help="connections in total (default 20000)")
    add(
        "--max-sessions-per-address",
        type=int,
        default=16,
        help="connections per client IP address (default 16)",
    )
    add(
        "--auth-timeout",
        type=float,
        default=10.0,
        help="seconds a new signaling stream has to authenticate (default 10)",
    )
    add(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to finish the TLS or QUIC handshake (default 10)",
    )
    add(
        "--max-streams-per-connection",
        type=int,
        default=32,
        help="requests one connection may open (default 32)",
    )
    add(
        "--max-ports-per-agent",
        type=int,
        default=1,
        help="relay ports one agent may hold at once (default 1)",
    )
    add(
        "--relay-pps",
        type=int,
        default=50_000,
        help="relayed packets per second per agent (default 50000)",
    )
    add(
        "--relay-bps",
        type=int,
        default=50_000_000,
        help="relayed bytes per second per agent (default 50000000)",
    )
    add(
        "--relay-total-bps",
        type=int,
        default=250_000_000,
        help="relayed bytes per second over all agents (default 250000000)",
    )
    add(
        "--relay-idle-timeout",
        type=float,
        default=300.0,
        help="seconds without relayed datagrams before a relay port is released (default 300)",
    )
    add(
        "--session-idle-timeout",
        type=float,
        default=120.0,
        help="seconds without messages before a signaling session is closed (default 120)",
    )
    add("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return parser


def parse_settings(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Combine parsed flags with the environment into `Settings`. Raises `ConfigError`."""
    env = os.environ if env is None else env
    listen_host, listen_port = parse_host_port(
        args.listen or env.get("NETSODY_SP_LISTEN") or DEFAULT_LISTEN, what="--listen"
    )
    cert, key = _certificate_paths(args, env)
    alt_svc = args.alt_svc_port or _env_int(env, "NETSODY_SP_ALT_SVC_PORT") or listen_port
    prometheus = args.prometheus_listen or env.get("NETSODY_PROMETHEUS_LISTEN") or None
    token = env.get("PROMETHEUS_TOKEN") or env.get("NETSODY_SP_PROMETHEUS_TOKEN") or None
    _check_positive(args)
    return Settings(
        listen_host=listen_host,
        listen_port=listen_port,
        cert=cert,
        key=key,
        alt_svc_port=alt_svc,
        proxy_public_addresses=parse_addresses(
            args.proxy_public_addresses or env.get("NETSODY_SP_PROXY_PUBLIC_ADDRESSES") or ""
        ),
        proxy_ports=parse_port_range(
            args.proxy_ports or env.get("NETSODY_SP_PROXY_PORT_RANGE") or DEFAULT_PROXY_PORTS
        ),
        prometheus_listen=(
            parse_host_port(prometheus, what="NETSODY_PROMETHEUS_LISTEN") if prometheus else None
        ),
        prometheus_token=token,
        max_sessions=args.max_sessions,
        max_sessions_per_address=args.max_sessions_per_address,
        max_streams_per_connection=args.max_streams_per_connection,
        max_ports_per_agent=args.max_ports_per_agent,
        relay_pps=args.relay_pps,
        relay_bps=args.relay_bps,
        relay_total_bps=args.relay_total_bps,
        relay_idle_timeout=args.relay_idle_timeout,
        session_idle_timeout=args.session_idle_timeout,
        auth_timeout=args.auth_timeout,
        handshake_timeout=args.handshake_timeout,
    )


def _certificate_paths(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Path, Path]:
    domain = env.get("NETSODY_SP_DOMAIN", "").strip()
    cert = args.cert or env.get("NETSODY_SP_CERT")
    key = args.key or env.get("NETSODY_SP_KEY")
    if domain:
        cert = cert or str(LETSENCRYPT_LIVE / domain / "fullchain.pem")
        key = key or str(LETSENCRYPT_LIVE / domain / "privkey.pem")
    if not cert or not key:
        raise ConfigError(
            "no certificate configured: pass --cert and --key, or set NETSODY_SP_DOMAIN to use "
            "/etc/letsencrypt/live/<domain>/fullchain.pem and privkey.pem"
        )
    return Path(cert), Path(key)


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer port number") from None


def _check_positive(args: argparse.Namespace) -> None:
    for name in (
        "max_sessions",
        "max_sessions_per_address",
        "max_ports_per_agent",
        "relay_pps",
        "relay_bps",
        "relay_total_bps",
        "relay_idle_timeout",
        "auth_timeout",
        "handshake_timeout",
        "session_idle_timeout",
    ):
        if getattr(args, name) <= 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: {getattr(args, name)} must be greater than 0")
