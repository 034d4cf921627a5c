"""Counters of the super peer and the Prometheus endpoint that exports them.

The relay's hot path increments plain Python integers (no locks, no label lookups); a custom
collector turns them into Prometheus metrics when the endpoint is scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

TRANSPORTS = ("h3", "h2")
# "in": from the public relay port into an agent's tunnel; "out": from a tunnel to the Internet.
DIRECTIONS = ("in", "out")
_REQUEST_TIMEOUT = 5.0
_MAX_REQUEST_BYTES = 8192


class Stats:
    """Counters and gauges of one super peer process."""

    def __init__(self) -> None:
        self.sessions: Counter[str] = Counter()  # open signaling sessions by transport
        self.connections: Counter[str] = Counter()  # open HTTP connections by transport
        self.authentications: Counter[str] = Counter()  # by result
        self.coordinations: Counter[str] = Counter()  # by result
        self.drops: Counter[str] = Counter()  # by reason
        # [packets, bytes] per (direction, transport); the relay keeps references to these lists.
        self.relayed: dict[tuple[str, str], list[int]] = {
            (d, t): [0, 0] for d in DIRECTIONS for t in TRANSPORTS
        }
        self.ports_in_use: Callable[[], int] = lambda: 0
        self.ports_free: Callable[[], int] = lambda: 0

    def relay_counter(self, direction: str, transport: str) -> list[int]:
        """Return the `[packets, bytes]` list that the relay increments in place."""
        return self.relayed[(direction, transport)]


class StatsCollector(Collector):
    """Exports `Stats` as Prometheus metrics."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield _gauge(
            "netsody_sp_sessions",
            "Authenticated signaling sessions",
            "transport",
            {t: s.sessions[t] for t in TRANSPORTS},
        )
        yield _gauge(
            "netsody_sp_connections",
            "Open HTTP connections",
            "transport",
            {t: s.connections[t] for t in TRANSPORTS},
        )
        yield _counter(
            "netsody_sp_authentications",
            "Authentication attempts",
            "result",
            dict(s.authentications),
        )
        yield _counter(
            "netsody_sp_coordinations", "Peer connect requests", "result", dict(s.coordinations)
        )
        yield _counter(
            "netsody_sp_drops", "Dropped datagrams and requests", "reason", dict(s.drops)
        )
        ports = GaugeMetricFamily("netsody_sp_relay_ports", "Relay ports", labels=["state"])
        ports.add_metric(["in_use"], s.ports_in_use())
        ports.add_metric(["free"], s.ports_free())
        yield ports
        packets = CounterMetricFamily(
            "netsody_sp_relayed_packets", "Relayed UDP datagrams", labels=["direction", "transport"]
        )
        volume = CounterMetricFamily(
            "netsody_sp_relayed_bytes",
            "Relayed UDP payload bytes",
            labels=["direction", "transport"],
        )
        for (direction, transport), (count, size) in s.relayed.items():
            packets.add_metric([direction, transport], count)
            volume.add_metric([direction, transport], size)
        yield packets
        yield volume


def _gauge(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class MetricsServer:
    """A minimal HTTP/1.1 server for `GET /metrics`, guarded by a bearer token when one is set."""

    def __init__(self, stats: Stats, token: str | None) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(StatsCollector(stats))
        self._token = token
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        logger.info(
            "Prometheus metrics on %s:%d/metrics (token %s)",
            host,
            port,
            "required" if self._token else "not required",
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
            status, body = self._respond(head[:_MAX_REQUEST_BYTES])
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            writer.close()
            return
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
            + (b'WWW-Authenticate: Bearer realm="metrics"\r\n' if status.startswith("401") else b"")
            + b"\r\n"
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _respond(self, head: bytes) -> tuple[str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] != "GET" or parts[1].split("?")[0] != "/metrics":
            return "404 Not Found", b"not found: use GET /metrics\n"
        if self._token is not None:
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            offered = headers.get("authorization", "").encode()
            # SECURITY: constant-time comparison of the bearer token.
            if not hmac.compare_digest(offered, b"Bearer " + self._token.encode()):
                return "401 Unauthorized", b"missing or invalid bearer token\n"
        return "200 OK", generate_latest(self._registry)
