"""Batches that form when the replica becomes free, as Triton's dynamic batcher does.

Serve's @serve.batch closes a batch batch_wait_timeout_s after its first request, whether
or not the replica is free, and queues the closed batch behind the running one. Near the
replica's capacity that is a trap: once it falls a little behind, small batches queue up
behind each other, each paying a batch's fixed cost, and the queue never merges into the
big batches that would clear it (measured on the 2-core CPU at half the in-process
capacity: batches of 6-7 frames under a standing 0.5 s queue, p99 17x one full batch). A
timer cannot know when the running batch will end; the replica can.

BatchGate holds the Scorer's calls while a batch is running or about to start and lets
them into Serve's queue together when it finishes, with Serve's own wait at 0: a batch is
what arrived during the previous one, up to max_batch_size. An idle replica takes a call
at once, and a full batch's worth of held calls goes at once, so it is next in line the
moment the replica frees up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

# A call let in joins Serve's queue in the same event-loop step, so its frames reach a
# batch almost at once; if they have not after this long (the call died on the way), the
# gate stops waiting for them rather than hold every later call forever.
STALE_AFTER_S = 2.0


class BatchGate:
    """Admission of one replica's calls into @serve.batch: one batch's worth at a time."""

    def __init__(self, max_batch_size: int, stale_after_s: float = STALE_AFTER_S) -> None:
        self.max_batch_size = max_batch_size
        self._stale_after_s = stale_after_s
        self._held: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._held_frames = 0
        self._admitted = 0          # frames let in that no batch has taken yet
        self._admitted_since = 0.0  # when the oldest of them was let in
        self._running = 0           # batches in progress (Serve may run one per model at once)

    @property
    def held_frames(self) -> int:
        return self._held_frames

    async def admit(self, frames: int) -> None:
        """Return when a call carrying `frames` frames may join the next batch."""
        self._expire_stale()
        if self._running == 0 and not self._held and self._admitted + frames <= self.max_batch_size:
            self._let_in(frames)  # idle: this call opens the next batch, or joins the one opening
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held.append((frames, future))
        self._held_frames += frames
        self._release()
        try:
            await future
        except asyncio.CancelledError:
            self._forget(frames, future)
            raise

    def started(self, frames: int) -> None:
        """A batch of `frames` admitted frames begins."""
        self._admitted = max(0, self._admitted - frames)
        self._admitted_since = time.monotonic()
        self._running += 1
        self._release()

    def finished(self) -> None:
        self._running = max(0, self._running - 1)
        self._release()

    def _release(self) -> None:
        """Let the next batch in: what is held when the replica is idle, or a full batch at any time."""
        if self._admitted or not self._held:
            return
        if self._running and self._held_frames < self.max_batch_size:
            return
        budget = self.max_batch_size
        while self._held and (self._held[0][0] <= budget or budget == self.max_batch_size):
            frames, future = self._held.popleft()
            self._held_frames -= frames
            budget -= frames
            if not future.done():
                future.set_result(None)
                self._let_in(frames)

    def _let_in(self, frames: int) -> None:
        if self._admitted == 0:
            self._admitted_since = time.monotonic()
            asyncio.get_running_loop().call_later(self._stale_after_s, self._expire_stale)
        self._admitted += frames

    def _expire_stale(self) -> None:
        if self._admitted and time.monotonic() - self._admitted_since >= self._stale_after_s:
            self._admitted = 0
            self._release()

    def _forget(self, frames: int, future: asyncio.Future[None]) -> None:
        """A call cancelled while held (or just after it was let in) takes its frames with it."""
        for i, (_, held) in enumerate(self._held):
            if held is future:
                del self._held[i]
                self._held_frames -= frames
                break
        else:
            self._admitted = max(0, self._admitted - frames)
        self._release()
