"""A bounded, thread-safe cache whose entries expire after a fixed time."""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class TTLCache(Generic[K, V]):
    """Map keys to values for `ttl_seconds`, holding at most `max_entries` of them.

    When the cache is full, `set` evicts the least recently used entry (a `get` hit counts as a
    use). Expired entries are dropped when they are read and before an eviction. All methods
    take one lock, so threads can share the cache. Each process has its own copy, so several
    controller replicas do not share entries.
    """

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: V | None = None) -> V | None:
        """Return the value stored under `key`, or `default` when it is missing or expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return default
            expires_at, value = entry
            if expires_at <= self._clock():
                del self._entries[key]
                return default
            self._entries.move_to_end(key)
            return value

    def set(self, key: K, value: V, *, ttl_seconds: float | None = None) -> None:
        """Store `value` under `key` for `ttl_seconds` (the cache's default when None)."""
        lifetime = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        with self._lock:
            self._entries[key] = (self._clock() + lifetime, value)
            self._entries.move_to_end(key)
            if len(self._entries) > self.max_entries:
                self._drop_expired_locked()
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Remove `key` and return its value, or None when it was not cached."""
        with self._lock:
            entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def delete_where(self, predicate: Callable[[K, V], bool]) -> int:
        """Remove every entry for which `predicate(key, value)` is true; return how many."""
        with self._lock:
            doomed = [key for key, (_, value) in self._entries.items() if predicate(key, value)]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __len__(self) -> int:
        """Return the number of stored entries, counting expired ones not yet dropped."""
        with self._lock:
            return len(self._entries)

    def _drop_expired_locked(self) -> None:
        now = self._clock()
        expired = [key for key, (expires_at, _) in self._entries.items() if expires_at <= now]
        for key in expired:
            del self._entries[key]
