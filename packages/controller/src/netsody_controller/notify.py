"""Change notifications for long-polling agents, across every controller process.

A change that agents must see is published after its transaction commits, as a set of keys
(`network:<id>` for a network's content, `device:<id>` for which networks a device is in). With
Redis, each process subscribes once to one channel and wakes its own waiters whose keys match, so
a change made through one controller process reaches agents waiting on any other. Without Redis
(development), the publisher wakes the waiters of its own process directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis
from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "netsody:config-changes"
# How long a waiter blocks on the first subscription before it checks the database anyway.
SUBSCRIBE_TIMEOUT_SECS = 5.0
RECONNECT_DELAY_SECS = 1.0
WILDCARD_KEY = "*"


def network_key(network_id: object) -> str:
    return f"network:{network_id}"


def device_key(device_id: object) -> str:
    return f"device:{device_id}"


class _Waiter:
    __slots__ = ("event", "keys", "loop")

    def __init__(self, keys: frozenset[str], loop: asyncio.AbstractEventLoop) -> None:
        self.keys = keys
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


class Notifier:
    """Process-wide registry of waiting agents, fed by Redis pub/sub or by local publishes."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._lock = threading.Lock()
        self._waiters: dict[str, set[_Waiter]] = {}
        self._publisher: redis.Redis | None = None
        self._listeners: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        self._subscribed: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    # Publishing (any thread)

    def publish(self, keys: Iterable[str]) -> None:
        """Announce a committed change. Failures are logged, since agents poll again anyway."""
        key_list = sorted(set(keys))
        if not key_list:
            return
        if not self._redis_url:
            self.deliver(key_list)
            return
        try:
            if self._publisher is None:
                self._publisher = redis.Redis.from_url(self._redis_url, socket_timeout=2)
            self._publisher.publish(CHANNEL, json.dumps(key_list))
        except (redis.RedisError, OSError) as error:
            # Waiting agents still get the change when their long poll times out.
            logger.warning(
                "publishing a config change to Redis failed", extra={"error": str(error)}
            )
            self.deliver(key_list)

    def deliver(self, keys: Iterable[str]) -> int:
        """Wake the waiters of this process whose keys match. Return how many."""
        with self._lock:
            woken: set[_Waiter] = set()
            for key in keys:
                if key == WILDCARD_KEY:
                    for waiters in self._waiters.values():
                        woken.update(waiters)
                else:
                    woken.update(self._waiters.get(key, ()))
        for waiter in woken:
            waiter.wake()
        return len(woken)

    # Waiting (inside an event loop)

    async def register(self, keys: Iterable[str]) -> _Waiter:
        """Register interest in `keys` before reading the current state, so no change is lost."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(frozenset(keys), loop)
        with self._lock:
            for key in waiter.keys:
                self._waiters.setdefault(key, set()).add(waiter)
        if self._redis_url:
            await self._ensure_listener(loop)
        return waiter

    def unregister(self, waiter: _Waiter) -> None:
        with self._lock:
            for key in waiter.keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]

    @staticmethod
    async def wait(waiter: _Waiter, seconds: float) -> bool:
        """Wait until the waiter is woken (True) or `seconds` pass (False)."""
        try:
            await asyncio.wait_for(waiter.event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def waiter_count(self) -> int:
        with self._lock:
            return len({waiter for waiters in self._waiters.values() for waiter in waiters})

    async def _ensure_listener(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._listeners.get(loop)
        if task is None or task.done():
            self._subscribed[loop] = asyncio.Event()
            self._listeners[loop] = loop.create_task(self._listen(self._subscribed[loop]))
        try:
            await asyncio.wait_for(self._subscribed[loop].wait(), SUBSCRIBE_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning("subscribing to config changes in Redis timed out")

    async def _listen(self, subscribed: asyncio.Event) -> None:
        while True:
            client = aioredis.Redis.from_url(self._redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if subscribed.is_set():
                        # Changes published while disconnected were missed: every waiter rechecks.
                        self.deliver([WILDCARD_KEY])
                    subscribed.set()
                    async for message in pubsub.listen():
                        self._on_message(message)
            except (redis.RedisError, OSError) as error:
                logger.warning(
                    "config change subscription lost. Reconnecting", extra={"error": str(error)}
                )
            finally:
                await client.aclose()
            await asyncio.sleep(RECONNECT_DELAY_SECS)

    def _on_message(self, message: dict[str, object]) -> None:
        if message.get("type") != "message":
            return
        try:
            keys = json.loads(message["data"])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            logger.warning("ignored a malformed config change message")
            return
        if isinstance(keys, list):
            self.deliver(str(key) for key in keys)


_notifier: Notifier | None = None
_notifier_lock = threading.Lock()


def get_notifier() -> Notifier:
    """Return the process's notifier, created from settings.REDIS_URL on first use."""
    global _notifier
    with _notifier_lock:
        if _notifier is None:
            _notifier = Notifier(settings.REDIS_URL)
        return _notifier
