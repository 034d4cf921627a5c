"""Rate-limited logging of repeated events in the data plane."""

from __future__ import annotations

import logging
import time

REPEAT_WINDOW_SECONDS = 60.0


class RepeatLimiter:
    """Logs an event at its level the first time per key and window, then at DEBUG.

    The count of repeats logged at DEBUG is added to the next message at the full level.
    """

    def __init__(self, logger: logging.Logger, window: float = REPEAT_WINDOW_SECONDS) -> None:
        self._logger = logger
        self._window = window
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, repeats = self._last.get(key, (float("-inf"), 0))
        if now - last >= self._window:
            if repeats:
                message += " (%d similar messages suppressed)"
                args = (*args, repeats)
            self._logger.log(level, message, *args)
            self._last[key] = (now, 0)
            return
        self._last[key] = (last, repeats + 1)
        self._logger.debug(message, *args)
        if len(self._last) > 4096:
            self._last.clear()
