"""Sending many UDP datagrams to one address with few system calls (Linux UDP_SEGMENT).

One `sendmsg` with the `UDP_SEGMENT` control message (Linux 4.18) sends a run of equal-sized
datagrams, the last of which may be shorter. Where the kernel or the device lacks segmentation
offload, the datagrams go one per system call with the same result.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

logger = logging.getLogger(__name__)

# Socket option of linux/udp.h.
UDP_SEGMENT = 103
# Limits of one segmented send: the kernel takes at most 64 segments (UDP_MAX_SEGMENTS) and one
# UDP datagram's worth of bytes.
MAX_SEGMENTS = 64
MAX_SEGMENTED_BYTES = 65000
# Errors of a sendmsg with UDP_SEGMENT on a kernel or device without segmentation offload.
_NO_SEGMENTATION = (errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EIO)


class SegmentedSender:
    """Sends datagrams on the non-blocking UDP socket `sock`, batched per destination."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.segmentation = True

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
            end = run_end(datagrams, start) if self.segmentation else start + 1
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


def run_end(datagrams: list[bytes], start: int) -> int:
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
