"""`netsody-controller dev`: the controller and a development OpenID provider on one machine.

No Docker and no configuration: everything lives in a state directory (SQLite database,
controller secret, the provider's signing keys and users). Redis is not used, so notifications
stay in the process and Celery tasks run eagerly. The provider binds 127.0.0.1 by default and
signs in anyone as anyone, which is why this mode is for development only.
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from netsody_controller.devidp import (
    AGENT_CLIENT_ID,
    CONTROLLER_CLIENT_ID,
    DevIdpSettings,
    RunningDevIdp,
    default_clients,
    start_dev_idp,
)

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".netsody-dev")
DEFAULT_SUPER_PEER = "https://127.0.0.1:8443/"
IDP_HOST = "127.0.0.1"
ASGI_APPLICATION = "netsody_controller.asgi:application"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netsody-controller dev",
        description="Run the controller with SQLite, no Redis and a development-only OpenID "
        "provider on 127.0.0.1. For development only.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="controller bind address (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8080, help="controller TCP port (default 8080)")
    parser.add_argument(
        "--idp-host",
        default=IDP_HOST,
        help="bind address of the OpenID provider (default 127.0.0.1); another address lets "
        "devices in network namespaces sign in, and exposes a provider that signs in anyone",
    )
    parser.add_argument(
        "--idp-port", type=int, default=9001, help="TCP port of the OpenID provider (default 9001)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="directory for the database, secrets and provider state (default ./.netsody-dev)",
    )
    parser.add_argument(
        "--super-peer",
        action="append",
        help=f"super peer URL for the printed login command; repeatable "
        f"(default {DEFAULT_SUPER_PEER})",
    )
    return parser


def public_host(host: str) -> str:
    """Return the host to put in URLs for a bind address (a wildcard becomes loopback)."""
    if host in ("0.0.0.0", ""):  # noqa: S104 - compares, does not bind
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def controller_urls(host: str, port: int) -> list[str]:
    """Return the base URLs a browser may use for the controller (redirect URIs need each)."""
    urls = [f"http://{public_host(host)}:{port}"]
    for alias in ("127.0.0.1", "localhost"):
        url = f"http://{alias}:{port}"
        if url not in urls and public_host(host) in ("127.0.0.1", "localhost"):
            urls.append(url)
    return urls


def dev_environment(
    state_dir: Path,
    *,
    host: str,
    port: int,
    idp_url: str,
    super_peers: Sequence[str] = (DEFAULT_SUPER_PEER,),
) -> dict[str, str]:
    """Return the controller's environment for development mode.

    `state_dir` must be absolute. `main` writes these values over the shell's, so a production
    DATABASE_URL or REDIS_URL set in the shell is not used.
    """
    discovery_url = f"{idp_url}/.well-known/openid-configuration"
    controller_url = controller_urls(host, port)[0]
    return {
        "DJANGO_SETTINGS_MODULE": "netsody_controller.settings",
        "NETSODY_DEV": "true",
        "NETSODY_LOG_FORMAT": "text",
        "APP_HOST": host,
        "APP_PORT": str(port),
        "DATABASE_URL": f"sqlite:///{state_dir / 'controller.sqlite3'}",
        "REDIS_URL": "",
        "NETSODY_CONTROLLER_SECRET_PATH": str(state_dir / "controller_secret"),
        "OAUTH_CLIENT_ID": CONTROLLER_CLIENT_ID,
        "OAUTH_PATH": discovery_url,
        "OAUTH_AUDIENCE": CONTROLLER_CLIENT_ID,
        "OAUTH_AGENT_PATH": discovery_url,
        "OAUTH_AGENT_AUDIENCE": AGENT_CLIENT_ID,
        "NETSODY_DASHBOARD_API_BASE_URL": f"{controller_url}/api",
        "NETSODY_DASHBOARD_OIDC_AUTHORITY": idp_url,
        "NETSODY_DASHBOARD_OIDC_CLIENT_ID": CONTROLLER_CLIENT_ID,
        "NETSODY_DASHBOARD_OIDC_SCOPE": "openid profile email",
        "NETSODY_DASHBOARD_DEVICE_AUTHORIZATION_URL": f"{idp_url}/device",
        "NETSODY_DASHBOARD_SUPER_PEERS": ",".join(super_peers),
    }


def login_command(controller_url: str, idp_url: str, super_peers: Sequence[str]) -> str:
    """Return the `netsody login` command for agents of this development controller."""
    parts = [
        "netsody login",
        f"--controller {controller_url}/api",
        f"--auth-url {idp_url}",
        f"--auth-client-id {AGENT_CLIENT_ID}",
        *(f"--super-peer {url}" for url in super_peers),
    ]
    return " ".join(parts)


def _migrate() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=1)


def _serve(host: str, port: int) -> None:
    import uvicorn

    # log_config=None keeps the logging configuration that Django's settings installed.
    # One process only: without Redis, configuration changes reach waiting agents in-process.
    uvicorn.run(
        ASGI_APPLICATION,
        host=host,
        port=port,
        workers=1,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )


def _print_summary(controller_url: str, idp: RunningDevIdp, super_peers: Sequence[str]) -> None:
    print(
        f"\nNetsody controller (development mode)\n"
        f"  Dashboard:        {controller_url}/\n"
        f"  API:              {controller_url}/api\n"
        f"  Swagger UI:       {controller_url}/swagger-ui/\n"
        f"  OpenID provider:  {idp.base_url} (development only; device sign-in at "
        f"{idp.base_url}/device)\n\n"
        f"Log in an agent with:\n  {login_command(controller_url, idp.base_url, super_peers)}\n",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the development controller until interrupted; return the exit status."""
    args = build_parser().parse_args(argv)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    super_peers = args.super_peer or [DEFAULT_SUPER_PEER]
    urls = controller_urls(args.host, args.port)
    settings = DevIdpSettings(clients=default_clients(urls))
    try:
        idp = start_dev_idp(
            state_dir / "idp",
            host=args.idp_host,
            port=args.idp_port,
            settings=settings,
            banner_stream=sys.stderr,
        )
    except OSError as error:
        print(
            f"Cannot start the development OpenID provider on {args.idp_host}:{args.idp_port}: "
            f"{error}; choose another port with --idp-port",
            file=sys.stderr,
        )
        return 1
    try:
        os.environ.update(
            dev_environment(
                state_dir,
                host=args.host,
                port=args.port,
                idp_url=idp.base_url,
                super_peers=super_peers,
            )
        )
        _migrate()
        _print_summary(urls[0], idp, super_peers)
        _serve(args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        idp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
