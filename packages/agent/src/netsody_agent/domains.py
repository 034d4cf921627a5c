"""Domain resources in the agent: names sent to the gateway node, and resolved there.

On a client, `DomainForwarder` takes queries for names that match a domain resource this node
may use (`netsody_common.policy.CompiledNetwork.reachable_domain`) and forwards them over the
overlay to the resolver of that resource's gateway node (UDP port `GATEWAY_DNS_PORT` on the
gateway's overlay address). On the gateway, `GatewayResolver` answers only names of resources
it is the gateway for, and only to clients that a policy permits to use that resource. It
resolves them through the system resolver (the nameservers of /etc/resolv.conf), because the
gateway is the node that sees the internal DNS.

Both sides learn the returned IPv4 addresses into `CompiledNetwork.learned` (TTL clamped,
addresses per resource capped) and wait for `on_learned`, which installs the /32 routes on the
client and the forwarding rules on the gateway, before they answer. So the first packet to a
new address already finds its route. Only A queries are forwarded; AAAA and other types of a
resource name get an empty answer, because resources are reached over IPv4 only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any

from netsody_agent.dataplane.logs import RepeatLimiter
from netsody_agent.dns import (
    CLASS_IN,
    RCODE_NOERROR,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    TYPE_A,
    TYPE_ANY,
    Answer,
    DnsFormatError,
    Query,
    ResolverProtocol,
    build_query,
    build_response,
    parse_response,
)
from netsody_common._domains import MIN_TTL_SECONDS, clamp_ttl, unusable_reason
from netsody_common.policy import GATEWAY_DNS_PORT

logger = logging.getLogger(__name__)

# The client waits longer than the gateway, which tries its upstream servers in turn.
FORWARD_TIMEOUT_SECONDS = 5.0
UPSTREAM_TIMEOUT_SECONDS = 2.0
# A records of one answer that are learned and returned; 16 answers keep a response within
# the 512 bytes of plain DNS over UDP for names up to about 240 bytes.
MAX_ANSWER_ADDRESSES = 16
RESPONSE_BUFFER_BYTES = 4096
RESOLV_CONF = Path("/etc/resolv.conf")

OnLearned = Callable[[], Awaitable[None]]


async def query_a(
    server: tuple[str, int],
    name: str,
    *,
    wait_seconds: float,
    source: tuple[str, int] | None = None,
) -> Answer:
    """Send an A query for `name` to `server` over UDP and return the parsed answer.

    The query id is random and the socket is connected, so only datagrams from `server` that
    answer this question are taken; others are ignored until `wait_seconds` have passed.
    Raises TimeoutError when no answer arrives and OSError when sending fails.
    """
    family = socket.AF_INET6 if ip_address(server[0]).version == 6 else socket.AF_INET
    query_id = secrets.randbelow(0x10000)
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if source is not None:
            sock.bind(source)
        await loop.sock_connect(sock, server)
        await loop.sock_sendall(sock, build_query(name, TYPE_A, query_id=query_id))
        async with asyncio.timeout(wait_seconds):
            while True:
                data = await loop.sock_recv(sock, RESPONSE_BUFFER_BYTES)
                try:
                    return parse_response(data, query_id, name)
                except DnsFormatError as exc:
                    logger.debug("ignored a DNS response from %s: %s", server[0], exc)


def read_nameservers(path: Path = RESOLV_CONF) -> list[str]:
    """Return the `nameserver` addresses of a resolv.conf file, 127.0.0.1 when it names none.

    127.0.0.1 is the default that resolv.conf(5) gives for a file without nameservers.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        logger.warning("cannot read %s: %s; using 127.0.0.1", path, exc)
        return ["127.0.0.1"]
    servers = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1].split("%", 1)[0]
            try:
                servers.append(str(ip_address(address)))
            except ValueError:
                logger.warning("%s: nameserver %r is not an IP address", path, fields[1])
    return servers or ["127.0.0.1"]


def _empty(query: Query, rcode: int) -> bytes:
    return build_response(query, rcode, [], ttl=MIN_TTL_SECONDS)


def _capped(addresses: Sequence[IPv4Address]) -> list[IPv4Address]:
    return list(addresses[:MAX_ANSWER_ADDRESSES])


def _usable(
    addresses: Sequence[IPv4Address],
    networks: Iterable[Any],
    *,
    gateway_pk: str,
    name: str,
    protected: set[IPv4Address],
) -> list[IPv4Address]:
    """Return the addresses of an answer for `name` that may be learned.

    Left out: what `unusable_reason` names, `protected` addresses (which the agent reaches
    through the underlay, see `desired.route_conflict`) among them.
    """
    networks = list(networks)
    overlays = [network.network for network in networks]
    foreign = [
        route
        for network in networks
        for route, gateway in network.routes.items()
        if gateway != gateway_pk
    ]
    usable = []
    for address in addresses:
        reason = unusable_reason(
            address, overlays=overlays, foreign_routes=foreign, protected=protected
        )
        if reason is None:
            usable.append(address)
        else:
            logger.warning("address %s resolved for %s was not learned: %s", address, name, reason)
    return usable


class DomainForwarder:
    """Answers the agent resolver's queries for names of domain resources this node may use.

    `networks` returns the compiled networks in effect; `on_learned` is awaited after new
    addresses were learned and must install their routes. `protected` returns the addresses
    that must never be learned (the daemon's `protected_addresses`).
    """

    def __init__(
        self,
        networks: Callable[[], Sequence[Any]],
        on_learned: OnLearned,
        *,
        protected: Callable[[], set[IPv4Address]] = set,
        gateway_port: int = GATEWAY_DNS_PORT,
        timeout: float = FORWARD_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._networks = networks
        self._protected = protected
        self._on_learned = on_learned
        self._gateway_port = gateway_port
        self._timeout = timeout
        self._clock = clock

    def _match(self, name: str) -> tuple[Any, str, str] | None:
        for network in self._networks():
            found = network.reachable_domain(name)
            if found is not None:
                return network, found[0], found[1]
        return None

    def takes(self, name: str) -> bool:
        """Return whether `name` belongs to a domain resource this node may use."""
        return self._match(name) is not None

    async def answer(self, query: Query, client: tuple[str, int]) -> bytes:
        """Return the response to `query`, asking the resource's gateway node for A queries."""
        question = query.question
        match = self._match(question.name)
        if match is None or question.qclass != CLASS_IN:
            return _empty(query, RCODE_REFUSED)
        if question.qtype not in (TYPE_A, TYPE_ANY):
            return _empty(query, RCODE_NOERROR)
        network, dest, gateway_pk = match
        gateway = network.peer(gateway_pk)
        if gateway is None:
            return _empty(query, RCODE_SERVFAIL)
        try:
            result = await query_a(
                (str(gateway.ip), self._gateway_port),
                question.name,
                wait_seconds=self._timeout,
                source=(str(network.ip), 0),
            )
        except (TimeoutError, OSError) as exc:
            logger.warning(
                "gateway %s did not resolve %s: %s",
                gateway.hostname,
                question.name,
                str(exc) or "timed out",
            )
            return _empty(query, RCODE_SERVFAIL)
        if result.rcode != RCODE_NOERROR or not result.addresses:
            return _empty(query, result.rcode)
        return await self._learn(query, network, dest=dest, gateway_pk=gateway_pk, result=result)

    async def _learn(
        self, query: Query, network: Any, *, dest: str, gateway_pk: str, result: Answer
    ) -> bytes:
        learned = network.learned
        before = set(learned.routes)
        addresses = _usable(
            result.addresses,
            self._networks(),
            gateway_pk=gateway_pk,
            name=query.question.name,
            protected=self._protected(),
        )
        accepted = learned.learn_reachable(
            dest, gateway_pk, _capped(addresses), ttl=result.ttl, now=self._clock()
        )
        if not accepted:
            logger.warning(
                "no address of %s was learned for %s: none was usable, the resource has reached "
                "its maximum number of addresses, or another gateway routes them",
                query.question.name,
                dest,
            )
            return _empty(query, RCODE_SERVFAIL)
        if set(learned.routes) != before:
            logger.debug("learned %s for %s through %s", accepted, dest, gateway_pk[:12])
            await self._on_learned()
        return build_response(query, RCODE_NOERROR, accepted, ttl=clamp_ttl(result.ttl))


class GatewayResolver:
    """Answers clients' queries for the domain resources this node is the gateway for.

    `network` returns the compiled network of the overlay address it listens on (or None when
    that network is gone); `nameservers` the upstream servers; `on_learned` is awaited after
    new addresses were learned and must install the forwarding rules.
    """

    def __init__(
        self,
        network: Callable[[], Any],
        on_learned: OnLearned,
        *,
        nameservers: Callable[[], list[str]] = read_nameservers,
        protected: Callable[[], set[IPv4Address]] = set,
        upstream_port: int = 53,
        timeout: float = UPSTREAM_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._network = network
        self._on_learned = on_learned
        self._protected = protected
        self._nameservers = nameservers
        self._upstream_port = upstream_port
        self._timeout = timeout
        self._clock = clock
        self._refusals = RepeatLimiter(logger)

    def takes(self, name: str) -> bool:
        """Return True, because this resolver answers every name, foreign ones with REFUSED."""
        return True

    async def answer(self, query: Query, client: tuple[str, int]) -> bytes:
        """Return the response to `query` from the overlay address `client[0]`.

        SECURITY: REFUSED unless the name belongs to a resource this node serves and a policy
        permits the sending node to use it, so the gateway is no open resolver. The sender's
        address is trusted because the data plane's anti-spoofing check admits a peer's
        packets only from its own overlay address, and the socket accepts only datagrams that
        came in on the TUN device.
        """
        question = query.question
        network = self._network()
        dest = None if network is None else network.served_domain(question.name)
        client_node = None
        if dest is not None:
            client_node = network.domain_client(dest, IPv4Address(client[0]))
        if client_node is None or question.qclass != CLASS_IN:
            self._refusals.log(
                logging.WARNING,
                f"{client[0]}:{dest}",
                "refused a DNS query for %s from %s: no domain resource of this gateway "
                "that a policy permits that node to use",
                question.name,
                client[0],
            )
            return _empty(query, RCODE_REFUSED)
        if question.qtype not in (TYPE_A, TYPE_ANY):
            return _empty(query, RCODE_NOERROR)
        result = await self._resolve(question.name)
        if result is None:
            return _empty(query, RCODE_SERVFAIL)
        if result.rcode != RCODE_NOERROR or not result.addresses:
            return _empty(query, result.rcode)
        learned = network.learned
        before = set(learned.served)
        addresses = _usable(
            result.addresses,
            [network],
            gateway_pk=network.pk,
            name=question.name,
            protected=self._protected(),
        )
        accepted = learned.learn_served(
            dest, client_node.pk, _capped(addresses), ttl=result.ttl, now=self._clock()
        )
        if not accepted:
            logger.warning(
                "no address of %s was learned: none was usable, or %s has reached its maximum",
                question.name,
                dest,
            )
            return _empty(query, RCODE_SERVFAIL)
        if set(learned.served) != before:
            logger.debug("learned %s for %s, client %s", accepted, dest, client[0])
            await self._on_learned()
        return build_response(query, RCODE_NOERROR, accepted, ttl=clamp_ttl(result.ttl))

    async def _resolve(self, name: str) -> Answer | None:
        for server in self._nameservers():
            try:
                return await query_a(
                    (server, self._upstream_port), name, wait_seconds=self._timeout
                )
            except (TimeoutError, OSError) as exc:
                logger.warning(
                    "nameserver %s did not resolve %s: %s", server, name, str(exc) or "timed out"
                )
        return None


class GatewayListeners:
    """The UDP sockets of `GatewayResolver`s on this node's overlay addresses.

    `device` is the TUN device: each socket is bound to it (SO_BINDTODEVICE), so only
    datagrams that came through the overlay reach the resolver, never ones from the LAN or
    from local processes.
    """

    def __init__(
        self,
        resolver_for: Callable[[IPv4Address], GatewayResolver],
        *,
        device: str | None,
        port: int = GATEWAY_DNS_PORT,
    ) -> None:
        self._resolver_for = resolver_for
        self.device = device
        self.port = port
        self._transports: dict[IPv4Address, asyncio.DatagramTransport] = {}

    @property
    def addresses(self) -> list[IPv4Address]:
        """The overlay addresses listened on, sorted."""
        return sorted(self._transports)

    async def sync(self, addresses: set[IPv4Address]) -> list[str]:
        """Listen on exactly `addresses`; return an error message per address that failed."""
        for address in set(self._transports) - addresses:
            self._transports.pop(address).close()
            logger.info("gateway DNS resolver on %s:%d stopped", address, self.port)
        errors = []
        for address in sorted(addresses - set(self._transports)):
            try:
                self._transports[address] = await self._listen(address)
            except OSError as exc:
                errors.append(f"gateway DNS resolver on {address}:{self.port} not started: {exc}")
                logger.error("%s", errors[-1])
                continue
            logger.info("gateway DNS resolver listening on %s:%d", address, self.port)
        return errors

    async def _listen(self, address: IPv4Address) -> asyncio.DatagramTransport:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self.device:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.device.encode())
            sock.bind((str(address), self.port))
        except OSError:
            sock.close()
            raise
        resolver = self._resolver_for(address)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: ResolverProtocol(None, resolver), sock=sock
        )
        return transport

    def stop(self) -> None:
        """Close every socket."""
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
