"""Logging helpers: a repeated event logs at WARNING once per window, then at DEBUG."""

from __future__ import annotations

import logging
import time

_MAX_KEYS = 4096


class RepeatLimiter:
    """Decides the level of a repeated event: WARNING for the first within `window` seconds."""

    def __init__(self, window: float = 60.0) -> None:
        self._window = window
        self._last: dict[str, float] = {}

    def level(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self._window:
            return logging.DEBUG
        if len(self._last) >= _MAX_KEYS:
            self._last.clear()  # bounded memory; the next event of each key warns again
        self._last[key] = now
        return logging.WARNING


_limiter = RepeatLimiter()


def warn_repeated(logger: logging.Logger, key: str, message: str, *args: object) -> None:
    """Log at WARNING the first time `key` occurs within a minute, at DEBUG after that."""
    logger.log(_limiter.level(key), message, *args)
