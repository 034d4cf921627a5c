"""Linux TUN device for the overlay, configured with ioctls only.

`open_tun(name)` creates a layer-3 TUN device (IFF_TUN | IFF_NO_PI) and returns a `TunDevice`.
`set_address`, `set_mtu` and `set_up` configure it with the SIOCSIF* ioctls, so no `ip` binary is
needed. The file descriptor is non-blocking: `read_batch` drains up to a given number of frames in
one call, `write` sends one IP packet and `write_frames` sends frames. The device is not
persistent, so the kernel deletes it when the last queue's descriptor closes (`close()`).

With `offload=True` (the default) the device also carries virtio-net headers (IFF_VNET_HDR) and
TCP segmentation and checksum offload (TUNSETOFFLOAD): every frame read or written starts with a
`dataplane.offload.VNET_HEADER_SIZE`-byte header, reads may return TCP super-packets of up to
64 KiB, and writes may carry them (see `netsody_agent.dataplane.offload`). `vnet_header` tells
which kind of device it is; where the kernel refuses offloads the device works without them.

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
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
IFF_UP = 0x1
IFF_RUNNING = 0x40

MAX_PACKET_SIZE = 65535
VNET_HEADER_SIZE = 10  # struct virtio_net_hdr: the kernel default unless TUNSETVNETHDRSZ changes it
_ZERO_VNET_HEADER = bytes(VNET_HEADER_SIZE)


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
    `read_batch` returns an empty list when no packet is waiting. With `vnet_header` every frame
    read or written starts with a virtio-net header.
    """

    def __init__(self, name: str, fds: list[int], *, vnet_header: bool = False) -> None:
        self.name = name
        self.vnet_header = vnet_header
        self._fds = fds
        self._fd = fds[0]
        self._closed = False
        self._read_size = MAX_PACKET_SIZE + (VNET_HEADER_SIZE if vnet_header else 0)

    def __repr__(self) -> str:
        return (
            f"TunDevice(name={self.name!r}, queues={len(self._fds)}, "
            f"vnet_header={self.vnet_header})"
        )

    def fileno(self) -> int:
        return self._fd

    @property
    def queue_fds(self) -> list[int]:
        """The descriptors of all queues (one unless opened with `queues > 1`)."""
        return list(self._fds)

    def read_batch(self, max_packets: int = 64, fd: int | None = None) -> list[bytes]:
        """Read up to `max_packets` frames without blocking; an empty list means none waits.

        A frame is one IP packet, after a virtio-net header when `vnet_header` is set.
        """
        read = os.read
        size = self._read_size
        source = self._fd if fd is None else fd
        packets: list[bytes] = []
        for _ in range(max_packets):
            try:
                packets.append(read(source, size))
            except BlockingIOError:
                break
        return packets

    def write(self, packet: bytes | memoryview) -> None:
        """Write one plain IP packet (complete checksums, no segmentation)."""
        self.write_frames([_ZERO_VNET_HEADER + packet if self.vnet_header else packet])

    def write_frames(self, frames: list[bytes]) -> int:
        """Write frames as `read_batch` returns them; return how many the kernel refused.

        A frame is dropped (with a DEBUG line) when the kernel queue is full or the kernel
        rejects its virtio-net header.
        """
        write = os.write
        fd = self._fd
        refused = 0
        for frame in frames:
            try:
                write(fd, frame)
            except BlockingIOError:
                refused += 1
                logger.debug("TUN %s write queue full, packet dropped", self.name)
            except OSError as error:
                # EINVAL: a header the kernel does not accept (bad checksum or GSO fields).
                refused += 1
                logger.debug("TUN %s write failed, frame dropped: %s", self.name, error)
        return refused

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


def open_tun(name: str = "netsody", *, queues: int = 1, offload: bool = True) -> TunDevice:
    """Create the TUN device `name` and return it open and down, without an address.

    With `queues > 1` the device uses IFF_MULTI_QUEUE and gets one descriptor per queue. With
    `offload` it carries virtio-net headers and TCP segmentation offload (see the module text).
    Raises `TunError` when /dev/net/tun is missing, the name is in use by another kind of
    device, or the process lacks CAP_NET_ADMIN.
    """
    encoded = _ifreq_name(name)
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if queues > 1 else 0)
    if offload:
        flags |= IFF_VNET_HDR
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
    if offload and not _enable_offload(fds[0], actual):
        for fd in fds:
            os.close(fd)
        return open_tun(name, queues=queues, offload=False)
    logger.info(
        "TUN device %s created with %d queue(s), offloads %s",
        actual,
        len(fds),
        "on" if offload else "off",
    )
    return TunDevice(actual, fds, vnet_header=offload)


def _enable_offload(fd: int, name: str) -> bool:
    """Turn on checksum and IPv4 TCP segmentation offload; False when the kernel refuses."""
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
    except OSError as error:
        logger.warning(
            "TUN device %s without offloads: enabling them failed: %s", name, error.strerror
        )
        return False
    return True
