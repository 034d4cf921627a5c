"""The `netsody` command: the daemon (`run`) and the commands that talk to it.

Every command except `run` and `version` calls the daemon through the local API (a Unix socket
in the state directory), so the daemon must be running. `login` runs the OAuth 2.0 device flow
in this process, because it prints to the user's terminal, and then hands the access token to
the daemon, which keeps the identity key and signs the pairing. The secret key never leaves
the daemon, and `login` works for a user holding the local token as well as for root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from netsody_agent import __version__
from netsody_agent.errors import AgentError, LocalApiError
from netsody_agent.settings import DEFAULT_STATE_DIR

STATE_DIR_ENV = "NETSODY_STATE_DIR"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
MIN_MTU = 68
MAX_MTU = 65535


def _default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `netsody` with every command and option."""
    parser = argparse.ArgumentParser(
        prog="netsody",
        description="Netsody agent: joins this device to overlay networks.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=_default_state_dir(),
        help=f"agent state directory (identity, settings, local API socket); default "
        f"${STATE_DIR_ENV} or {DEFAULT_STATE_DIR}",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_login(commands, common)
    _add_join(commands, common)
    _add_run(commands, common)
    status = commands.add_parser("status", parents=[common], help="show the agent's state")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    _add_network(commands, common)
    commands.add_parser(
        "logout", parents=[common], help="forget the node credential and the controller's networks"
    )
    commands.add_parser("version", help="print the agent version")
    return parser


def _add_login(commands: Any, common: argparse.ArgumentParser) -> None:
    login = commands.add_parser(
        "login",
        parents=[common],
        help="store the settings, sign in with the device flow and pair this device",
        description="Store the given settings (each can be changed on its own later), sign in "
        "with the OAuth 2.0 device authorization flow and pair this device with the controller. "
        "Needs the daemon (`netsody run`), which signs the pairing with the node's key.",
    )
    login.add_argument(
        "--controller", help="controller API URL, e.g. https://controller.example.com/api"
    )
    login.add_argument("--auth-url", help="OpenID provider (issuer) URL; needs --auth-client-id")
    login.add_argument("--auth-client-id", help="OIDC client id of the agent; needs --auth-url")
    login.add_argument(
        "--super-peer",
        action="append",
        dest="super_peers",
        metavar="URL",
        help="super peer URL, e.g. https://sp.example.com/; repeat for several",
    )


def _add_join(commands: Any, common: argparse.ArgumentParser) -> None:
    join = commands.add_parser(
        "join", parents=[common], help="join a network with a join key (no browser needed)"
    )
    join.add_argument("--controller", required=True, help="controller API URL")
    join.add_argument("--join-key", required=True, help="join key created in the dashboard")
    join.add_argument(
        "--super-peer", action="append", dest="super_peers", metavar="URL",
        help="super peer URL; repeat for several",
    )  # fmt: skip


def _add_run(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", parents=[common], help="run the agent daemon (as root)")
    run.add_argument("--device", default="netsody", help="TUN device name (default: netsody)")
    run.add_argument(
        "--mtu", type=_mtu, default=1280, help="MTU of the TUN device in bytes (default: 1280)"
    )
    run.add_argument(
        "--dns-address",
        default="127.0.0.153:53",
        metavar="HOST:PORT",
        help="where the resolver for *.netsody.me listens (default: 127.0.0.153:53)",
    )
    run.add_argument(
        "--listen-port",
        type=int,
        default=0,
        help="UDP port of the data plane (default: 0, any free port)",
    )
    run.add_argument(
        "--super-peer-ca",
        type=Path,
        metavar="FILE",
        help="PEM file of CA certificates that the super peers' TLS certificates must chain "
        "to (for self-signed super peers); default $SSL_CERT_FILE if set, else the system store",
    )
    run.add_argument(
        "--peer-endpoint",
        action="append",
        default=[],
        type=_peer_endpoint,
        metavar="PK=HOST:PORT",
        help="static UDP endpoint of a peer (its public key in hex), dialled directly without "
        "asking a super peer; repeat for several",
    )
    run.add_argument(
        "--log-level", default=os.environ.get("NETSODY_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
        help="log level (default: $NETSODY_LOG_LEVEL or INFO)",
    )  # fmt: skip
    run.add_argument(
        "--log-format", default="text", choices=["text", "json"],
        help="log format on stderr: text or JSON lines (default: text)",
    )  # fmt: skip


def _mtu(text: str) -> int:
    """Return an MTU that Linux accepts for a TUN device: 68 (the IPv4 minimum) to 65535."""
    try:
        mtu = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise argparse.ArgumentTypeError(f"--mtu {mtu} is out of range: use {MIN_MTU} to {MAX_MTU}")
    return mtu


def _peer_endpoint(text: str) -> tuple[str, str, int]:
    pk, _, endpoint = text.partition("=")
    host, _, port = endpoint.rpartition(":")
    if len(pk) != 64 or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PK=HOST:PORT (a 64-character hex key, a host and a UDP port)"
        )
    return pk.lower(), host.strip("[]"), int(port)


def _add_network(commands: Any, common: argparse.ArgumentParser) -> None:
    network = commands.add_parser(
        "network",
        help="manage manually managed networks",
        description="Manage networks read from a file:// or https:// URL. An https:// server "
        "must have a certificate trusted by the system, or by the CA file that SSL_CERT_FILE "
        "names in the daemon's environment.",
    )
    actions = network.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps = {
        "add": "add a network from a file:// or https:// URL "
        "(https://user:pass@host/path for basic auth)",
        "remove": "remove a manually managed network",
        "enable": "apply a disabled network again (local only)",
        "disable": "stop applying a network without removing it (local only)",
    }
    for action, text in helps.items():
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("url", metavar="URL", help="network URL, as given to `network add`")


def main(argv: list[str] | None = None) -> int:
    """Run the `netsody` command; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"netsody {__version__}")
        return EXIT_OK
    if not sys.platform.startswith("linux"):
        print(
            f"netsody {args.command}: not supported on this platform ({sys.platform})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.command == "login" and bool(args.auth_url) != bool(args.auth_client_id):
        parser.error("--auth-url and --auth-client-id must be given together")
    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
    try:
        return handler(args)
    except LocalApiError as exc:
        print(f"netsody {args.command}: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    except AgentError as exc:
        print(f"netsody {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _client(args: argparse.Namespace) -> Any:
    from netsody_agent.localapi import LocalApiClient

    return LocalApiClient(args.state_dir)


def _super_peer_ca(option: Path | None) -> str | None:
    """Return the CA file for super peers: the option, else $SSL_CERT_FILE, else None.

    aioquic does not read SSL_CERT_FILE itself, so the agent passes it on.
    """
    path = option or (
        Path(os.environ["SSL_CERT_FILE"]) if os.environ.get("SSL_CERT_FILE") else None
    )
    if path is None:
        return None
    if not path.is_file():
        raise AgentError(f"super peer CA file {path} not found: pass an existing PEM file")
    return str(path)


def cmd_run(args: argparse.Namespace) -> int:
    from netsody_agent.daemon import Daemon, DaemonOptions
    from netsody_agent.logsetup import configure_logging

    configure_logging(args.log_level, args.log_format)
    host, _, port = args.dns_address.rpartition(":")
    if not host or not port.isdigit():
        print(f"netsody run: --dns-address {args.dns_address!r} is not HOST:PORT", file=sys.stderr)
        return EXIT_USAGE
    options = DaemonOptions(
        state_dir=args.state_dir,
        device=args.device,
        mtu=args.mtu,
        dns_host=host,
        dns_port=int(port),
        listen_port=args.listen_port,
        peer_endpoints=tuple(args.peer_endpoint),
        super_peer_ca=_super_peer_ca(args.super_peer_ca),
    )
    asyncio.run(Daemon(options).run())
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    from netsody_agent import deviceflow

    client = _client(args)
    # The controller is stored only when pairing succeeds, so a failed login keeps the device
    # logged in to its current controller.
    settings = client.call(
        "settings.update",
        {
            "auth_url": args.auth_url,
            "auth_client_id": args.auth_client_id,
            "super_peers": args.super_peers,
        },
    )
    controller = args.controller or settings.get("controller")
    missing = [opt for opt, value in (("--controller", controller),
               ("--auth-url", settings.get("auth_url")),
               ("--auth-client-id", settings.get("auth_client_id"))) if not value]  # fmt: skip
    if missing:
        raise AgentError(f"no {', '.join(missing)} stored yet: pass them to `netsody login`")
    with httpx.Client() as http:
        endpoints = deviceflow.discover(http, settings["auth_url"])
        authorization = deviceflow.request_device_code(http, endpoints, settings["auth_client_id"])
        print(f"To sign in, open {authorization.verification_uri} and enter the code "
              f"{authorization.user_code}")  # fmt: skip
        if authorization.verification_uri_complete:
            print(f"or open {authorization.verification_uri_complete}")
        sys.stdout.flush()
        token = deviceflow.poll_for_token(
            http, endpoints, settings["auth_client_id"], authorization
        )
    result = client.call(
        "login.pair", {"access_token": token["access_token"], "controller": controller}
    )
    print(
        f"Paired this device ({result['pk'][:16]}...) with {controller}; "
        f"device id {result.get('device_id', 'unknown')}"
    )
    return EXIT_OK


def cmd_join(args: argparse.Namespace) -> int:
    result = _client(args).call(
        "join",
        {"controller": args.controller, "join_key": args.join_key, "super_peers": args.super_peers},
    )
    print(f"Joined network {result.get('network_id', '')} as node {result['pk'][:16]}...")
    if result.get("error"):
        print(f"warning: {result['error']}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from netsody_agent.statusview import render_status

    status = _client(args).call("status")
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_status(status))
    return EXIT_OK


def cmd_network(args: argparse.Namespace) -> int:
    result = _client(args).call(f"network.{args.action}", {"url": args.url})
    if args.action == "add":
        names = ", ".join(result.get("networks", [])) or "none yet"
        print(f"Added {result.get('source', '')}: networks {names}")
        if result.get("error"):
            print(f"warning: {result['error']}", file=sys.stderr)
            return EXIT_FAILED
    elif args.action == "remove":
        print(f"Removed {result['removed']}")
    else:
        print(f"{'Enabled' if result['enabled'] else 'Disabled'} {result['url']}")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    _client(args).call("logout")
    print("Logged out: the node credential and the controller's networks are removed")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "login": cmd_login,
    "join": cmd_join,
    "status": cmd_status,
    "network": cmd_network,
    "logout": cmd_logout,
}


if __name__ == "__main__":
    sys.exit(main())
