"""Run the development-only OpenID provider: `python -m netsody_controller.devidp --help`."""

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from netsody_controller.devidp.provider import (
    DEVICE_CODE_GRANT,
    DevClient,
    DevIdpSettings,
    default_clients,
)
from netsody_controller.devidp.server import bind_dev_idp, serve_forever
from netsody_controller.devidp.store import SUPPORTED_ALGORITHMS

DEFAULT_CONTROLLER_URLS = ("http://127.0.0.1:8080", "http://localhost:8080")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m netsody_controller.devidp",
        description="Development-only OpenID provider. It signs in anyone as any email address; "
        "never expose it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9001, help="TCP port to bind (default 9001)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".netsody-dev/idp"),
        help="directory for the signing keys and users (default .netsody-dev/idp)",
    )
    parser.add_argument("--issuer", help="issuer URL, when it differs from http://HOST:PORT")
    parser.add_argument(
        "--controller-url",
        action="append",
        help="controller base URL whose /callback and Swagger UI redirect the netsody-controller "
        "client may use; repeatable (default http://127.0.0.1:8080 and http://localhost:8080)",
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        help="public client id to register instead of the two defaults; repeatable",
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="CLIENT_ID=URI",
        help="add a redirect URI to a client; repeatable",
    )
    parser.add_argument("--algorithm", choices=SUPPORTED_ALGORITHMS, default="RS256")
    parser.add_argument("--access-token-lifetime", type=int, default=3600, help="seconds")
    parser.add_argument("--device-code-lifetime", type=int, default=600, help="seconds")
    parser.add_argument(
        "--device-interval", type=int, default=5, help="device polling interval in seconds"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def clients_from_args(args: argparse.Namespace) -> tuple[DevClient, ...]:
    """Build the client list from --client, --controller-url and --redirect-uri."""
    all_grants = frozenset({"authorization_code", "refresh_token", DEVICE_CODE_GRANT})
    if args.client:
        clients = {client_id: DevClient(client_id, (), all_grants) for client_id in args.client}
    else:
        urls = args.controller_url or DEFAULT_CONTROLLER_URLS
        clients = {client.client_id: client for client in default_clients(urls)}
    for entry in args.redirect_uri:
        client_id, separator, uri = entry.partition("=")
        if not separator or client_id not in clients:
            raise SystemExit(
                f"--redirect-uri {entry!r}: expected CLIENT_ID=URI with one of {', '.join(clients)}"
            )
        client = clients[client_id]
        clients[client_id] = replace(client, redirect_uris=(*client.redirect_uris, uri))
    return tuple(clients.values())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    settings = DevIdpSettings(
        clients=clients_from_args(args),
        algorithm=args.algorithm,
        access_token_lifetime=args.access_token_lifetime,
        device_code_lifetime=args.device_code_lifetime,
        device_interval=args.device_interval,
    )
    try:
        idp, server = bind_dev_idp(
            args.state_dir, host=args.host, port=args.port, settings=settings, issuer=args.issuer
        )
    except OSError as error:
        print(f"Cannot bind {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    serve_forever(idp, server, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
