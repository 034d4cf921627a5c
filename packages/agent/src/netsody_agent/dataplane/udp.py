"""The agent's UDP socket, with segmentation and receive offload where the kernel has them.

One `sendmsg` with `UDP_SEGMENT` sends a run of equal-sized datagrams (the last may be
shorter), and with `UDP_GRO` one `recvmsg` returns consecutive datagrams of one sender joined,
with their size in a control message (Linux 4.18 and 5.0). Where either is missing, datagrams go
one per system call, with the same results.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

logger = logging.getLogger(__name__)

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# Socket options of asm-generic/socket.h: set a buffer size above net.core.rmem_max/wmem_max,
# which CAP_NET_ADMIN may (the default maximum, 208 KiB, overflows with a few bursts of 64 KiB).
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
# Socket options of linux/udp.h.
UDP_SEGMENT = 103
UDP_GRO = 104
# asm-generic/socket.h: every recvmsg reports the datagrams the socket dropped so far because
# its receive buffer was full.
SO_RXQ_OVFL = 40
# Limits of one segmented send: the kernel takes at most 64 segments (UDP_MAX_SEGMENTS) and one
# UDP datagram's worth of bytes.
MAX_SEGMENTS = 64
MAX_SEGMENTED_BYTES = 65000
_CONTROL_SIZE = 2 * socket.CMSG_SPACE(4)
_RECEIVE_SIZE = 65535
# Errors of a sendmsg with UDP_SEGMENT on a kernel or device without segmentation offload.
_NO_SEGMENTATION = (errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EIO)


class UdpSocket:
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
        self._sock = sock
        self.port: int = sock.getsockname()[1]
        self.segmentation = True
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

    def send(self, data: bytes, address: Any) -> bool:
        """Send one datagram; False when the socket buffer is full. Raises other OSErrors."""
        try:
            self._sock.sendto(data, address)
        except BlockingIOError:
            return False
        return True

    def send_many(self, datagrams: list[bytes], address: Any) -> int:
        """Send datagrams to one address in as few system calls as possible.

        Returns how many were dropped because the socket buffer was full; raises other
        OSErrors.
        """
        dropped = 0
        start = 0
        total = len(datagrams)
        while start < total:
            end = _run_end(datagrams, start) if self.segmentation else start + 1
            if end - start == 1:
                dropped += not self.send(datagrams[start], address)
            else:
                dropped += self._send_run(datagrams[start:end], address)
            start = end
        return dropped

    def _send_run(self, run: list[bytes], address: Any) -> int:
        size = len(run[0]).to_bytes(2, "little")
        try:
            self._sock.sendmsg([b"".join(run)], [(socket.SOL_UDP, UDP_SEGMENT, size)], 0, address)
        except BlockingIOError:
            return len(run)
        except OSError as error:
            if error.errno not in _NO_SEGMENTATION:
                raise
            logger.info("UDP segmentation offload unavailable (%s), sending one by one", error)
            self.segmentation = False
            return sum(not self.send(data, address) for data in run)
        return 0


def _set_buffer(sock: socket.socket, option: int, forced: int) -> None:
    """Set a socket buffer to SOCKET_BUFFER_BYTES, past the system maximum where permitted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER_BYTES)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)


def _run_end(datagrams: list[bytes], start: int) -> int:
    """Return the end of the run from `start` that one segmented send may carry.

    A run is datagrams of the first one's size, up to the kernel's limits; a shorter datagram
    ends it as its last.
    """
    size = len(datagrams[start])
    total = len(datagrams)
    length = size
    end = start + 1
    while end < total and end - start < MAX_SEGMENTS:
        following = len(datagrams[end])
        if following > size or length + following > MAX_SEGMENTED_BYTES:
            break
        length += following
        end += 1
        if following < size:
            break
    return end
