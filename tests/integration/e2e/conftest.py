"""Fixtures of the end-to-end tests: the namespace topology and the check that root is available."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers next to this file are plain modules, imported the same way by benchmarks/e2e_bench.py.
sys.path.insert(0, str(Path(__file__).parent))

from topology import Topology

REQUIRED_TOOLS = ("ip", "iptables", "ping")


def missing_root_support() -> str | None:
    """Return why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"needs {', '.join(missing)} on PATH (Debian packages iproute2, iptables, iputils-ping)"
        )
    return None


@pytest.fixture(autouse=True)
def _skip_root_tests_without_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") is None:
        return
    reason = missing_root_support()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    """The full topology, built once per test module and always torn down."""
    reason = missing_root_support()
    if reason:
        pytest.skip(reason)
    topo = Topology().build()
    try:
        yield topo
    finally:
        topo.teardown()
