"""Paths to peers: direct UDP addresses, relay routes through super peers, and the sessions.

A peer connection's `remote` is either a UDP address `(host, port)` reached straight from the
data plane's socket, or a `RelayRoute`: send through this agent's own relay tunnel on a super
peer, which forwards from its bound public port. Sending to a peer's relay candidate is plain UDP
from our socket too, but counts as a relay path. Preference: direct, then relay over HTTP/3.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from netsody_agent.dataplane.superpeer import SuperPeerSession, parse_super_peer_url
from netsody_agent.dataplane.superpeer_h2 import H2SuperPeerSession
from netsody_agent.netif import local_ipv4_addresses
from netsody_common import wire
from netsody_common.identity import Identity

logger = logging.getLogger(__name__)

PATH_DIRECT = "direct"
PATH_RELAY_H3 = "relay-h3"
PATH_RELAY_H2 = "relay-h2"
PATH_NONE = "none"
PATH_RANK = {PATH_DIRECT: 0, PATH_RELAY_H3: 1, PATH_RELAY_H2: 2, PATH_NONE: 9}
# A worse path replaces the current one only when the current one was silent this long.
PATH_STALE_SECONDS = 3.0
CONNECT_REQUEST_INTERVAL = 10.0
# An HTTP/3 session not authenticated after this long (UDP blocked or filtered) makes the agent
# open the HTTP/2 fallback to the same super peer. A closed session is reopened this often.
H2_FALLBACK_SECONDS = 3.0
RECONNECT_SECONDS = 10.0
# A lost HTTP/3 session is reopened after this delay, doubled after each attempt that did not
# authenticate, up to RECONNECT_MAX_SECONDS.
RECONNECT_MIN_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class RelayRoute:
    """Send to `target` through this agent's relay tunnel on `session`."""

    session: SuperPeerSession | H2SuperPeerSession
    target: tuple[str, int]

    def __str__(self) -> str:
        return f"{self.target[0]}:{self.target[1]} via {self.session.url}"


class SuperPeers:
    """The sessions with every configured super peer, sharing the data plane's UDP socket.

    `send(data, address)` sends a UDP payload from the data plane's socket. The data plane
    calls `receive` for datagrams from a super peer's address and `flush` after each batch.
    """

    def __init__(
        self,
        identity: Identity,
        urls: list[str],
        *,
        send: Callable[[list[bytes], tuple[str, int]], None],
        on_peer_candidates: Callable[[str, tuple[wire.Candidate, ...]], None],
        on_relayed: Callable[[bytes, tuple[str, int], SuperPeerSession], None],
        cafile: str | None = None,
        on_session_up: Callable[[], None] | None = None,
    ) -> None:
        self.identity = identity
        self._on_session_up = on_session_up
        self._up: set[Any] = set()
        self._reconnect_delay: dict[str, float] = {}
        self.urls = list(urls)
        self.sessions: list[SuperPeerSession] = []
        self._by_address: dict[tuple[str, int], SuperPeerSession] = {}
        self._send = send
        self._on_peer_candidates = on_peer_candidates
        self._on_relayed = on_relayed
        self._cafile = cafile
        self._dirty: set[SuperPeerSession] = set()
        self._requested: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errors: dict[str, str] = {}
        self._fallbacks: dict[str, H2SuperPeerSession] = {}
        self._hosts: tuple[wire.Candidate, ...] = ()
        self._addresses: dict[str, tuple[str, int]] = {}

    async def start(self, listen_port: int, exclude_interfaces: set[str]) -> None:
        """Resolve every super peer and open its session; failures are logged and reported."""
        self._loop = asyncio.get_running_loop()
        self._hosts = tuple(
            wire.Candidate(wire.CandidateKind.HOST, ip_address(address), listen_port)
            for address in local_ipv4_addresses(exclude_interfaces)
        )
        for url in self.urls:
            try:
                host, port = parse_super_peer_url(url)
                infos = await self._loop.getaddrinfo(
                    host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
                )
            except (OSError, ValueError) as error:
                self._errors[url] = str(error)
                logger.warning("super peer %s not usable: %s", url, error)
                continue
            self._addresses[url] = infos[0][4][:2]
            self._open_h3(url)
        self.flush(self._loop.time())

    def _open_h3(self, url: str) -> SuperPeerSession:
        assert self._loop is not None
        address = self._addresses[url]
        session = SuperPeerSession(
            url,
            address,
            self.identity,
            host_candidates=self._hosts,
            on_peer_candidates=self._on_peer_candidates,
            on_relayed=self._on_relayed,
            cafile=self._cafile,
        )
        self.sessions = [item for item in self.sessions if item.url != url] + [session]
        self._by_address[address] = session
        session.connect(self._loop.time())
        self._dirty.add(session)
        return session

    def check(self, now: float) -> None:
        """Reopen closed HTTP/3 sessions, and fall back to HTTP/2 where HTTP/3 does not work."""
        self._note_sessions_up()
        for session in list(self.sessions):
            if session.keep_alive(now):
                self._dirty.add(session)
            if session.closed:
                # A session just lost or reopened gets H2_FALLBACK_SECONDS before HTTP/2.
                session = self._reconnect(session)
            since = session.closed_at if session.closed_at is not None else session.created
            age = time.monotonic() - since
            fallback = self._fallbacks.get(session.url)
            if session.authenticated or age < H2_FALLBACK_SECONDS:
                continue
            if fallback is None or (
                fallback.closed and time.monotonic() - fallback.created > RECONNECT_SECONDS
            ):
                logger.info("super peer %s unreachable over HTTP/3, trying HTTP/2", session.url)
                fallback = H2SuperPeerSession(
                    session.url,
                    self.identity,
                    host_candidates=self._hosts,
                    on_peer_candidates=self._on_peer_candidates,
                    on_relayed=self._on_relayed,
                    cafile=self._cafile,
                )
                self._fallbacks[session.url] = fallback
                fallback.start()
        self.flush(now)

    def _reconnect(self, session: SuperPeerSession) -> SuperPeerSession:
        """Reopen a lost HTTP/3 session once its backoff delay has passed; return the current."""
        delay = self._reconnect_delay.get(session.url, RECONNECT_MIN_SECONDS)
        closed_at = session.closed_at if session.closed_at is not None else session.created
        if time.monotonic() - closed_at < delay:
            return session
        self._reconnect_delay[session.url] = min(delay * 2, RECONNECT_MAX_SECONDS)
        logger.info("reconnecting to super peer %s (next retry after %.0f s)", session.url, delay)
        return self._open_h3(session.url)

    def _note_sessions_up(self) -> None:
        """Tell the data plane when a session (re)authenticates: peers' candidates changed."""
        ready = [session for session in self.sessions if session.authenticated]
        ready += [session for session in self._fallbacks.values() if session.authenticated]
        new = [session for session in ready if session not in self._up]
        self._up = set(ready)
        if not new:
            return
        for session in new:
            self._reconnect_delay.pop(session.url, None)
        # A new session has new relay ports: ask again for every peer's candidates at once.
        self._requested.clear()
        if self._on_session_up is not None:
            self._on_session_up()

    def session_for(self, address: tuple[str, int]) -> SuperPeerSession | None:
        return self._by_address.get(address)

    def receive(self, session: SuperPeerSession, data: bytes, now: float) -> None:
        session.receive(data, now)
        self._dirty.add(session)

    def mark(self, session: Any) -> None:
        self._dirty.add(session)

    def flush(self, now: float) -> None:
        """Send what the touched sessions queued and re-arm their timers."""
        dirty, self._dirty = self._dirty, set()
        send = self._send
        for session in dirty:
            datagrams = session.datagrams(now)
            if datagrams:
                send(datagrams, session.address)
            # Sealed relay packets alone leave aioquic's timer as it was.
            if getattr(session, "timer_due", True):
                self._arm(session)

    def _arm(self, session: SuperPeerSession) -> None:
        if session.timer_handle is not None:
            session.timer_handle.cancel()
            session.timer_handle = None
        deadline = session.timer()
        if deadline is not None and self._loop is not None and not session.closed:
            session.timer_handle = self._loop.call_at(deadline, self._on_timer, session)

    def _on_timer(self, session: SuperPeerSession) -> None:
        session.timer_handle = None
        now = self._loop.time() if self._loop is not None else time.monotonic()
        session.handle_timer(now)
        self._dirty.add(session)
        self.flush(now)

    def best(self) -> SuperPeerSession | H2SuperPeerSession | None:
        """Return the authenticated session to use: HTTP/3 before HTTP/2, then lowest RTT."""
        ready: list[Any] = [session for session in self.sessions if session.authenticated]
        ready += [session for session in self._fallbacks.values() if session.authenticated]
        return min(ready, key=lambda session: (PATH_RANK[session.kind], session.rtt), default=None)

    def request_peer(self, pk: str, now: float) -> None:
        """Ask the best super peer for `pk`'s candidates, at most every 10 seconds per peer."""
        if now - self._requested.get(pk, float("-inf")) < CONNECT_REQUEST_INTERVAL:
            return
        session = self.best()
        if session is None:
            return
        self._requested[pk] = now
        session.request_peer(pk)
        self._dirty.add(session)

    def status(self) -> list[dict[str, Any]]:
        result = []
        for url in self.urls:
            session: Any = next((item for item in self.sessions if item.url == url), None)
            fallback = self._fallbacks.get(url)
            if (
                fallback is not None
                and fallback.authenticated
                and not (session is not None and session.authenticated)
            ):
                session = fallback
            result.append(
                {
                    "url": url,
                    "transport": "h2" if session is fallback and session else "h3",
                    "connected": bool(session and session.authenticated),
                    "relay_addresses": [f"{h}:{p}" for h, p in session.relay_addresses]
                    if session
                    else [],
                    "rtt_ms": round(session.rtt * 1000, 3) if session else None,
                    "error": (session.error if session else self._errors.get(url, "")) or None,
                }
            )
        return result

    def close(self, now: float) -> None:
        for fallback in self._fallbacks.values():
            fallback.close()
        for session in self.sessions:
            session.close()
            self._dirty.add(session)
        self.flush(now)
        for session in self.sessions:
            if session.timer_handle is not None:
                session.timer_handle.cancel()
