"""Bridge a TCP port on the loopback of a network namespace to the host's loopback.

A namespace has its own loopback, so a daemon inside cannot reach a server on the host's
127.0.0.1. Two copies of this script join them through a Unix socket in the shared filesystem:

    python loopback_bridge.py unix-to-tcp SOCKET PORT   # host: SOCKET -> 127.0.0.1:PORT
    python loopback_bridge.py tcp-to-unix PORT SOCKET   # namespace: 127.0.0.1:PORT -> SOCKET

Traffic never leaves the two loopbacks.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def _handler(connect):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await connect()
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    return handle


async def main(mode: str, first: str, second: str) -> None:
    if mode == "unix-to-tcp":
        port = int(second)
        handle = _handler(lambda: asyncio.open_connection("127.0.0.1", port))
        server = await asyncio.start_unix_server(handle, path=first)
    else:
        handle = _handler(lambda: asyncio.open_unix_connection(second))
        server = await asyncio.start_server(handle, "127.0.0.1", int(first))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
