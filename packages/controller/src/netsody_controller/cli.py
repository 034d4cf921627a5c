"""Command-line entry point of netsody-controller.

netsody-controller serve [--workers N]   the API under uvicorn on APP_HOST:APP_PORT
netsody-controller migrate               apply database migrations
netsody-controller worker                a Celery worker
netsody-controller beat                  the Celery beat scheduler
netsody-controller dev                   controller, OpenID provider and super peer locally
netsody-controller <django command>      any other Django management command
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

SETTINGS_MODULE = "netsody_controller.settings"
MAX_DEFAULT_WORKERS = 8
# Idle keep-alive connections stay open longer than the 30 s long poll, so agents reuse them
# instead of racing the server's close.
KEEP_ALIVE_SECS = 65


def default_workers(env: dict[str, str] | None = None, cpu_count: int | None = None) -> int:
    """Return WEB_CONCURRENCY when set, else min(2 * cores + 1, 8)."""
    env = os.environ if env is None else env
    raw = env.get("WEB_CONCURRENCY", "").strip()
    if raw:
        try:
            workers = int(raw)
        except ValueError:
            raise SystemExit(
                f"WEB_CONCURRENCY={raw!r} is not an integer: set a worker count"
            ) from None
        if workers < 1:
            raise SystemExit(f"WEB_CONCURRENCY={workers} must be at least 1")
        return workers
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return min(2 * cores + 1, MAX_DEFAULT_WORKERS)


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="netsody-controller serve")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: WEB_CONCURRENCY, else min(2 * cores + 1, 8))",
    )
    args = parser.parse_args(argv)
    import uvicorn
    from django.conf import settings

    workers = args.workers if args.workers is not None else default_workers()
    if workers < 1:
        raise SystemExit(f"--workers {workers} must be at least 1")
    uvicorn.run(
        "netsody_controller.asgi:application",
        host=settings.APP_HOST,
        port=settings.APP_PORT,
        workers=workers,
        log_config=None,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECS,
    )
    return 0


def _celery(argv: list[str]) -> int:
    from netsody_controller.celery import app

    app.start(argv=argv)
    return 0


def _dev(argv: list[str]) -> int:
    if importlib.util.find_spec("netsody_controller.devmode") is None:
        print(
            "netsody-controller dev: development mode is not available in this build",
            file=sys.stderr,
        )
        return 1
    module = importlib.import_module("netsody_controller.devmode")
    return int(module.main(argv) or 0)


def _django(argv: list[str]) -> int:
    from django.core.management import execute_from_command_line

    execute_from_command_line(["netsody-controller", *argv])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "dev":
        return _dev(args[1:])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(__doc__.strip())
        return 0
    command, rest = args[0], args[1:]
    if command == "serve":
        import django

        django.setup()
        return _serve(rest)
    if command == "worker":
        return _celery(["worker", "--loglevel", "INFO", *rest])
    if command == "beat":
        return _celery(["beat", "--loglevel", "INFO", *rest])
    return _django(args)


if __name__ == "__main__":
    sys.exit(main())
