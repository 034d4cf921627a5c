"""The source runner: a fetch error is cleared once a fetch succeeds again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from netsody_agent import netsync
from netsody_agent.errors import ConfigSourceError
from netsody_agent.netsync import SourceRunner, SourceState
from netsody_agent.sources import Snapshot, SnapshotCache


class ScriptedSource:
    """A source whose `next` results are given in advance, then unchanged forever."""

    source_id = "scripted"
    description = "scripted source"

    def __init__(self, steps: list[object]) -> None:
        self.steps = list(steps)

    async def next(self) -> Snapshot | None:
        if not self.steps:
            await asyncio.sleep(3600)
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step  # type: ignore[return-value]

    async def close(self) -> None:
        return None


async def _wait(predicate) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - the runner sets no event for these states
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout=5)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch) -> None:
    monkeypatch.setattr(netsync, "INITIAL_BACKOFF_SECONDS", 0.0)


async def test_unchanged_result_clears_fetch_error(tmp_path: Path) -> None:
    snapshot = Snapshot("scripted", 1, ())
    source = ScriptedSource([snapshot, ConfigSourceError("controller unreachable"), None])
    runner = SourceRunner(SnapshotCache(tmp_path), lambda snap: [], lambda: None)
    state = SourceState(source)
    runner.start(state)
    try:
        await _wait(lambda: not source.steps)
        await _wait(lambda: state.error is None)
    finally:
        await runner.stop(state)
    assert state.snapshot == snapshot


async def test_unchanged_result_keeps_document_error(tmp_path: Path) -> None:
    snapshot = Snapshot("scripted", 1, ())

    def reject(snap: Snapshot) -> list:
        raise ConfigSourceError("document invalid")

    source = ScriptedSource([snapshot, ConfigSourceError("controller unreachable"), None])
    runner = SourceRunner(SnapshotCache(tmp_path), reject, lambda: None)
    state = SourceState(source)
    runner.start(state)
    try:
        await _wait(lambda: not source.steps)
        await _wait(lambda: state.error is None or "document invalid" in state.error)
    finally:
        await runner.stop(state)
    assert state.error is not None
    assert "document invalid" in state.error
