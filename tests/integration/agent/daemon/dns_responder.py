"""A tiny authoritative DNS server over UDP for the domain resource test.

    python dns_responder.py ADDRESS PORT NAME=IPV4 [ALIAS=>TARGET ...]

Answers A queries for each NAME with its IPV4 (TTL 120) and each ALIAS with a CNAME to TARGET
followed by TARGET's A record; every other name gets NXDOMAIN. It prints "ready" once bound
and writes one line per query ("QUERY name") so the test can see what reached it.
"""

from __future__ import annotations

import socket
import struct
import sys
from ipaddress import IPv4Address

TTL = 120


def read_question(data: bytes) -> tuple[str, int, bytes]:
    offset = 12
    labels = []
    while data[offset]:
        length = data[offset]
        labels.append(data[offset + 1 : offset + 1 + length].decode().lower())
        offset += 1 + length
    qtype = struct.unpack_from("!H", data, offset + 1)[0]
    return ".".join(labels), qtype, data[12 : offset + 5]


def encode(name: str) -> bytes:
    return b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"


def respond(data: bytes, records: dict[str, str], aliases: dict[str, str]) -> bytes:
    query_id, flags = struct.unpack_from("!HH", data)
    name, qtype, question = read_question(data)
    print("QUERY", name, flush=True)
    answers = []
    target = name
    if name in aliases:
        target = aliases[name]
        answers.append(
            struct.pack("!HHHIH", 0xC00C, 5, 1, TTL, len(encode(target))) + encode(target)
        )
    if target not in records:
        return struct.pack("!HHHHHH", query_id, 0x8403 | (flags & 0x0100), 1, 0, 0, 0) + question
    if qtype == 1:
        owner = encode(target) if answers else struct.pack("!H", 0xC00C)
        answers.append(
            owner + struct.pack("!HHIH", 1, 1, TTL, 4) + IPv4Address(records[target]).packed
        )
    header = struct.pack("!HHHHHH", query_id, 0x8400 | (flags & 0x0100), 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    records: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for item in sys.argv[3:]:
        if "=>" in item:
            alias, target = item.split("=>", 1)
            aliases[alias] = target
        else:
            name, value = item.split("=", 1)
            records[name] = value
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, port))
        print("ready", flush=True)
        while True:
            data, peer = sock.recvfrom(512)
            sock.sendto(respond(data, records, aliases), peer)


if __name__ == "__main__":
    main()
