"""The host's own network interfaces, read with ioctls (no external tools)."""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFADDR = 0x8915


def local_ipv4_addresses(exclude_interfaces: set[str]) -> list[str]:
    """IPv4 addresses of the local interfaces, without loopback and `exclude_interfaces`."""
    addresses = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            if name in exclude_interfaces or name == "lo":
                continue
            request = struct.pack("256s", name.encode()[:15])
            try:
                result = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue
            address = socket.inet_ntoa(result[20:24])
            if not address.startswith("127."):
                addresses.append(address)
    return addresses
