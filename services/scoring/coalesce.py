"""Frames gathered into Scorer calls: fewer, fuller calls for the same frames.

Serve's cost is per call (routing and an RPC in the ingress, request handling in the
Scorer replica), and on a busy CPU that cost competes with the model itself. At a
moderate frame rate each Kafka poll brings one frame or two, so a short linger
(like a Kafka producer's linger.ms) makes calls of several frames, where the Scorer's
@serve.batch would have waited for them anyway.

With `eager_calls` = n the linger applies only while n calls of the same model are
already out, a generalised Nagle's algorithm: below that, a poll's frames go at once
(holding them would only add latency: the Scorer has nothing to batch them with, or is
busy with one batch and forms the next from what waits). At n = 1 the ingress and the
Scorer would take turns (frames held while the Scorer runs, the Scorer idle while they
travel), so n = 2 keeps one call running and one waiting. Frames beyond that gather
until a call returns, the call is full or the linger is over: calls grow with the load
and the stream pays no linger while it is light.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class CallCoalescer(Generic[T]):
    """Items grouped by key (a model id) into calls.

    A group goes out when full, when its first item has waited linger_s, or when fewer
    than eager_calls calls of its key are in flight. Every group handed out counts as in flight until
    `finished(key)`, which may come from another thread.
    """

    def __init__(self, max_size: int, linger_s: float, eager_calls: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1 or linger_s < 0 or eager_calls < 0:
            raise ValueError("max_size must be >= 1, linger_s >= 0 and eager_calls >= 0")
        self._max_size = max_size
        self._linger_s = linger_s
        self._eager_calls = eager_calls
        self._clock = clock
        self._groups: dict[str, list[T]] = {}
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()  # calls finish on the event loop, groups form on the poll thread
        self._out: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(items) for items in self._groups.values())

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._out.get(key, 0)

    def finished(self, key: str) -> None:
        """A call of `key` handed out earlier has returned."""
        with self._lock:
            left = self._out.get(key, 0) - 1
            if left > 0:
                self._out[key] = left
            else:
                self._out.pop(key, None)

    def add(self, key: str, item: T) -> list[T] | None:
        """Hold `item`; the group, when this item filled it."""
        items = self._groups.setdefault(key, [])
        if not items:
            self._since[key] = self._clock()
        items.append(item)
        if len(items) < self._max_size:
            return None
        return self._take(key)

    def due(self, force: bool = False) -> list[list[T]]:
        """The groups to send now: lingered long enough, below eager_calls in flight, or all when forced."""
        now = self._clock()
        ready = [key for key, since in self._since.items()
                 if force or now - since >= self._linger_s or self.in_flight(key) < self._eager_calls]
        return [self._take(key) for key in ready]

    def wait_s(self) -> float | None:
        """Seconds until the oldest group is due by its linger; None when nothing is held."""
        if not self._since:
            return None
        return max(0.0, self._linger_s - (self._clock() - min(self._since.values())))

    def _take(self, key: str) -> list[T]:
        del self._since[key]
        with self._lock:
            self._out[key] = self._out.get(key, 0) + 1
        return self._groups.pop(key)
