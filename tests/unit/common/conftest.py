"""Fixtures for the netsody_common tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def low_pow_difficulty(monkeypatch: pytest.MonkeyPatch) -> int:
    """Set NETSODY_POW_DIFFICULTY to 8 so that generating an identity takes milliseconds."""
    monkeypatch.setenv("NETSODY_POW_DIFFICULTY", "8")
    return 8
