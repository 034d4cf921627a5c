"""Linux TUN device for the overlay, configured with ioctls only.

`open_tun(name)` creates a layer-3 TUN device (IFF_TUN | IFF_NO_PI, so every read returns one bare
IP packet) and returns a `TunDevice`. `set_address`, `set_mtu` and `set_up` configure it with the
SIOCSIF* ioctls, so no `ip` binary is needed. The file descriptor is non-blocking: `read_batch`
drains up to a given number of packets in one call and `write` sends one packet. The device is not
persistent, so the kernel deletes it when the last queue's descriptor closes (`close()`).

Requires CAP_NET_ADMIN (root).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
from ipaddress import IPv4Interface

logger = logging.getLogger(__name__)

TUN_CLONE_PATH = "/dev/net/tun"
IFNAMSIZ = 16

# Constants from linux/if_tun.h and linux/sockios.h.
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
IFF_UP = 0x1
IFF_RUNNING = 0x40

MAX_PACKET_SIZE = 65535


class TunError(OSError):
    """A TUN device could not be created or configured."""


def _ifreq_name(name: str) -> bytes:
    encoded = name.encode()
    if not encoded or len(encoded) >= IFNAMSIZ:
        raise TunError(
            errno.EINVAL,
            f"invalid interface name {name!r}: use 1 to {IFNAMSIZ - 1} ASCII characters",
        )
    return encoded


def _ifreq_sockaddr_in(name: bytes, address: str) -> bytes:
    # struct ifreq: char ifr_name[16]; struct sockaddr_in (family, port, address, zero padding).
    return struct.pack("16sH2s4s8s", name, socket.AF_INET, b"", socket.inet_aton(address), b"")


class TunDevice:
    """An open TUN device: one non-blocking descriptor per queue.

    `fileno()` is the descriptor to register with `loop.add_reader`. Reads and writes never block;
    `read_batch` returns an empty list when no packet is waiting.
    """

    def __init__(self, name: str, fds: list[int]) -> None:
        self.name = name
        self._fds = fds
        self._fd = fds[0]
        self._closed = False

    def __repr__(self) -> str:
        return f"TunDevice(name={self.name!r}, queues={len(self._fds)})"

    def fileno(self) -> int:
        return self._fd

    @property
    def queue_fds(self) -> list[int]:
        """The descriptors of all queues (one unless opened with `queues > 1`)."""
        return list(self._fds)

    def read_batch(self, max_packets: int = 64, fd: int | None = None) -> list[bytes]:
        """Read up to `max_packets` IP packets without blocking; an empty list means none waits."""
        read = os.read
        source = self._fd if fd is None else fd
        packets: list[bytes] = []
        for _ in range(max_packets):
            try:
                packets.append(read(source, MAX_PACKET_SIZE))
            except BlockingIOError:
                break
        return packets

    def write(self, packet: bytes | memoryview) -> None:
        """Write one IP packet; drops it (with a DEBUG line) when the kernel queue is full."""
        try:
            os.write(self._fd, packet)
        except BlockingIOError:
            logger.debug("TUN %s write queue full, packet dropped", self.name)

    def set_address(self, interface: IPv4Interface) -> None:
        """Assign `interface` (address and prefix) with SIOCSIFADDR and SIOCSIFNETMASK."""
        name = _ifreq_name(self.name)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            self._ioctl(sock, SIOCSIFADDR, _ifreq_sockaddr_in(name, str(interface.ip)), "address")
            netmask = _ifreq_sockaddr_in(name, str(interface.netmask))
            self._ioctl(sock, SIOCSIFNETMASK, netmask, "netmask")

    def set_mtu(self, mtu: int) -> None:
        """Set the interface MTU in bytes with SIOCSIFMTU."""
        request = struct.pack("16si20x", _ifreq_name(self.name), mtu)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            self._ioctl(sock, SIOCSIFMTU, request, "MTU")

    def set_up(self, up: bool = True) -> None:
        """Set or clear IFF_UP (and IFF_RUNNING) with SIOCGIFFLAGS and SIOCSIFFLAGS."""
        name = _ifreq_name(self.name)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            current = self._ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", name, 0), "flags")
            flags = struct.unpack_from("16sH", current)[1]
            flags = flags | IFF_UP | IFF_RUNNING if up else flags & ~(IFF_UP | IFF_RUNNING)
            self._ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", name, flags), "flags")

    def _ioctl(self, sock: socket.socket, request: int, arg: bytes, what: str) -> bytes:
        try:
            return fcntl.ioctl(sock.fileno(), request, arg)
        except OSError as error:
            hint = _hint(error.errno, self.name, "the agent needs root or CAP_NET_ADMIN")
            raise TunError(
                error.errno,
                f"setting the {what} of TUN device {self.name} failed: {error.strerror} ({hint})",
            ) from error

    def close(self) -> None:
        """Close every queue; the kernel deletes the (non-persistent) device with the last one."""
        if self._closed:
            return
        self._closed = True
        for fd in self._fds:
            os.close(fd)
        logger.info("TUN device %s closed", self.name)

    @property
    def closed(self) -> bool:
        return self._closed


def _open_queue(name: bytes, flags: int) -> tuple[int, str]:
    fd = os.open(TUN_CLONE_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        result = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name, flags))
    except OSError:
        os.close(fd)
        raise
    return fd, result[:IFNAMSIZ].rstrip(b"\0").decode()


def _hint(number: int | None, name: str, default: str) -> str:
    """Return what to do about an error number of a TUN device call."""
    if number == errno.EBUSY:
        return (
            f"another process, such as a second agent, holds a device named {name}: "
            "stop it or pass --device"
        )
    if number == errno.EINVAL:
        return "the kernel rejected the value"
    return default


def open_tun(name: str = "netsody", *, queues: int = 1) -> TunDevice:
    """Create the TUN device `name` and return it open and down, without an address.

    With `queues > 1` the device uses IFF_MULTI_QUEUE and gets one descriptor per queue.
    Raises `TunError` when /dev/net/tun is missing, the name is in use by another kind of
    device, or the process lacks CAP_NET_ADMIN.
    """
    encoded = _ifreq_name(name)
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if queues > 1 else 0)
    fds: list[int] = []
    actual = name
    try:
        for _ in range(max(1, queues)):
            fd, actual = _open_queue(encoded, flags)
            fds.append(fd)
    except OSError as error:
        for fd in fds:
            os.close(fd)
        hint = _hint(
            error.errno, name, f"check that {TUN_CLONE_PATH} exists and the agent runs as root"
        )
        raise TunError(
            error.errno, f"creating TUN device {name} failed: {error.strerror} ({hint})"
        ) from error
    logger.info("TUN device %s created with %d queue(s)", actual, len(fds))
    return TunDevice(actual, fds)
