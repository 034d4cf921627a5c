"""Run the data plane alone for one manually managed network file (no controller, no daemon).

    python -m netsody_agent.dataplane.run --network net.toml --identity node.key \\
        --listen-port 7000 --peer PK=10.0.0.2:7000 [--status-file status.json]

Creates the TUN device, gives it this node's address from the file, starts the data plane and
applies the compiled network. SIGHUP reloads the network file; SIGTERM and SIGINT stop. The
status (see `DataPlane.status`) is written to `--status-file` every second when given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from netsody_agent.dataplane import DataPlane
from netsody_agent.tun import open_tun
from netsody_common.document import parse_document
from netsody_common.errors import NetsodyError
from netsody_common.identity import Identity
from netsody_common.policy import compile_for_node

logger = logging.getLogger("netsody_agent.dataplane.run")

DEFAULT_MTU = 1280


def parse_peer(value: str) -> tuple[str, tuple[str, int]]:
    """Parse `PK=HOST:PORT` into (pk, (host, port))."""
    pk, separator, endpoint = value.partition("=")
    host, colon, port = endpoint.rpartition(":")
    if not separator or not colon or not port.isdigit():
        raise argparse.ArgumentTypeError(f"invalid --peer {value!r}: expected PK=HOST:PORT")
    return pk.lower(), (host, int(port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m netsody_agent.dataplane.run")
    parser.add_argument("--network", required=True, type=Path, help="network TOML file")
    parser.add_argument("--identity", required=True, type=Path, help="identity key file")
    parser.add_argument("--tun", default="netsody", help="TUN device name (default netsody)")
    parser.add_argument("--mtu", type=int, default=DEFAULT_MTU, help="TUN MTU in bytes")
    parser.add_argument("--listen-port", type=int, default=0, help="UDP port (0 picks one)")
    parser.add_argument(
        "--peer", action="append", type=parse_peer, default=[], help="PK=HOST:PORT of a peer"
    )
    parser.add_argument("--super-peer", action="append", default=[], help="super peer URL")
    parser.add_argument(
        "--super-peer-ca", help="CA file to verify super peers with (default: system CAs)"
    )
    parser.add_argument("--status-file", type=Path, help="write the status JSON here every second")
    parser.add_argument("--log-level", default="INFO")
    return parser


def load_network(path: Path, pk: str) -> tuple[Any, IPv4Interface]:
    """Parse and compile the network file for `pk`; return it and this node's TUN address."""
    document = parse_document(path.read_text())
    compiled = compile_for_node(document, pk)
    return compiled, IPv4Interface(f"{compiled.ip}/{document.network.prefixlen}")


async def run(args: argparse.Namespace) -> None:
    identity = Identity.load(args.identity)
    compiled, interface = load_network(args.network, identity.pk)
    tun = open_tun(args.tun)
    try:
        tun.set_address(interface)
        tun.set_mtu(args.mtu)
        tun.set_up()
        plane = DataPlane(
            identity,
            tun,
            super_peers=args.super_peer,
            listen_port=args.listen_port,
            super_peer_cafile=args.super_peer_ca,
        )
        await plane.start()
        for pk, endpoint in args.peer:
            plane.set_peer_endpoints(pk, [endpoint])
        await plane.apply([compiled])
        await _serve(plane, args)
        await plane.stop()
    finally:
        tun.close()


async def _serve(plane: DataPlane, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    while not stop.is_set():
        if reload_requested.is_set():
            reload_requested.clear()
            await _reload(plane, args.network)
        if args.status_file is not None:
            _write_status(args.status_file, plane.status())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def _reload(plane: DataPlane, path: Path) -> None:
    try:
        compiled, _interface = load_network(path, plane.identity.pk)
    except (OSError, NetsodyError) as error:
        logger.error("reloading %s failed, keeping the previous network: %s", path, error)
        return
    await plane.apply([compiled])


def _write_status(path: Path, status: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(status))
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        asyncio.run(run(args))
    except (OSError, NetsodyError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
