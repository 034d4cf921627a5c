"""The agent's UDP socket, with segmentation and receive offload where the kernel has them.

Sends go through `netsody_common.udpsend` (one `sendmsg` with `UDP_SEGMENT` per run of
equal-sized datagrams). With `UDP_GRO` one `recvmsg` returns consecutive datagrams of one sender
joined, with their size in a control message (Linux 5.0). Where either is missing, datagrams go
one per system call, with the same results.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from netsody_common.udpsend import SegmentedSender

logger = logging.getLogger(__name__)

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# Socket options of asm-generic/socket.h: set a buffer size above net.core.rmem_max/wmem_max,
# which CAP_NET_ADMIN may (the default maximum, 208 KiB, overflows with a few bursts of 64 KiB).
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
# Socket option of linux/udp.h.
UDP_GRO = 104
# asm-generic/socket.h: every recvmsg reports the datagrams the socket dropped so far because
# its receive buffer was full.
SO_RXQ_OVFL = 40
_CONTROL_SIZE = 2 * socket.CMSG_SPACE(4)
_RECEIVE_SIZE = 65535


class UdpSocket(SegmentedSender):
    """A non-blocking IPv4 UDP socket bound to `host`:`port` (port 0 picks one).

    Raises OSError when binding fails.
    """

    def __init__(self, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE)
            _set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
        except OSError as error:
            logger.info("UDP receive offload unavailable: %s", error.strerror)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        except OSError as error:
            logger.info("socket drop counter unavailable: %s", error.strerror)
        super().__init__(sock)
        self.port: int = sock.getsockname()[1]
        self.truncated = 0
        # Datagrams the kernel dropped because the receive buffer was full (SO_RXQ_OVFL).
        self.overflows = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def receive(self, limit: int) -> tuple[list[tuple[bytes, Any]], OSError | None]:
        """Read up to `limit` system calls' worth of datagrams without blocking.

        Returns the (datagram, source address) pairs in arrival order, and the error that ended
        the batch early (an ICMP port unreachable from a peer that went away surfaces here).
        """
        sock = self._sock
        received: list[tuple[bytes, Any]] = []
        for _ in range(limit):
            try:
                data, control, flags, address = sock.recvmsg(_RECEIVE_SIZE, _CONTROL_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                return received, error
            if flags & socket.MSG_TRUNC:
                self.truncated += 1
                continue
            size = self._read_control(control)
            if 0 < size < len(data):
                received.extend(
                    (data[start : start + size], address) for start in range(0, len(data), size)
                )
            else:
                received.append((data, address))
        return received, None

    def _read_control(self, control: list[tuple[int, int, bytes]]) -> int:
        """Return the datagram size of a UDP_GRO control message (0 without one).

        Also keep the drop count of an SO_RXQ_OVFL control message.
        """
        size = 0
        for level, kind, value in control:
            if len(value) < 4:
                continue
            if level == socket.SOL_UDP and kind == UDP_GRO:
                size = int.from_bytes(value[:4], "little")
            elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                self.overflows = int.from_bytes(value[:4], "little")
        return size


def _set_buffer(sock: socket.socket, option: int, forced: int) -> None:
    """Set a socket buffer to SOCKET_BUFFER_BYTES, past the system maximum where permitted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER_BYTES)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
