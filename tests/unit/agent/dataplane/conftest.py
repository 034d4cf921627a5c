"""Fixtures for the data plane unit tests: identities with a low proof-of-work difficulty."""

import pytest

from netsody_common.identity import Identity

TEST_DIFFICULTY = 8


@pytest.fixture(scope="session")
def identities() -> list[Identity]:
    """Three identities sorted by pk, so index 0 is the dialer towards the others."""
    return sorted(
        (Identity.generate(TEST_DIFFICULTY, progress=False) for _ in range(3)),
        key=lambda identity: identity.pk,
    )
