"""When the next batch should close: as the running batch is expected to end.

Serve's @serve.batch closes a batch batch_wait_timeout_s after its first request,
whether or not the replica is free, and queues it behind the running one. So a fixed
wait is wrong at every load but one: too short, and small batches queue up behind the
running one (each costs its fixed overhead, and the scorer falls behind); too long, and
an idle replica sits waiting. A dynamic batcher that forms a batch when the model
becomes free (as Triton's does) avoids both. BatchPacer gives Serve that behaviour
through its own knob: each call sets the wait of a batch that may start forming to the
time the running batch still needs (0 when the replica is idle), never more than the
configured batch_wait_timeout_s, which stays the upper bound.
"""

from __future__ import annotations


class BatchPacer:
    """Tracks the running batch of one replica (Serve runs one at a time) and its expected end."""

    def __init__(self, max_wait_s: float, smoothing: float = 0.3) -> None:
        self.max_wait_s = max_wait_s
        self._smoothing = smoothing
        self._expected_s: float | None = None  # moving average of batch durations
        self._started: float | None = None     # the running batch's start, None when idle

    def wait_s(self, now: float) -> float:
        """How long a batch that starts forming now should wait for more requests."""
        if self._started is None:
            return 0.0
        remaining = self._started + (self._expected_s or self.max_wait_s) - now
        # Past its expected end, the running batch's finish is anyone's guess: the
        # configured wait gathers what arrives meanwhile into one batch, not many.
        return self.max_wait_s if remaining <= 0 else min(self.max_wait_s, remaining)

    def started(self, now: float) -> None:
        self._started = now

    def finished(self, now: float) -> None:
        if self._started is None:
            return
        took = now - self._started
        self._expected_s = took if self._expected_s is None else (1 - self._smoothing) * self._expected_s + self._smoothing * took
        self._started = None
