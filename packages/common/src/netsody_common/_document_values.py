"""Readers for single TOML values of a network document, recording problems instead of raising.

Each reader takes the table, the key and the TOML path of the table, and returns the converted
value, or None after adding a line to `Problems` when the value is missing or invalid.
"""

from __future__ import annotations

import datetime
import json
import re
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    NetmaskValueError,
    ip_address,
    ip_network,
)
from typing import Any

DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_OCTET = r"(0|[1-9][0-9]{0,2})"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z")
MAX_OCTET = 255
_DOTTED_NUMBERS = re.compile(r"[0-9./]+\Z")
MAX_DOMAIN_LENGTH = 253


class Problems:
    """The problems found in one document, in the order they were found."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.lines)


def join(path: str, key: str) -> str:
    """Return the TOML path of `key` inside the table at `path` ("" for the top level)."""
    return f"{path}.{key}" if path else key


def show(value: Any) -> str:
    """Format a TOML value for a message: plain strings as written, strings with surrounding
    spaces or control characters quoted and escaped, other types with their TOML type."""
    if isinstance(value, str):
        if value.strip() and value == value.strip() and value.isprintable():
            return value
        return json.dumps(value, ensure_ascii=False)
    return describe(value)


def describe(value: Any) -> str:
    """Name the TOML type of a value, followed by the value for scalars."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return f"date-time {value.isoformat()}"
    return type(value).__name__


def check_keys(
    table: dict[str, Any], path: str, problems: Problems, *, known: tuple[str, ...]
) -> None:
    """Report every key of `table` that is not in `known`."""
    for key in table:
        if key not in known:
            problems.add(
                join(path, key),
                f"unknown key (known keys: {', '.join(sorted(known))})",
            )


def read_table_list(data: dict[str, Any], key: str, problems: Problems) -> list[dict[str, Any]]:
    """Read an array of tables (`[[key]]`); report any other type and return the tables found."""
    value = data.get(key, [])
    if not isinstance(value, list):
        problems.add(key, f"expected an array of tables ([[{key}]]), got {describe(value)}")
        return []
    tables: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            tables.append(item)
        else:
            problems.add(f"{key}[{index}]", f"expected a table, got {describe(item)}")
    return tables if len(tables) == len(value) else []


def read_str(
    table: dict[str, Any], key: str, path: str, problems: Problems, *, required: bool = False
) -> str | None:
    """Read a string value; report a missing required key or a value of another type."""
    if key not in table:
        if required:
            problems.add(path or "document", f"required key {key} is missing")
        return None
    value = table[key]
    if not isinstance(value, str):
        problems.add(join(path, key), f"expected a string, got {describe(value)}")
        return None
    return value


def read_str_list(
    table: dict[str, Any], key: str, path: str, problems: Problems, *, required: bool = False
) -> tuple[str, ...] | None:
    """Read an array of strings; report a missing required key or any other type."""
    if key not in table:
        if required:
            problems.add(path or "document", f"required key {key} is missing")
        return None
    value = table[key]
    if not isinstance(value, list):
        problems.add(join(path, key), f"expected an array of strings, got {describe(value)}")
        return None
    result: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            problems.add(f"{join(path, key)}[{index}]", f"expected a string, got {describe(item)}")
            return None
        result.append(item)
    return tuple(result)


def parse_ipv4_address(text: str) -> IPv4Address | None:
    """Return the IPv4 address written in dotted-quad form, or None.

    Accepts exactly what `ipaddress.IPv4Address` accepts from a string (no leading zeros, ASCII
    digits only), but parses with one regular expression because documents hold thousands of
    addresses and the standard parser dominated the validation time.
    """
    match = _IPV4.match(text)
    if match is None:
        return None
    value = 0
    for octet in match.groups():
        number = int(octet)
        if number > MAX_OCTET:
            return None
        value = value << 8 | number
    return IPv4Address(value)


def parse_ip_address(text: str) -> IPv4Address | IPv6Address | None:
    """Return the IPv4 or IPv6 address in `text`, or None."""
    try:
        return ip_address(text)
    except ValueError:
        return None


def read_strict_network(text: str, path: str, problems: Problems) -> IPv4Network | None:
    """Read an IPv4 subnet in CIDR form whose address is the network address."""
    try:
        lenient = IPv4Network(text, strict=False)
    except (AddressValueError, NetmaskValueError, ValueError):
        problems.add(path, f"{show(text)} is not an IPv4 subnet in CIDR form (like 10.1.0.0/24)")
        return None
    if "/" not in text:
        problems.add(path, f"{show(text)} has no prefix length: write it in CIDR form")
        return None
    try:
        return IPv4Network(text, strict=True)
    except ValueError:
        problems.add(path, f"{show(text)} has host bits set: use the network address {lenient}")
        return None


def read_any_network(text: str, path: str, problems: Problems) -> IPv4Network | IPv6Network | None:
    """Read an IPv4 or IPv6 subnet (or a single address) written with its network address."""
    try:
        lenient = ip_network(text, strict=False)
    except ValueError:
        problems.add(path, f"{show(text)} is not an IPv4 or IPv6 subnet in CIDR form")
        return None
    try:
        ip_network(text, strict=True)
    except ValueError:
        problems.add(path, f"{show(text)} has host bits set: use the network address {lenient}")
        return None
    return lenient


def looks_like_ipv4(text: str) -> bool:
    """Return whether `text` consists of digits, dots and slashes, so it was meant as IPv4."""
    return bool(_DOTTED_NUMBERS.match(text))


def is_domain(text: str) -> bool:
    """Return whether `text` is a domain of two or more DNS labels whose last label has a letter."""
    if len(text) > MAX_DOMAIN_LENGTH:
        return False
    labels = text.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(DNS_LABEL.match(label) for label in labels)


def canonical_resource_dest(text: str) -> str | None:
    """Return the canonical form of a resource destination, or None when it is invalid.

    Addresses and subnets keep their form (a subnet must be given by its network address);
    domains and wildcard domains become lowercase.
    """
    if looks_like_ipv4(text):
        if "/" in text:
            try:
                return str(IPv4Network(text, strict=True))
            except ValueError:
                return None
        address = parse_ipv4_address(text)
        return None if address is None else str(address)
    lowered = text.lower()
    if lowered.startswith("*."):
        remainder = lowered[2:]
        valid = is_domain(remainder) or bool(DNS_LABEL.match(remainder))
        return lowered if valid and not remainder.isdigit() else None
    return lowered if is_domain(lowered) else None
