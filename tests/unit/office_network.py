"""The "office" network documents of the domain resource tests, built from a few parameters.

The nodes have fixed public keys, so tests can name them in packets, learned addresses and
expected results. `tests/unit/conftest.py` puts this directory on `sys.path`, so test modules
import this one as `office_network`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tomli_w

CLIENT = "a" * 64
GATEWAY = "b" * 64
OTHER = "c" * 64
SECOND_GATEWAY = "d" * 64

# Public key of each hostname that a test may put in its document.
NODE_KEYS = {"client": CLIENT, "gateway": GATEWAY, "other": OTHER, "second": SECOND_GATEWAY}


def office_document(
    *,
    nodes: Mapping[str, str],
    resources: Mapping[str, str],
    policies: Sequence[Mapping[str, Any]],
    network: str = "10.1.0.0/24",
) -> str:
    """Render the TOML network document named "office".

    `nodes` maps hostnames from `NODE_KEYS` to overlay addresses, and `resources` maps each
    resource destination to its gateway's public key. The policies come last in the text, so
    `text.split("[[policy]]")[0]` is the same network without policies.
    """
    document = {
        "name": "office",
        "network": network,
        "node": [
            {"hostname": hostname, "ip": address, "pk": NODE_KEYS[hostname]}
            for hostname, address in nodes.items()
        ],
        "resource": [{"dest": dest, "gw": gateway} for dest, gateway in resources.items()],
        "policy": list(policies),
    }
    return tomli_w.dumps(document)


def policy(
    source_groups: Sequence[str],
    destination_groups: Sequence[str],
    *,
    tcp_ports: Sequence[int] = (),
) -> dict[str, Any]:
    """Return one `[[policy]]` table, limited to the TCP ports `tcp_ports` when given."""
    table: dict[str, Any] = {
        "source_groups": list(source_groups),
        "destination_groups": list(destination_groups),
    }
    if tcp_ports:
        table["rules"] = [{"protocol": "tcp", "ports": list(tcp_ports)}]
    return table
