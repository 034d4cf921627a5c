"""Running one configuration source: fetch, validate, keep the last valid snapshot, back off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from netsody_agent.desired import AppliedNetwork
from netsody_agent.errors import ConfigSourceError
from netsody_agent.sources import Snapshot, SnapshotCache, Source

logger = logging.getLogger(__name__)

INITIAL_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0

Validator = Callable[[Snapshot], list[AppliedNetwork]]


@dataclass
class SourceState:
    """A running source and what it last delivered."""

    source: Source
    snapshot: Snapshot | None = None
    networks: list[AppliedNetwork] = field(default_factory=list)
    error: str | None = None
    # The error in force before fetching began to fail (an invalid document, or None), shown
    # again once a fetch succeeds. None while fetching works.
    error_before_fetch_failure: str | None = None
    fetch_failing: bool = False
    task: asyncio.Task[None] | None = None
    first_result: asyncio.Event = field(default_factory=asyncio.Event)


class SourceRunner:
    """Drives `SourceState`s: validated snapshots are cached and reported through `on_change`.

    When a source fails (unreachable, HTTP error, unreadable file) the last valid snapshot stays
    in force and the fetch is retried with exponential backoff from 1 s up to 60 s. When a
    source serves an invalid document, the error is recorded and the source waits for its next
    change (file modification, new ETag, new controller revision).
    """

    def __init__(
        self, cache: SnapshotCache, validate: Validator, on_change: Callable[[], None]
    ) -> None:
        self.cache = cache
        self.validate = validate
        self.on_change = on_change

    def restore(self, state: SourceState) -> None:
        """Load the cached snapshot of `state`'s source, if it is still valid."""
        snapshot = self.cache.load(state.source.source_id)
        if snapshot is None:
            return
        try:
            state.networks = self.validate(snapshot)
        except ConfigSourceError as exc:
            logger.warning(
                "cached configuration of %s is invalid: %s", state.source.description, exc
            )
            return
        state.snapshot = snapshot
        logger.info(
            "restored cached configuration of %s (revision %s)",
            state.source.description,
            snapshot.revision,
        )

    def start(self, state: SourceState) -> None:
        """Start the fetch loop of `state` as a task."""
        state.task = asyncio.create_task(self._loop(state), name=f"source-{state.source.source_id}")

    async def stop(self, state: SourceState) -> None:
        """Cancel the fetch loop and close the source."""
        if state.task is not None:
            state.task.cancel()
            await asyncio.gather(state.task, return_exceptions=True)
            state.task = None
        await state.source.close()

    async def _loop(self, state: SourceState) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        while True:
            try:
                snapshot = await state.source.next()
            except ConfigSourceError as exc:
                if not state.fetch_failing:
                    state.fetch_failing = True
                    state.error_before_fetch_failure = state.error
                self._record_error(state, f"{exc} ({_kept(state)})")
                state.first_result.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            except Exception as exc:
                logger.exception("configuration source %s failed", state.source.description)
                self._record_error(state, f"internal error: {exc!r}")
                state.first_result.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = INITIAL_BACKOFF_SECONDS
            if state.fetch_failing and snapshot is None:
                self._recover(state)
            state.fetch_failing = False
            if snapshot is not None:
                self._accept(state, snapshot)
            state.first_result.set()

    def _recover(self, state: SourceState) -> None:
        """Clear the fetch error once a fetch returns "unchanged" (a long poll timed out)."""
        logger.info("configuration source %s recovered", state.source.description)
        state.error = state.error_before_fetch_failure
        self.on_change()

    def _accept(self, state: SourceState, snapshot: Snapshot) -> None:
        if snapshot == state.snapshot and state.error is None:
            logger.debug("configuration of %s is unchanged", state.source.description)
            return
        try:
            networks = self.validate(snapshot)
        except ConfigSourceError as exc:
            self._record_error(state, f"{exc} ({_kept(state)})")
            return
        if state.error is not None:
            logger.info("configuration source %s recovered", state.source.description)
        state.error = None
        state.snapshot = snapshot
        state.networks = networks
        try:
            self.cache.store(snapshot)
        except OSError as exc:
            logger.error(
                "caching the configuration of %s failed: %s", state.source.description, exc
            )
        logger.info(
            "received configuration from %s (revision %s, %d network(s))",
            state.source.description,
            snapshot.revision,
            len(networks),
        )
        self.on_change()

    def _record_error(self, state: SourceState, message: str) -> None:
        # A repeated identical error drops to DEBUG, so a dead source does not flood the log.
        level = logging.DEBUG if message == state.error else logging.WARNING
        logger.log(level, "configuration source %s failed: %s", state.source.description, message)
        changed = state.error != message
        state.error = message
        if changed:
            self.on_change()


def _kept(state: SourceState) -> str:
    """Say what the agent applies while a source fails: its last valid configuration, or none."""
    if state.snapshot is None:
        return "no valid configuration from this source yet"
    return "keeping the last valid configuration"
