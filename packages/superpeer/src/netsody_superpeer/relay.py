"""The MASQUE relay: a pool of public UDP ports and the bound tunnels that use them.

Each tunnel owns one port number, bound on every proxy public address. Datagrams from the
agent's tunnel leave from that port to the target they name; datagrams that arrive at the port
go into the tunnel with their sender's address, but only from addresses the agent has sent to.
Sockets are read with `loop.add_reader` and written with `sock.sendto` directly, so a relayed
datagram costs one dictionary lookup, a token-bucket check and one system call of Python work.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import deque
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from netsody_common.wire import (
    WireError,
    decode_bound_datagram,
    encode_bound_datagram,
)
from netsody_superpeer.logutil import warn_repeated
from netsody_superpeer.metrics import Stats

if TYPE_CHECKING:
    from netsody_superpeer.hub import Connection

logger = logging.getLogger(__name__)

# Peers one tunnel may send to; the oldest permission is forgotten beyond this.
MAX_ALLOWED_PEERS = 4096
# Datagrams read from one socket per readiness callback, so one busy port cannot starve others.
_READ_BATCH = 64
# Token buckets hold this many seconds of their rate as burst.
_BURST_SECONDS = 0.25


class TokenBucket:
    """A rate limit of `rate` units per second with `burst` units (default a quarter second)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate * _BURST_SECONDS, 1.0)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.stamp = now
        else:
            elapsed = 0.0
        tokens = self.tokens + elapsed * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True


class Tunnel:
    """One bound CONNECT-UDP tunnel of an agent (see docs/superpeer-protocol.md)."""

    def __init__(
        self,
        relay: Relay,
        conn: Connection,
        stream_id: int,
        *,
        pk: str,
        port: int,
        sockets: dict[int, socket.socket],
    ) -> None:
        now = time.monotonic()
        self.relay = relay
        self.conn = conn
        self.stream_id = stream_id
        self.pk = pk
        self.port = port
        self.sockets = sockets
        self.closed = False
        self.last_activity = now
        # SECURITY: inbound datagrams pass only from peers in this map (address -> prefix).
        self.allowed: dict[tuple[str, int], bytes] = {}
        self._packets = TokenBucket(relay.settings_pps, now)
        self._bytes = TokenBucket(relay.settings_bps, now)
        transport = conn.transport_name
        self._out = relay.stats.relay_counter("out", transport)
        self._in = relay.stats.relay_counter("in", transport)
        self._drops = relay.stats.drops

    def public_addresses(self) -> list[tuple[str, int]]:
        return [(str(ip), self.port) for ip in self.relay.public_addresses]

    def _admit(self, size: int, now: float) -> bool:
        if not self._packets.take(1, now) or not self._bytes.take(size, now):
            self._drops["agent_rate_limit"] += 1
            return False
        if not self.relay.total_bytes.take(size, now):
            self._drops["total_rate_limit"] += 1
            return False
        return True

    def from_agent(self, payload: bytes) -> None:
        """Send one HTTP datagram payload of the tunnel to the target it names."""
        now = time.monotonic()
        try:
            host, port, data = decode_bound_datagram(payload)
        except WireError:
            self._drops["malformed_datagram"] += 1
            return
        if not self._admit(len(data), now):
            return
        sock = self.sockets.get(6 if ":" in host else 4)
        if sock is None:
            self._drops["no_address_of_family"] += 1
            return
        key = (host, port)
        if key not in self.allowed:
            self._allow(key)
        local = self.relay.local_tunnel(host, port)
        if local is not None:
            # Both agents use relay ports of this super peer: hand the datagram over as if it
            # had crossed the network, from this tunnel's public address.
            local.from_public(data, (host, self.port))
            self._count_out(len(data), now)
            return
        try:
            sock.sendto(data, key)
        except OSError as exc:
            self._drops["send_failed"] += 1
            warn_repeated(
                logger, f"send:{exc.errno}", "relay send to %s:%d failed: %s", host, port, exc
            )
            return
        self._count_out(len(data), now)

    def _count_out(self, size: int, now: float) -> None:
        self.last_activity = now
        counter = self._out
        counter[0] += 1
        counter[1] += size

    def _allow(self, key: tuple[str, int]) -> None:
        if len(self.allowed) >= MAX_ALLOWED_PEERS:
            del self.allowed[next(iter(self.allowed))]
        self.allowed[key] = encode_bound_datagram(key[0], key[1], b"")

    def from_public(self, data: bytes, addr: tuple[str, int]) -> None:
        """Pass a datagram that arrived at the public port into the tunnel."""
        prefix = self.allowed.get((addr[0], addr[1]))
        if prefix is None:
            self._drops["sender_not_allowed"] += 1
            return
        now = time.monotonic()
        if not self._admit(len(data), now):
            return
        self.last_activity = now
        if self.conn.send_http_datagram(self.stream_id, prefix + data):
            counter = self._in
            counter[0] += 1
            counter[1] += len(data)
        else:
            self._drops["tunnel_congested"] += 1

    def read_ready(self, sock: socket.socket) -> None:
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                warn_repeated(
                    logger, f"recv:{exc.errno}", "relay port %d receive failed: %s", self.port, exc
                )
                return
            self.from_public(data, addr)


class Relay:
    """The pool of relay ports and the open tunnels."""

    def __init__(
        self,
        public_addresses: tuple[IPv4Address | IPv6Address, ...],
        ports: range,
        stats: Stats,
        *,
        pps: int,
        bps: int,
        total_bps: int,
    ) -> None:
        self.public_addresses = public_addresses
        self.stats = stats
        self.settings_pps = pps
        self.settings_bps = bps
        self.total_bytes = TokenBucket(total_bps, time.monotonic())
        self._free: deque[int] = deque(ports)
        self._public_hosts = {str(ip) for ip in public_addresses}
        self._by_port: dict[int, Tunnel] = {}
        self._size = len(ports)
        self.tunnels: set[Tunnel] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        stats.ports_free = lambda: len(self._free)
        stats.ports_in_use = lambda: self._size - len(self._free)

    @property
    def enabled(self) -> bool:
        return bool(self.public_addresses)

    def open(self, conn: Connection, stream_id: int, pk: str) -> Tunnel | None:
        """Bind a free port for a new tunnel; return None when no port can be bound."""
        for _ in range(len(self._free)):
            port = self._free.popleft()
            sockets = self._bind(port)
            if sockets is not None:
                tunnel = Tunnel(self, conn, stream_id, pk=pk, port=port, sockets=sockets)
                loop = asyncio.get_running_loop()
                for sock in sockets.values():
                    loop.add_reader(sock.fileno(), tunnel.read_ready, sock)
                self.tunnels.add(tunnel)
                self._by_port[port] = tunnel
                return tunnel
            # A port in use by another program goes to the back of the pool.
            self._free.append(port)
        return None

    def close(self, tunnel: Tunnel) -> None:
        """Close the tunnel's sockets and return its port to the pool."""
        if tunnel.closed:
            return
        tunnel.closed = True
        self.tunnels.discard(tunnel)
        if self._by_port.get(tunnel.port) is tunnel:
            del self._by_port[tunnel.port]
        loop = asyncio.get_running_loop()
        for sock in tunnel.sockets.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._free.append(tunnel.port)

    def local_tunnel(self, host: str, port: int) -> Tunnel | None:
        """Return the open tunnel whose public address is `host`:`port`, if this relay has it.

        Datagrams between two tunnels of this super peer skip the network: through the kernel
        they would cost two more system calls each, and behind a container runtime's NAT the
        public address may not even reach back (no hairpin NAT).
        """
        if host not in self._public_hosts:
            return None
        return self._by_port.get(port)

    def _bind(self, port: int) -> dict[int, socket.socket] | None:
        sockets: dict[int, socket.socket] = {}
        try:
            for ip in self.public_addresses:
                if ip.version in sockets:
                    continue  # one socket per family serves every address of it
                sockets[ip.version] = _bind_udp(str(ip), port, ip.version)
        except OSError as exc:
            for sock in sockets.values():
                sock.close()
            warn_repeated(logger, f"bind:{port}", "relay port %d cannot be bound: %s", port, exc)
            return None
        return sockets


def _bind_udp(host: str, port: int, version: int) -> socket.socket:
    """Bind a non-blocking UDP socket on `host:port`, or on the family's wildcard address
    when `host` is not local (a public address translated by NAT or a container runtime)."""
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if version == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            warn_repeated(
                logger,
                f"wildcard:{host}",
                "proxy public address %s is not local; binding relay ports on the wildcard address",
                host,
            )
            sock.bind(("::" if version == 6 else "0.0.0.0", port))  # noqa: S104
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    except OSError:
        sock.close()
        raise
    return sock
