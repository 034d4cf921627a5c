"""A peer that authenticates correctly and then sends packets with a forged source address.

    python forge_peer.py IDENTITY ACCEPTOR_PK HOST PORT FORGED_SRC DST COUNT

Dials the acceptor with the identity at IDENTITY, completes the handshake, then sends COUNT
ICMP echo requests from FORGED_SRC to DST inside the authenticated connection. Exits 0 once they
are sent, 2 when the handshake did not complete within 15 seconds, 3 when the acceptor closed
the connection (for example because no policy permits this identity).
"""

import socket
import struct
import sys
import time

from netsody_agent.dataplane.link import STATE_CLOSED, STATE_UP, PeerLink
from netsody_agent.dataplane.packet import PROTO_ICMP, build_ipv4, internet_checksum
from netsody_common.identity import Identity


def echo_request(src: str, dst: str, sequence: int) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, 4242, sequence) + b"forged"
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    return build_ipv4(socket.inet_aton(src), socket.inet_aton(dst), PROTO_ICMP, icmp)


def main() -> int:
    identity_path, acceptor_pk, host, port, forged, dst, count = sys.argv[1:8]
    identity = Identity.load(identity_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.1)
    remote = (host, int(port))
    link = PeerLink.dial(identity, acceptor_pk, now=time.monotonic(), pow_difficulty=8)
    deadline = time.monotonic() + 15
    while link.state not in (STATE_UP, STATE_CLOSED) and time.monotonic() < deadline:
        for data in link.datagrams(time.monotonic()):
            sock.sendto(data, remote)
        try:
            data, _addr = sock.recvfrom(65535)
        except TimeoutError:
            deadline_of_timer = link.connection.get_timer()
            if deadline_of_timer is not None and time.monotonic() >= deadline_of_timer:
                link.connection.handle_timer(time.monotonic())
        else:
            link.receive(data, time.monotonic())
        link.process_events(lambda *_: None, lambda *_: None, lambda *_: None)
    if link.state == STATE_CLOSED:
        return 3
    if link.state != STATE_UP:
        return 2
    for data in link.datagrams(time.monotonic()):
        sock.sendto(data, remote)
    for sequence in range(int(count)):
        sock.sendto(link.seal_datagram(echo_request(forged, dst, sequence)), remote)
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
