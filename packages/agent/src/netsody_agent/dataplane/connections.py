"""Connection lifecycle of the data plane: duplicate connections, closing, dialing.

Both peers may dial each other at once, and a restarted peer dials while the old connection
still looks alive. `Connections` decides which connection carries a peer's packets (both ends
must decide alike), closes the others, and dials peers without a connection, with backoff.

It is the base class of `DataPlane` and works on the data plane's tables and its packet
sending and servicing methods. The tables are `_links` (pk to the connection in use), `_pending`
(handshaking connections), `_contenders` (a second authenticated connection under probe),
`_by_cid`, `_dial_state`, `_peer_since`, `_endpoints`, `_candidates`, `_relay_candidates` and
`_relays`.
"""

from __future__ import annotations

import logging
from typing import Any

from netsody_agent.dataplane import handshake
from netsody_agent.dataplane.link import KEEPALIVE_INTERVAL, STATE_CLOSED, STATE_UP, PeerLink
from netsody_agent.dataplane.paths import RelayRoute
from netsody_common import wire

logger = logging.getLogger("netsody_agent.dataplane")

DIAL_GRACE_SECONDS = 3.0
REDIAL_MIN_SECONDS = 1.0
REDIAL_MAX_SECONDS = 30.0
# A connection without an authentic packet for this long loses a duplicate-connection tie-break.
STALE_SECONDS = 2.5 * KEEPALIVE_INTERVAL
# When a second connection of a peer comes up, the current one gets a ping. Without an
# acknowledgement within this long it counts as dead (the peer restarted), and the new
# connection replaces it.
LIVENESS_PROBE_SECONDS = 1.0


class Connections:
    """Duplicate resolution, closing and dialing of peer connections (see the module text)."""

    # Provided by DataPlane.
    identity: Any
    pow_difficulty: int
    _links: dict[str, PeerLink]
    _contenders: dict[str, tuple[PeerLink, float]]
    _pending: set[PeerLink]
    _by_cid: dict[bytes, PeerLink]
    _dial_state: dict[str, tuple[float, float]]
    _peer_since: dict[str, float]
    _endpoints: dict[str, list[tuple[str, int]]]
    _candidates: dict[str, list[tuple[str, int]]]
    _relay_candidates: dict[str, set[tuple[str, int]]]
    _relays: Any

    # Link state changes

    def _on_link_state(self, link: PeerLink) -> None:
        if link.state == STATE_UP:
            self._on_link_up(link)
        elif link.state == STATE_CLOSED:
            self._on_link_closed(link)

    def _on_link_up(self, link: PeerLink) -> None:
        self._pending.discard(link)
        pk = link.peer_pk
        current = self._links.get(pk)
        if current is not None and current is not link and current.state == STATE_UP:
            if self._keep_current(current, link):
                self._probe_current(current, link)
                return
            self._close_link(current, "replaced by a newer connection")
        self._promote(link)

    def _promote(self, link: PeerLink) -> None:
        pk = link.peer_pk or ""
        self._links[pk] = link
        self._dial_state.pop(pk, None)
        logger.info(
            "peer %s connected (%s, path %s via %s)",
            pk,
            "dialed" if link.is_dialer else "accepted",
            link.path,
            link.remote,
        )

    def _probe_current(self, current: PeerLink, new: PeerLink) -> None:
        """Keep `new` aside and ping `current`, which a restarted peer cannot acknowledge.

        Both ends reach the same choice. While the current connection is alive, the tie-break of
        `_keep_current` decides on both ends alike. A restarted peer has only the new one.
        """
        pk = new.peer_pk or ""
        previous = self._contenders.pop(pk, None)
        if previous is not None and previous[0] is not new:
            self._close_link(previous[0], "duplicate connection")
        now = self._now()
        self._contenders[pk] = (new, now)
        current.connection.send_ping(1)
        self._flush(current, now)
        self._arm_timer(current)

    def _resolve_contenders(self, now: float) -> None:
        for pk, (new, since) in list(self._contenders.items()):
            current = self._links.get(pk)
            if new.state != STATE_UP:
                del self._contenders[pk]
            elif current is None or current.state != STATE_UP:
                del self._contenders[pk]
                self._promote(new)
            elif current.last_received > since:
                del self._contenders[pk]
                self._close_link(new, "duplicate connection")
            elif now - since > LIVENESS_PROBE_SECONDS:
                del self._contenders[pk]
                self._close_link(current, "replaced by a newer connection (no answer)")
                self._promote(new)

    def _keep_current(self, current: PeerLink, new: PeerLink) -> bool:
        # NOTE: both sides must pick the same connection. A stale one always loses; otherwise
        # the connection dialed by the lower pk wins.
        if self._now() - current.last_received > STALE_SECONDS:
            return False
        return self._dialer_pk(current) < self._dialer_pk(new)

    def _dialer_pk(self, link: PeerLink) -> str:
        return self.identity.pk if link.is_dialer else link.peer_pk or ""

    def _forget_pending(self, link: PeerLink) -> None:
        """Drop a connection from the handshake set and its connection IDs from the index."""
        self._pending.discard(link)
        for cid in [cid for cid, owner in self._by_cid.items() if owner is link]:
            del self._by_cid[cid]

    def _on_link_closed(self, link: PeerLink) -> None:
        self._forget_pending(link)
        if link.timer_handle is not None:
            link.timer_handle.cancel()
            link.timer_handle = None
        contender = self._contenders.get(link.peer_pk or "")
        if contender is not None and contender[0] is link:
            del self._contenders[link.peer_pk or ""]
        if link.peer_pk is not None and self._links.get(link.peer_pk) is link:
            del self._links[link.peer_pk]
            logger.info("peer %s disconnected: %s", link.peer_pk, link.close_reason)
            if contender is not None and contender[0] is not link:
                del self._contenders[link.peer_pk]
                self._promote(contender[0])
                return
            self._schedule_redial(link.peer_pk, self._now())
        elif link.close_reason:
            logger.debug(
                "connection to %s closed: %s", link.peer_pk or "unknown", link.close_reason
            )

    def _close_link(self, link: PeerLink, reason: str) -> None:
        code = handshake.ERROR_REPLACED if "replaced" in reason or "duplicate" in reason else 0
        link.close(code, reason)
        now = self._now()
        self._flush(link, now)
        self._arm_timer(link)
        if link.peer_pk is not None and self._links.get(link.peer_pk) is link:
            del self._links[link.peer_pk]
            logger.info("peer %s connection closed: %s", link.peer_pk, reason)
        self._pending.discard(link)

    # Dialing

    def _dial_missing(self, now: float) -> None:
        for pk, since in self._peer_since.items():
            link = self._links.get(pk)
            if link is not None and link.state != STATE_CLOSED:
                continue
            if any(pending.peer_pk == pk for pending in self._pending):
                continue
            # Known candidates may be stale (a restarted peer or super peer), so a missing peer's
            # candidates are asked for again (at most every CONNECT_REQUEST_INTERVAL).
            self._relays.request_peer(pk, now)
            endpoints = self._endpoints_of(pk)
            if not endpoints:
                continue
            if self.identity.pk > pk and now - since < DIAL_GRACE_SECONDS:
                continue
            next_try, _delay = self._dial_state.get(pk, (0.0, REDIAL_MIN_SECONDS))
            if now < next_try:
                continue
            self._dial(pk, endpoints[0], now)
        self._relays.flush(now)

    def _endpoints_of(self, pk: str) -> list[Any]:
        """Static endpoints, then direct candidates, then relay candidates of a peer."""
        endpoints = [*self._endpoints.get(pk, ()), *self._candidates.get(pk, ())]
        return list(dict.fromkeys(endpoints))

    def _on_peer_candidates(self, pk: str, candidates: tuple[wire.Candidate, ...]) -> None:
        """Store a peer's candidates from a super peer and start probing them at once."""
        if pk not in self._peer_since:
            return
        ordered = sorted(candidates, key=lambda candidate: candidate.kind)
        self._candidates[pk] = [
            (str(candidate.ip), candidate.port)
            for candidate in ordered
            if candidate.ip.version == 4
        ]
        self._relay_candidates[pk] = {
            (str(candidate.ip), candidate.port)
            for candidate in candidates
            if candidate.kind == wire.CandidateKind.RELAY
        }
        logger.debug("peer %s candidates %s", pk, self._candidates[pk])
        now = self._now()
        link = self._links.get(pk)
        if link is not None and type(link.remote) is tuple:
            kind = self._path_kind(pk, link.remote, None)
            if kind != link.path:
                self._set_path(link, link.remote, kind)
        if pk not in self._links:
            self._punch(pk)
            # New candidates deserve a dial now, not after the backoff of failed ones.
            self._dial_state.pop(pk, None)
        self._dial_missing(now)

    def _punch(self, pk: str) -> None:
        """Open the way for a peer's packets to reach this agent (hole punching).

        A one-byte packet to every candidate creates the NAT mapping towards it, and one sent
        through this agent's relay tunnel makes the super peer forward that candidate's packets
        from the relay port (it forwards only from addresses the agent has sent to). The peer's
        data plane drops these packets as an unknown connection.
        """
        session = self._relays.best()
        for endpoint in self._candidates.get(pk, ()):
            self._send_udp(b"\x00", endpoint)
            if session is not None:
                self._send_to(RelayRoute(session, endpoint), b"\x00")

    def _dial(self, pk: str, endpoint: Any, now: float) -> None:
        link = PeerLink.dial(self.identity, pk, now=now, pow_difficulty=self.pow_difficulty)
        self._pending.add(link)
        self._register_cid(link, link.connection.host_cid, True)
        link.remote = endpoint
        link.path = self._path_kind(pk, endpoint, None)
        self._schedule_redial(pk, now)
        logger.debug("dialing peer %s at %s", pk, endpoint)
        self._service(link, now)

    def _schedule_redial(self, pk: str, now: float) -> None:
        _next, delay = self._dial_state.get(pk, (0.0, 0.0))
        self._dial_state[pk] = (
            now + delay,
            min(max(delay * 2, REDIAL_MIN_SECONDS), REDIAL_MAX_SECONDS),
        )
