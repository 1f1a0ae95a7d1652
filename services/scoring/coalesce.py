"""Frames gathered into Scorer calls: fewer, fuller calls for the same frames.

Serve's cost is per call (routing and an RPC in the ingress, request handling in the
Scorer replica), and on a busy CPU that cost competes with the model itself. At a
moderate frame rate each Kafka poll brings one frame or two, so a short linger
(like a Kafka producer's linger.ms) makes calls of several frames, where the Scorer's
@serve.batch would have waited for them anyway.
"""

from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class CallCoalescer(Generic[T]):
    """Items grouped by key (a model id); a group goes out when full or when its first item has waited linger_s."""

    def __init__(self, max_size: int, linger_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1 or linger_s < 0:
            raise ValueError("max_size must be >= 1 and linger_s >= 0")
        self._max_size = max_size
        self._linger_s = linger_s
        self._clock = clock
        self._groups: dict[str, list[T]] = {}
        self._since: dict[str, float] = {}

    def __len__(self) -> int:
        return sum(len(items) for items in self._groups.values())

    def add(self, key: str, item: T) -> list[T] | None:
        """Hold `item`; the group, when this item filled it."""
        items = self._groups.setdefault(key, [])
        if not items:
            self._since[key] = self._clock()
        items.append(item)
        if len(items) < self._max_size:
            return None
        del self._groups[key], self._since[key]
        return items

    def due(self, force: bool = False) -> list[list[T]]:
        """The groups whose linger is over (all of them when forced)."""
        now = self._clock()
        ready = [key for key, since in self._since.items() if force or now - since >= self._linger_s]
        out = [self._groups.pop(key) for key in ready]
        for key in ready:
            del self._since[key]
        return out

    def wait_s(self) -> float | None:
        """Seconds until the oldest group is due; None when nothing is held."""
        if not self._since:
            return None
        return max(0.0, self._linger_s - (self._clock() - min(self._since.values())))
