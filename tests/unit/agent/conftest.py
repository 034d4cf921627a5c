"""Fixtures for the agent's unit tests: identities and network documents."""

from __future__ import annotations

import pytest

from netsody_common.identity import Identity

TEST_POW_DIFFICULTY = 4


@pytest.fixture(autouse=True)
def low_pow_difficulty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETSODY_POW_DIFFICULTY", str(TEST_POW_DIFFICULTY))


@pytest.fixture
def identities() -> tuple[Identity, Identity, Identity]:
    """Three identities: this node, a peer and a gateway."""
    return tuple(Identity.generate(TEST_POW_DIFFICULTY, progress=False) for _ in range(3))


@pytest.fixture
def lab():
    """The `lab_document` function."""
    return lab_document


def lab_document(me: str, peer: str, gateway: str, *, peer_name: str = "beta") -> str:
    """A network where `me` serves 192.168.60.0/24 and `gateway` serves 192.168.50.0/24."""
    return f'''
name = "lab"
network = "10.77.0.0/24"

[[node]]
hostname = "alpha"
ip = "10.77.0.10"
pk = "{me}"
groups = ["staff"]

[[node]]
hostname = "{peer_name}"
ip = "10.77.0.11"
pk = "{peer}"

[[node]]
hostname = "gamma"
ip = "10.77.0.12"
pk = "{gateway}"

[[resource]]
dest = "192.168.50.0/24"
gw = "{gateway}"
groups = ["staff"]

[[resource]]
dest = "192.168.60.0/24"
gw = "{me}"
groups = ["ALL"]

[[policy]]
source_groups = ["ALL"]
destination_groups = ["ALL"]

[[policy]]
source_groups = ["staff"]
destination_groups = ["staff"]
'''
