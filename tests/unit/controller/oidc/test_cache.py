"""The bounded TTL cache shared by the user and node credential caches."""

import threading

import pytest

from netsody_controller.oidc import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entry_expires_after_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, 60, clock=clock)
    cache.set("a", 1)

    clock.now += 59
    assert cache.get("a") == 1
    clock.now += 1
    assert cache.get("a") is None
    assert len(cache) == 0


def test_per_entry_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, 60, clock=clock)
    cache.set("short", 1, ttl_seconds=5)

    clock.now += 5
    assert "short" not in cache


def test_least_recently_used_evicted() -> None:
    cache: TTLCache[str, int] = TTLCache(2, 60, clock=Clock())
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1

    cache.set("c", 3)

    assert cache.get("b") is None
    assert cache.get("a") == 1
    assert cache.get("c") == 3


def test_expired_entries_dropped_before_eviction() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(2, 60, clock=clock)
    cache.set("old", 1, ttl_seconds=1)
    cache.set("live", 2)
    clock.now += 2

    cache.set("new", 3)

    assert cache.get("live") == 2
    assert cache.get("new") == 3


def test_pop_and_delete_where() -> None:
    cache: TTLCache[str, int] = TTLCache(10, 60, clock=Clock())
    for index in range(4):
        cache.set(f"k{index}", index)

    assert cache.pop("k0") == 0
    assert cache.pop("k0") is None
    assert cache.delete_where(lambda _key, value: value % 2 == 1) == 2
    assert cache.get("k2") == 2
    assert len(cache) == 1


@pytest.mark.parametrize(("max_entries", "ttl"), [(0, 60), (10, 0)])
def test_invalid_limits_rejected(max_entries: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TTLCache(max_entries, ttl)


def test_concurrent_writers_stay_bounded() -> None:
    cache: TTLCache[int, int] = TTLCache(50, 60)

    def write(offset: int) -> None:
        for index in range(500):
            cache.set(offset + index, index)
            cache.get(offset + index // 2)

    threads = [threading.Thread(target=write, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(cache) == 50
