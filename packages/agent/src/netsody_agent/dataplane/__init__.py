"""The agent's data plane: packets between the TUN device and the peers, over QUIC.

Seam for the daemon::

    tun = open_tun("netsody")                 # netsody_agent.tun; the daemon sets address/MTU/up
    plane = DataPlane(identity, tun, super_peers=["https://sp.example.com/"], listen_port=0)
    await plane.start()                       # binds the UDP socket, opens super peer sessions
    await plane.apply(networks)               # list[CompiledNetwork], on every config revision
    plane.status()                            # dict, see `DataPlane.status`
    plane.set_super_peers(urls)               # after a settings change; sessions reconnect
    await plane.stop()                        # closes connections and the socket, not the TUN

`apply` connects to every peer that a policy permits and closes connections to peers that are
no longer permitted. Peers present before and after stay connected. `set_peer_endpoints` adds
known UDP addresses of a peer (for example from the command line when no super peer runs).

One QUIC connection (aioquic, ALPN `netsody/1`) per peer carries IP packets in DATAGRAM frames
(RFC 9221), several packets per frame when they fit. The peer with the lower pk dials; the
other side dials too when no connection came up within a grace period, and `connections`
resolves duplicate connections. Both ends authenticate by their identity keys (see
`handshake`). IP packets take a fast path that seals them with the connection's 1-RTT keys
(`PeerLink.seal_datagram`) instead of aioquic's send loop.

One UDP socket carries every peer connection and the HTTP/3 sessions with the super peers
(`paths.SuperPeers`), so the NAT mapping the super peer observes is the one peers must target.
Peers without a known address are looked up through the super peer with the lowest RTT, which
sends both sides each other's candidates (host, reflexive, relay). Paths in order of preference:
direct, relay over HTTP/3 (a peer's relay port, or this agent's own tunnel), relay over HTTP/2
when the HTTP/3 session does not come up. Keepalives probe the other candidates, and an
authenticated packet from a better path moves the connection there without a new handshake.

Every TUN packet passes the egress rules and every peer packet the anti-spoofing check and the
ingress rules (`enforce.Enforcer`). A packet larger than the path carries gets an ICMP
"fragmentation needed" back on the TUN device when it has DF set, and is dropped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.packet import pull_quic_header

from netsody_agent.dataplane import enforce, handshake, offload
from netsody_agent.dataplane.connections import Connections
from netsody_agent.dataplane.link import (
    KEEPALIVE_INTERVAL,
    STATE_CLOSED,
    STATE_UP,
    PeerLink,
    server_configuration,
)
from netsody_agent.dataplane.logs import RepeatLimiter
from netsody_agent.dataplane.packet import (
    PacketError,
    build_frag_needed,
    parse_ipv4,
    split_packets,
)
from netsody_agent.dataplane.paths import (
    PATH_DIRECT,
    PATH_NONE,
    PATH_RANK,
    PATH_RELAY_H3,
    PATH_STALE_SECONDS,
    RelayRoute,
    SuperPeers,
)
from netsody_agent.dataplane.superpeer import SuperPeerSession
from netsody_agent.dataplane.udp import UdpSocket
from netsody_common.identity import Identity, pow_difficulty_from_env

__all__ = ["DataPlane", "DataPlaneError"]

logger = logging.getLogger(__name__)

TUN_BATCH = 64
SOCKET_BATCH = 64
# A datagram payload is IPv4 packets back to back. A first byte below 0x40 (no IPv4 or IPv6
# version nibble) is a flags byte before them. PARTIAL_CHECKSUMS marks packets whose TCP and UDP
# checksums contain only the pseudo-header sum, as checksum offload leaves them.
PAYLOAD_FLAGS_LIMIT = 0x40
PARTIAL_CHECKSUMS = b"\x01"
PAYLOAD_FLAGS_SIZE = len(PARTIAL_CHECKSUMS)
MAX_PENDING_HANDSHAKES = 64
HANDSHAKE_TIMEOUT_SECONDS = 10.0
DIAL_RETRY_SECONDS = 1.0
HOUSEKEEPING_SECONDS = 0.25
DROP_TUN_REFUSED = "tun-refused"


class DataPlaneError(OSError):
    """The data plane could not start (socket or event loop setup failed)."""


class DataPlane(Connections):
    """Forwards packets between `tun` and the permitted peers of the applied networks.

    Driven by the event loop: readers on the TUN descriptor and the UDP socket, one timer per
    QUIC connection and a housekeeping task. Emits log lines for connection up/down and path
    changes per peer, and counters through `status()`.
    """

    def __init__(
        self,
        identity: Identity,
        tun: Any,
        *,
        super_peers: list[str],
        listen_port: int = 0,
        listen_host: str = "0.0.0.0",  # noqa: S104 - peers reach the agent on every interface
        pow_difficulty: int | None = None,
        super_peer_cafile: str | None = None,
    ) -> None:
        self.identity = identity
        self.tun = tun
        self.super_peers = list(super_peers)
        self.listen_port = listen_port
        self.listen_host = listen_host
        self.pow_difficulty = (
            pow_difficulty if pow_difficulty is not None else pow_difficulty_from_env()
        )
        self.enforcer = enforce.Enforcer([])
        self.drops: dict[str, int] = {}
        self._certificate = handshake.identity_certificate(identity)
        self._server_config = server_configuration(identity, self._certificate)
        self._links: dict[str, PeerLink] = {}
        # An authenticated second connection per peer, kept while the current one is probed.
        self._contenders: dict[str, tuple[PeerLink, float]] = {}
        self._pending: set[PeerLink] = set()
        self._by_cid: dict[bytes, PeerLink] = {}
        self._endpoints: dict[str, list[tuple[str, int]]] = {}
        self._dial_state: dict[str, tuple[float, float]] = {}
        self._peer_since: dict[str, float] = {}
        self._sock: UdpSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._errors = RepeatLimiter(logger)
        self._super_peer_cafile = super_peer_cafile
        self._relays = self._new_super_peers()
        self._candidates: dict[str, list[tuple[str, int]]] = {}
        self._relay_candidates: dict[str, set[tuple[str, int]]] = {}
        self._last_flow_expiry = 0.0
        self._last_keepalive = 0.0
        # Packets for the TUN device, written at the end of each receive batch.
        self._coalescer = offload.Coalescer()
        self._tun_pending: list[tuple[bytes, bool]] = []
        self._receiving = False

    # Lifecycle

    async def start(self) -> None:
        """Bind the UDP socket and start reading it and the TUN device."""
        self._loop = asyncio.get_running_loop()
        try:
            sock = UdpSocket(self.listen_host, self.listen_port)
        except OSError as error:
            raise DataPlaneError(
                error.errno,
                f"binding UDP {self.listen_host}:{self.listen_port} failed: {error.strerror}"
                " (choose another --listen-port or stop the process using it)",
            ) from error
        self._sock = sock
        self.listen_port = sock.port
        self._loop.add_reader(sock.fileno(), self._on_socket_readable)
        self._loop.add_reader(self.tun.fileno(), self._on_tun_readable)
        self._housekeeping = asyncio.create_task(self._run_housekeeping())
        await self._relays.start(self.listen_port, {getattr(self.tun, "name", "")})
        logger.info(
            "data plane started on UDP port %d, node %s", self.listen_port, self.identity.pk
        )

    async def stop(self) -> None:
        """Close every connection (telling the peers) and the socket; the TUN stays open."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        links = [*self._links.values(), *self._pending]
        links += [link for link, _since in self._contenders.values()]
        self._contenders.clear()
        for link in links:
            link.close(handshake.ERROR_NONE, "agent stopping")
            self._flush(link, self._now())
        self._relays.close(self._now())
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_reader(self.tun.fileno())
        for link in links:
            if link.timer_handle is not None:
                link.timer_handle.cancel()
        self._links.clear()
        self._pending.clear()
        self._by_cid.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        logger.info("data plane stopped")

    # Configuration

    async def apply(self, networks: Iterable[Any]) -> None:
        """Switch to the compiled `networks`: new rules at once, connections follow the peers."""
        self.enforcer = enforce.Enforcer(networks)
        permitted = self.enforcer.peer_pks()
        permitted.discard(self.identity.pk)
        for pk in list(self._links):
            if pk not in permitted:
                self._close_link(self._links.pop(pk), "no policy permits this peer any more")
        for link in list(self._pending):
            if link.peer_pk is not None and link.peer_pk not in permitted:
                self._close_link(link, "no policy permits this peer any more")
        for pk in [pk for pk in self._contenders if pk not in permitted]:
            self._close_link(self._contenders.pop(pk)[0], "no policy permits this peer any more")
        now = self._now()
        for pk in permitted:
            self._peer_since.setdefault(pk, now)
        for pk in list(self._peer_since):
            if pk not in permitted:
                del self._peer_since[pk]
                self._dial_state.pop(pk, None)
        logger.info(
            "data plane applied %d network(s), %d peer(s)",
            len(self.enforcer.networks),
            len(permitted),
        )
        self._dial_missing(now)

    def set_super_peers(self, super_peers: list[str]) -> None:
        """Replace the super peer URLs; sessions reconnect in the background."""
        self.super_peers = list(super_peers)
        self._relays.close(self._now())
        self._relays = self._new_super_peers()
        if self._loop is not None:
            self._restart_task = asyncio.create_task(
                self._relays.start(self.listen_port, {getattr(self.tun, "name", "")})
            )

    def _new_super_peers(self) -> SuperPeers:
        return SuperPeers(
            self.identity,
            self.super_peers,
            send=self._send_udp_many,
            on_peer_candidates=self._on_peer_candidates,
            on_relayed=self._on_relayed,
            cafile=self._super_peer_cafile,
            on_session_up=self._on_super_peer_up,
        )

    def _on_super_peer_up(self) -> None:
        """Ask for the candidates of every peer not on a direct path through a new session.

        After a super peer restart the relay ports it bound before are gone: peers relayed
        through them learn the new ones here and move their connections there.
        """
        now = self._now()
        for pk in self._peer_since:
            link = self._links.get(pk)
            if link is None or link.path != PATH_DIRECT:
                self._relays.request_peer(pk, now)
        self._relays.flush(now)

    def set_peer_endpoints(self, pk: str, endpoints: list[tuple[str, int]]) -> None:
        """Set the UDP addresses to dial `pk` at (direct candidates), replacing earlier ones."""
        self._endpoints[pk] = list(endpoints)
        if self._loop is not None:
            self._dial_missing(self._now())

    def underlay_addresses(self) -> set[IPv4Address]:
        """Return the IPv4 addresses this data plane sends to through the underlay.

        The super peers' addresses, the peers' static endpoints and the addresses the
        connections use now: none of them may be routed into the overlay. Other candidates are
        left out, because a peer's LAN address may lie inside a resource it serves.
        """
        addresses = {session.address[0] for session in self._relays.sessions}
        for endpoints in self._endpoints.values():
            addresses.update(host for host, _port in endpoints)
        for link in self._links.values():
            if type(link.remote) is tuple:
                addresses.add(link.remote[0])
        result = set()
        for host in addresses:
            with contextlib.suppress(ValueError):
                result.add(IPv4Address(host))
        return result

    # Status

    def status(self) -> dict[str, Any]:
        """Return the data plane's state.

        `{"listen_port": int, "tun_offload": bool (segmentation offload on the TUN device),
        "drops": {reason: count}, "peers": [{"pk", "hostname", "ip",
        "path" ("direct", "relay-h3", "relay-h2" or "none"), "state", "last_handshake" (Unix
        time or None), "bytes_in", "bytes_out", "packets_in", "packets_out",
        "drops": {reason: count}}], "super_peers": [{"url", "transport" ("h3" or "h2"),
        "connected", "relay_addresses", "rtt_ms", "error"}]}` with one entry per permitted peer
        and per configured super peer.
        """
        peers = []
        for pk, entries in sorted(self.enforcer.peers.items()):
            if pk == self.identity.pk:
                continue
            link = self._links.get(pk)
            entry = entries[0]
            peers.append(
                {
                    "pk": pk,
                    "hostname": entry.hostname,
                    "ip": str(entry.ip),
                    "path": link.path if link is not None else PATH_NONE,
                    "state": link.state if link is not None else "down",
                    "last_handshake": link.last_handshake if link is not None else None,
                    "bytes_in": link.stats.bytes_in if link else 0,
                    "bytes_out": link.stats.bytes_out if link else 0,
                    "packets_in": link.stats.packets_in if link else 0,
                    "packets_out": link.stats.packets_out if link else 0,
                    "drops": dict(link.stats.drops) if link else {},
                }
            )
        super_peers = self._relays.status()
        drops = dict(self.drops)
        if self._sock is not None and self._sock.truncated:
            drops["truncated"] = self._sock.truncated
        if self._sock is not None and self._sock.overflows:
            drops["socket-overflow"] = self._sock.overflows
        return {
            "listen_port": self.listen_port,
            "tun_offload": self.tun.vnet_header,
            "drops": drops,
            "peers": peers,
            "super_peers": super_peers,
        }

    # TUN side

    def _on_tun_readable(self) -> None:
        frames = self.tun.read_batch(TUN_BATCH)
        if not frames:
            return
        now = self._now()
        self.enforcer.now = now
        complete: dict[PeerLink, list[bytes]] = {}
        partial: dict[PeerLink, list[bytes]] = {}
        if self.tun.vnet_header:
            for frame in frames:
                self._route_frame(frame, complete, partial)
        else:
            for packet in frames:
                link = self._route_outgoing(packet)
                if link is not None:
                    complete.setdefault(link, []).append(packet)
        # Packets go out on the fast path only (links are up), which leaves aioquic's state
        # alone, so the links need no servicing here.
        for link, batch in complete.items():
            self._send_packets(link, batch, partial=False)
        for link, batch in partial.items():
            self._send_packets(link, batch, partial=True)
        self._relays.flush(now)

    def _route_frame(
        self,
        frame: bytes,
        complete: dict[PeerLink, list[bytes]],
        partial: dict[PeerLink, list[bytes]],
    ) -> None:
        """Route one virtio-net frame: cut a super-packet into segments, keep checksum state."""
        flags, gso_type, _length, segment_size, _start, _offset = offload.unpack_vnet(frame)
        packet = frame[offload.VNET_HEADER_SIZE :]
        if gso_type == offload.GSO_NONE:
            link = self._route_outgoing(packet)
            if link is not None:
                target = partial if flags & offload.NEEDS_CSUM else complete
                target.setdefault(link, []).append(packet)
            return
        if gso_type != offload.GSO_TCPV4:
            self._drop(enforce.DROP_MALFORMED)
            return
        link = self._route_outgoing(packet, segment_size=segment_size)
        if link is None:
            return
        try:
            segments = offload.segment_tcp(packet, segment_size)
        except PacketError:
            self._drop(enforce.DROP_MALFORMED)
            return
        partial.setdefault(link, []).extend(segments)

    def _route_outgoing(self, packet: bytes, *, segment_size: int = 0) -> PeerLink | None:
        """Return the link `packet` goes out on, or None when it is dropped.

        For a super-packet, `segment_size` is the payload size of its segments: each of them
        must fit the path, not the whole packet.
        """
        try:
            header = parse_ipv4(packet)
        except PacketError:
            # IPv6 router solicitations and the like reach every TUN device; count, don't log.
            self._drop(
                enforce.DROP_NOT_IPV4
                if packet[:1] and packet[0] >> 4 == 6
                else enforce.DROP_MALFORMED
            )
            return None
        peer_pk, reason = self.enforcer.egress(header)
        if reason is not None:
            self._drop(reason)
            return None
        link = self._links.get(peer_pk)
        if link is None or link.state != STATE_UP:
            self._drop(enforce.DROP_PEER_DOWN)
            return None
        size = header.total_length
        if segment_size:
            size = min(size, offload.headers_length(packet) + segment_size)
        if size > link.max_payload - PAYLOAD_FLAGS_SIZE:
            self._too_large(link, packet, header)
            return None
        return link

    def _too_large(self, link: PeerLink, packet: bytes, header: Any) -> None:
        link.stats.drop(enforce.DROP_TOO_LARGE)
        if not header.dont_fragment:
            return
        # RFC 1191: tell the sender the largest packet this path carries. The message comes
        # from the packet's destination, because Linux drops packets arriving on an interface
        # with one of its own addresses as source (net.ipv4.conf.*.accept_local is 0 by default).
        mtu = link.max_payload - PAYLOAD_FLAGS_SIZE
        self.tun.write(build_frag_needed(packet, source=header.dst, next_hop_mtu=mtu))

    def _send_packets(self, link: PeerLink, packets: list[bytes], *, partial: bool) -> None:
        """Seal `packets` into as few datagrams as fit the path and send them to the peer.

        NOTE: IPv4 packets carry their own total length, so packets are concatenated into
        one DATAGRAM frame without framing bytes while they fit.
        """
        if link.remote is None:
            link.stats.drop(enforce.DROP_PEER_DOWN, len(packets))
            return
        stats = link.stats
        limit = link.max_payload
        prefix = PARTIAL_CHECKSUMS if partial else b""
        seal = link.seal_datagram
        datagrams: list[bytes] = []
        payload = b""
        for packet in packets:
            if payload and len(payload) + len(packet) > limit:
                datagrams.append(seal(payload))
                payload = b""
            payload = payload + packet if payload else prefix + packet
            stats.bytes_out += len(packet)
            stats.packets_out += 1
        if payload:
            datagrams.append(seal(payload))
        remote = link.remote
        if type(remote) is tuple and len(datagrams) > 1:
            self._send_udp_many(datagrams, remote, link)
        else:
            for data in datagrams:
                self._send_to(remote, data, link)

    def _send_udp_many(
        self, datagrams: list[bytes], address: Any, link: PeerLink | None = None
    ) -> None:
        if self._sock is None:
            return
        try:
            dropped = self._sock.send_many(datagrams, address)
        except OSError as error:
            self._log_send_error(error, address, link)
            return
        if dropped and link is not None:
            link.stats.drop(enforce.DROP_QUEUE_FULL, dropped)

    def _send_to(self, remote: Any, data: bytes, link: PeerLink | None = None) -> None:
        """Send one UDP payload to a peer address or through a relay route."""
        if type(remote) is RelayRoute:
            if remote.session.closed:
                remote = self._reroute(remote, link)
            if remote.session.send_relayed(data, remote.target):
                self._relays.mark(remote.session)
            elif link is not None:
                link.stats.drop("relay-unavailable")
            return
        self._send_udp(data, remote, link)

    def _reroute(self, route: RelayRoute, link: PeerLink | None) -> RelayRoute:
        """Move a route off a lost super peer session onto the best session of the same kind."""
        session = self._relays.best()
        if session is None or session.kind != route.session.kind:
            return route
        new = RelayRoute(session, route.target)
        if link is not None and link.remote == route:
            self._set_path(link, new, session.kind)
        return new

    def _send_udp(self, data: bytes, address: Any, link: PeerLink | None = None) -> None:
        if self._sock is None:
            return
        try:
            sent = self._sock.send(data, address)
        except OSError as error:
            self._log_send_error(error, address, link)
            return
        if not sent and link is not None:
            link.stats.drop(enforce.DROP_QUEUE_FULL)

    def _log_send_error(self, error: OSError, address: Any, link: PeerLink | None) -> None:
        self._errors.log(
            logging.WARNING,
            f"send:{address}",
            "sending to %s at %s failed: %s",
            link.peer_pk if link is not None else "super peer",
            address,
            error,
        )

    # Peer side

    def _on_peer_payload(self, link: PeerLink, payload: bytes) -> None:
        partial = False
        if payload and payload[0] < PAYLOAD_FLAGS_LIMIT:
            # SECURITY: unknown flags would change how the packets are read, so drop the datagram.
            if payload[:1] != PARTIAL_CHECKSUMS:
                link.stats.drop(enforce.DROP_MALFORMED)
                return
            partial = True
            payload = payload[1:]
        try:
            packets = split_packets(payload)
        except PacketError as error:
            link.stats.drop(enforce.DROP_MALFORMED)
            self._errors.log(
                logging.WARNING,
                f"malformed:{link.peer_pk}",
                "peer %s sent a malformed datagram: %s",
                link.peer_pk,
                error,
            )
            return
        stats = link.stats
        enforcer = self.enforcer
        queue = self._tun_pending.append if not self.tun.vnet_header else None
        coalescer = self._coalescer
        for packet in packets:
            if queue is None and coalescer.extend(packet, link):
                # The next segment of a flow whose first packet passed the checks below.
                stats.bytes_in += len(packet)
                stats.packets_in += 1
                continue
            try:
                header = parse_ipv4(packet)
            except PacketError:
                stats.drop(enforce.DROP_MALFORMED)
                continue
            reason = enforcer.ingress(link.peer_pk, header)
            if reason is not None:
                stats.drop(reason)
                continue
            if partial and offload.checksum_field(packet) is None:
                stats.drop(enforce.DROP_MALFORMED)
                continue
            stats.bytes_in += len(packet)
            stats.packets_in += 1
            if queue is None:
                coalescer.add(packet, partial, link)
            else:
                queue((packet, partial))

    def _flush_tun(self) -> None:
        """Write the packets received in this batch to the TUN device."""
        if self.tun.vnet_header:
            frames = self._coalescer.frames()
            if frames:
                refused = self.tun.write_frames(frames)
                if refused:
                    self._drop(DROP_TUN_REFUSED, refused)
            return
        pending = self._tun_pending
        if not pending:
            return
        self._tun_pending = []
        write = self.tun.write
        for packet, partial in pending:
            # A TUN device without offloads needs complete checksums (the portable slow path).
            write(offload.complete_checksum(packet) if partial else packet)

    def _on_socket_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        now = self._now()
        self.enforcer.now = now
        touched: set[PeerLink] = set()
        received, error = sock.receive(SOCKET_BATCH)
        if error is not None:
            self._errors.log(logging.INFO, "recv", "UDP receive failed: %s", error)
        session_for = self._relays.session_for
        # Packets relayed through a super peer session of this batch join the same TUN writes.
        self._receiving = True
        try:
            for datagram, addr in received:
                session = session_for(addr)
                if session is not None:
                    self._relays.receive(session, datagram, now)
                    continue
                link = self._demultiplex(datagram, addr, now)
                if link is not None:
                    touched.add(link)
        finally:
            self._receiving = False
        self._flush_tun()
        for link in touched:
            self._service(link, now)
        self._flush_tun()
        self._relays.flush(now)

    def _on_relayed(
        self, payload: bytes, source: tuple[str, int], session: SuperPeerSession
    ) -> None:
        """Handle a UDP payload that a peer sent to this agent's relay port."""
        now = self._now()
        link = self._demultiplex(payload, source, now, via=session)
        if link is not None:
            self._service(link, now)
        if not self._receiving:
            # Relayed over HTTP/2, outside a socket batch: nothing else comes to join.
            self._flush_tun()

    def _demultiplex(
        self, data: bytes, addr: tuple[str, int], now: float, via: SuperPeerSession | None = None
    ) -> PeerLink | None:
        if not data:
            return None
        long_header = data[0] & 0x80
        if long_header:
            if len(data) < 7:
                self._drop("unknown-connection")
                return None
            dcid = data[6 : 6 + data[5]]
        else:
            dcid = data[1:9]
        link = self._by_cid.get(dcid)
        if link is not None and not long_header and link.state == STATE_UP:
            payload = link.open_datagram(data, now)
            if payload is not None:
                # SECURITY: an empty payload marks a replayed packet, which must not count as
                # proof that the sender's address is a path of this peer.
                if payload:
                    link.last_received = now
                    self._note_path(link, addr, via, now, authentic=True)
                    self._on_peer_payload(link, payload)
                return None
        if link is None:
            if not long_header:
                self._drop("unknown-connection")
                return None
            link = self._accept(data, addr)
            if link is None:
                return None
            link.receive(data, now)
            if not link.initial_received():
                # SECURITY: an Initial that does not decrypt must not hold one of the
                # MAX_PENDING_HANDSHAKES slots until the handshake timeout.
                self._forget_pending(link)
                self._drop("undecryptable-initial")
                return None
            self._note_path(link, addr, via, now, authentic=False)
            return link
        authentic = link.receive(data, now)
        self._note_path(link, addr, via, now, authentic=authentic)
        return link

    def _note_path(
        self,
        link: PeerLink,
        addr: tuple[str, int],
        via: SuperPeerSession | None,
        now: float,
        *,
        authentic: bool,
    ) -> None:
        """Track where a peer's packets arrive from and move to a better or live path."""
        remote: Any = addr if via is None else RelayRoute(via, addr)
        if remote == link.remote:
            if authentic:
                link.remote_seen = now
            return
        kind = self._path_kind(link.peer_pk, addr, via)
        if kind == PATH_DIRECT and via is None and link.peer_pk and authentic:
            self._check_unknown_source(link.peer_pk, addr, now)
        if link.remote is None:
            self._set_path(link, remote, kind)
            return
        if not authentic:
            return
        # SECURITY: only an authenticated packet may move the path, so a forged source address
        # cannot redirect a peer's traffic.
        better = PATH_RANK[kind] <= PATH_RANK[link.path]
        if better or now - link.remote_seen > PATH_STALE_SECONDS:
            self._set_path(link, remote, kind)
            link.remote_seen = now

    def _check_unknown_source(self, pk: str, addr: tuple[str, int], now: float) -> None:
        """Ask the super peers for a peer's candidates when it sends from an address none names.

        NOTE: a peer that sends through its relay tunnel arrives from its bound relay port. When
        that port is newer than the candidates last heard (the super peer restarted, the peer
        re-bound), the address looks direct until fresh candidates relabel it as a relay.
        """
        known = (*self._endpoints.get(pk, ()), *self._candidates.get(pk, ()))
        if addr not in known:
            self._relays.request_peer(pk, now)

    def _path_kind(
        self, pk: str | None, addr: tuple[str, int], via: SuperPeerSession | None
    ) -> str:
        if via is not None:
            return via.kind
        if addr in self._relay_candidates.get(pk or "", ()):
            return PATH_RELAY_H3
        return PATH_DIRECT

    def _accept(self, data: bytes, addr: tuple[str, int]) -> PeerLink | None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
        except ValueError:
            self._drop("malformed-quic")
            return None
        if header.packet_type is None or header.token is None or len(data) < 1200:
            # Only a padded client Initial (RFC 9000 section 14.1) may open a connection.
            self._drop("unknown-connection")
            return None
        if len(self._pending) >= MAX_PENDING_HANDSHAKES:
            self._drop("handshake-limit")
            self._errors.log(
                logging.WARNING,
                "handshake-limit",
                "rejected a handshake from %s: %d handshakes pending",
                addr,
                MAX_PENDING_HANDSHAKES,
            )
            return None
        link = PeerLink.accept(
            self.identity,
            self._server_config,
            original_destination_connection_id=header.destination_cid,
            pow_difficulty=self.pow_difficulty,
            is_permitted=self._is_permitted,
        )
        self._pending.add(link)
        self._register_cid(link, header.destination_cid, True)
        for cid in link.host_cids:
            self._register_cid(link, cid, True)
        return link

    def _is_permitted(self, pk: str) -> bool:
        return pk != self.identity.pk and pk in self.enforcer.peers

    # Connection servicing

    def _service(self, link: PeerLink, now: float) -> None:
        link.process_events(self._on_peer_payload, self._on_link_state, self._register_cid)
        self._flush(link, now)
        if link.state == STATE_CLOSED and (
            link in self._pending or self._links.get(link.peer_pk or "") is link
        ):
            # A failed authentication closes the link at once, without waiting for aioquic's
            # draining period to end.
            self._on_link_closed(link)
            return
        self._arm_timer(link)

    def _flush(self, link: PeerLink, now: float, *, probe: bool = False) -> None:
        datagrams = link.datagrams(now)
        if not datagrams or link.remote is None:
            return
        # While handshaking, and when probing for a better path, every candidate gets the
        # packets; the first authenticated reply from a better path wins (`_note_path`).
        targets = [link.remote]
        if link.state != STATE_UP or probe:
            candidates = self._endpoints_of(link.peer_pk or "")
            targets += [candidate for candidate in candidates if candidate != link.remote]
            session = self._relays.best()
            if link.state != STATE_UP and session is not None and session.kind != PATH_RELAY_H3:
                # Without HTTP/3 the agent's UDP is likely blocked: try through the tunnel too.
                targets += [RelayRoute(session, candidate) for candidate in candidates]
        for data in datagrams:
            for target in targets:
                self._send_to(target, data, link)

    def _arm_timer(self, link: PeerLink) -> None:
        deadline = link.connection.get_timer()
        handle = link.timer_handle
        if handle is not None:
            if deadline is not None and handle.when() == deadline:
                return
            handle.cancel()
            link.timer_handle = None
        if deadline is not None and self._loop is not None:
            link.timer_handle = self._loop.call_at(deadline, self._on_timer, link)

    def _on_timer(self, link: PeerLink) -> None:
        link.timer_handle = None
        now = self._now()
        if link.connection.get_timer() is None:
            # aioquic's handle_timer fails once the connection has terminated.
            return
        link.handle_timer(now)
        self._service(link, now)
        self._flush_tun()
        self._relays.flush(now)

    def _register_cid(self, link: PeerLink, cid: bytes, issued: bool) -> None:
        if issued:
            self._by_cid[cid] = link
        elif self._by_cid.get(cid) is link:
            del self._by_cid[cid]

    def _set_path(self, link: PeerLink, remote: Any, path: str) -> None:
        previous = link.path
        link.remote = remote
        link.path = path
        if link.state == STATE_UP or previous != PATH_NONE:
            logger.info("peer %s path %s -> %s (%s)", link.peer_pk, previous, path, remote)

    # Housekeeping

    async def _run_housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                self._housekeep(self._now())
            except Exception:
                logger.exception("data plane housekeeping failed")

    def _housekeep(self, now: float) -> None:
        for link in list(self._pending):
            # A dialer retries with a fresh connection soon: its first Initial may have reached
            # a peer that was not listening yet, and aioquic's retransmissions back off fast.
            limit = DIAL_RETRY_SECONDS if link.is_dialer else HANDSHAKE_TIMEOUT_SECONDS
            if now - link.created > limit:
                self._close_link(link, "handshake timed out")
                link.state = STATE_CLOSED
                self._on_link_closed(link)
        self._resolve_contenders(now)
        # Packets of the fast path bypass aioquic, so a ping every interval keeps its idle
        # timer and the NAT mapping alive even while data flows.
        if now - self._last_keepalive >= KEEPALIVE_INTERVAL:
            self._last_keepalive = now
            for link in list(self._links.values()):
                link.connection.send_ping(0)
                link.process_events(self._on_peer_payload, self._on_link_state, self._register_cid)
                self._flush(link, now, probe=link.path != PATH_DIRECT)
                self._arm_timer(link)
            self._relays.flush(now)
        self._relays.check(now)
        if now - self._last_flow_expiry > 30:
            self._last_flow_expiry = now
            self.enforcer.expire_flows(now)
        self._dial_missing(now)

    def _drop(self, reason: str, count: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + count

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()
