"""Node credential derivation, verification and the bounded TTL cache."""

from __future__ import annotations

import uuid

import pytest

from netsody_controller.caching import TtlCache
from netsody_controller.credentials import (
    CREDENTIAL_PREFIX,
    CredentialVerifier,
    ParsedCredential,
    derive_credential,
    verify_credential,
)

SECRET = bytes(range(32))
DEVICE = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_credential_round_trip():
    token = derive_credential(SECRET, DEVICE, 3)
    assert token.startswith(CREDENTIAL_PREFIX)
    assert verify_credential(SECRET, token) == ParsedCredential(device_id=DEVICE, generation=3)


def test_credential_is_deterministic():
    assert derive_credential(SECRET, DEVICE, 0) == derive_credential(SECRET, DEVICE, 0)
    assert derive_credential(SECRET, DEVICE, 0) != derive_credential(SECRET, DEVICE, 1)


def test_credential_other_secret_rejected():
    token = derive_credential(SECRET, DEVICE, 0)
    assert verify_credential(b"x" * 32, token) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),
        lambda token: token.replace("_0_", "_1_"),
        lambda token: token.replace("_0_", "_00_"),
        lambda token: token.replace(DEVICE.hex, uuid.uuid4().hex),
        lambda token: token.removeprefix(CREDENTIAL_PREFIX),
        lambda token: token.rsplit("_", 1)[0],
        lambda token: token.upper(),
    ],
    ids=["mac", "generation", "padded-generation", "device", "prefix", "truncated", "case"],
)
def test_tampered_credential_rejected(mangle):
    token = derive_credential(SECRET, DEVICE, 0)
    assert verify_credential(SECRET, mangle(token)) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_cache_expires():
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(max_entries=10, ttl_secs=5, clock=clock)
    cache.put("a", 1)
    assert cache.get("a") == 1
    clock.now += 5
    assert cache.get("a") is None


def test_ttl_cache_evicts_least_recently_used():
    cache: TtlCache[str, int] = TtlCache(max_entries=2, ttl_secs=60, clock=FakeClock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None
    assert cache.get("a") == 1
    assert len(cache) == 2


def test_ttl_cache_shorter_entry_lifetime():
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(max_entries=10, ttl_secs=60, clock=clock)
    cache.put("a", 1, ttl_secs=2)
    clock.now += 3
    assert cache.get("a") is None


def test_ttl_cache_zero_lifetime_stores_nothing():
    cache: TtlCache[str, int] = TtlCache(max_entries=10, ttl_secs=0, clock=FakeClock())
    cache.put("a", 1)
    assert len(cache) == 0


def test_verifier_forgets_device():
    verifier = CredentialVerifier(SECRET, max_entries=10, ttl_secs=60)
    token = derive_credential(SECRET, DEVICE, 0)
    assert verifier.verify(token) is not None
    assert verifier.forget_device(DEVICE) == 1
    assert verifier.forget_device(DEVICE) == 0
