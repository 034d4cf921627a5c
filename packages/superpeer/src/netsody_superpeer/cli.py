"""Command-line entry point of netsody-sp."""

from __future__ import annotations

import asyncio
import logging
import sys

from netsody_common.errors import NetsodyError
from netsody_superpeer.config import build_parser, parse_settings
from netsody_superpeer.errors import SuperPeerError
from netsody_superpeer.server import run

logger = logging.getLogger("netsody_superpeer")


def main(argv: list[str] | None = None) -> int:
    """Parse flags and the environment, then run the super peer until a signal stops it."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = parse_settings(args)
        asyncio.run(run(settings))
    except (SuperPeerError, NetsodyError) as exc:
        logger.error("%s", exc)
        return 2
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
