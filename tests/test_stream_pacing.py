"""BatchGate: batches form when the replica becomes free, not on a timer."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from ray import serve

from services.scoring.pacing import BatchGate


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _admit(gate: BatchGate, frames: int) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(gate.admit(frames))


async def _busy(max_batch_size: int) -> BatchGate:
    """A gate whose replica is running a batch of one frame."""
    gate = BatchGate(max_batch_size)
    await gate.admit(1)
    gate.started(1)
    return gate


def test_an_idle_replica_takes_a_call_at_once_and_holds_the_next_until_the_batch_ends():
    async def scenario():
        gate = BatchGate(max_batch_size=8)
        first = _admit(gate, 2)
        await _settle()
        assert first.done()
        gate.started(2)
        later = [_admit(gate, 2) for _ in range(3)]
        await _settle()
        assert not any(t.done() for t in later) and gate.held_frames == 6
        gate.finished()
        await _settle()
        assert all(t.done() for t in later) and gate.held_frames == 0

    asyncio.run(scenario())


def test_calls_held_beyond_one_batch_wait_for_the_next_one():
    async def scenario():
        gate = await _busy(max_batch_size=4)
        calls = [_admit(gate, 3) for _ in range(3)]  # 9 frames held, 3 per call
        await _settle()
        # A full batch's worth is held: the first call goes now, to be next in line, and
        # no other until that batch starts (3 + 3 frames would not fit in 4).
        assert [t.done() for t in calls] == [True, False, False]
        gate.finished()
        await _settle()
        assert [t.done() for t in calls] == [True, False, False]  # that call's batch has not started
        gate.started(3)
        await _settle()
        assert [t.done() for t in calls] == [True, True, False]   # 6 frames held: a full batch again
        gate.finished()
        gate.started(3)
        await _settle()
        assert [t.done() for t in calls] == [True, True, False]   # 3 held: they wait for the replica
        gate.finished()
        await _settle()
        assert all(t.done() for t in calls)

    asyncio.run(scenario())


def test_a_cancelled_held_call_gives_up_its_place():
    async def scenario():
        gate = await _busy(max_batch_size=4)
        gone, kept = _admit(gate, 2), _admit(gate, 1)
        await _settle()
        gone.cancel()
        await _settle()
        assert gate.held_frames == 1
        gate.finished()
        await _settle()
        assert kept.done()

    asyncio.run(scenario())


def test_frames_let_in_that_never_reach_a_batch_stop_blocking_the_gate():
    async def scenario():
        gate = BatchGate(max_batch_size=4, stale_after_s=0.05)
        await gate.admit(2)                   # its call dies before Serve batches it
        waiting = _admit(gate, 3)             # 2 + 3 frames: not the same batch
        await _settle()
        assert not waiting.done()
        await asyncio.sleep(0.1)
        await _settle()
        assert waiting.done()

    asyncio.run(scenario())


def _scorer(gate: BatchGate | None, batch_seconds: float):
    """Serve's own @serve.batch behind the gate (or not), with a model that takes batch_seconds per batch."""

    class Scorer:
        def __init__(self) -> None:
            self.batch_sizes: list[int] = []

        async def score(self, frames: list[int]) -> list[int]:
            if gate is not None:
                await gate.admit(len(frames))
            return await self.score_batch(frames)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0, batch_size_fn=lambda calls: sum(map(len, calls)))
        async def score_batch(self, calls: list[list[int]]) -> list[list[int]]:
            frames = sum(map(len, calls))
            if gate is not None:
                gate.started(frames)
            self.batch_sizes.append(frames)
            await asyncio.sleep(batch_seconds)
            if gate is not None:
                gate.finished()
            return calls

    return Scorer()


def _stream(gate: BatchGate | None, calls: int, interval_s: float, batch_seconds: float) -> tuple[float, list[int]]:
    """Calls of one frame every interval_s; the seconds until the last result, and the batch sizes."""

    async def scenario():
        scorer = _scorer(gate, batch_seconds)
        started = time.monotonic()
        tasks = []
        for i in range(calls):
            tasks.append(asyncio.create_task(scorer.score([i])))
            await asyncio.sleep(interval_s)
        assert await asyncio.gather(*tasks) == [[i] for i in range(calls)]
        return time.monotonic() - started, scorer.batch_sizes

    return asyncio.run(scenario())


def test_near_capacity_the_gate_grows_batches_where_serves_timer_falls_behind(monkeypatch):
    # @serve.batch looks up its replica's max_ongoing_requests, only to warn.
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=64))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    # A frame every 20 ms, a batch of any size 35 ms: one frame per batch cannot keep up.
    timer_s, timer_sizes = _stream(None, calls=40, interval_s=0.02, batch_seconds=0.035)
    gated_s, gated_sizes = _stream(BatchGate(max_batch_size=8), calls=40, interval_s=0.02, batch_seconds=0.035)
    assert max(timer_sizes) == 1 and timer_s > 1.2     # 40 batches of one, back to back
    assert gated_s < 0.75 * timer_s
    assert len(gated_sizes) <= 25 and max(gated_sizes) <= 8


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__]))
