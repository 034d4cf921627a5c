"""A bounded, thread-safe cache with entry lifetimes, for validated users and node credentials.

Each process has its own copy, so controller replicas do not share entries.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A thread-safe mapping with a maximum size (least recently used out) and entry lifetime."""

    def __init__(
        self, *, max_entries: int, ttl_secs: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = max_entries
        self._ttl = ttl_secs
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """Return the live value of `key`, or None when absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires_at, value = entry
            if expires_at <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V, *, ttl_secs: float | None = None) -> None:
        """Store `value` for `ttl_secs` or the cache's lifetime, whichever is shorter."""
        ttl = self._ttl if ttl_secs is None else min(ttl_secs, self._ttl)
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def discard_where(self, predicate: Callable[[K, V], bool]) -> int:
        """Remove the entries for which `predicate(key, value)` is true and return their count."""
        with self._lock:
            doomed = [key for key, (_, value) in self._entries.items() if predicate(key, value)]
            for key in doomed:
                del self._entries[key]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
