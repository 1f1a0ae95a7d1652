"""Which Kafka offsets may be committed when frames finish out of order.

Frames of one partition are scored concurrently and their results are acknowledged
in any order. Committing offset N tells Kafka that every record below N is done,
so the tracker only advances a partition's commit position across a contiguous
run of acknowledged records: a crash then replays the unfinished ones (at least
once), never skips them. Pure bookkeeping, no I/O; one thread owns an instance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Hashable, Iterable

Partition = Hashable  # kafka.TopicPartition in the ingress; anything hashable in tests


@dataclass
class _PartitionState:
    pending: deque[int] = field(default_factory=deque)  # consumed and not yet committable, in offset order
    running: set[int] = field(default_factory=set)      # consumed, not acknowledged
    done: set[int] = field(default_factory=set)         # acknowledged, behind a running one
    position: int | None = None                         # next offset to commit
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[Partition, _PartitionState] = {}

    def start(self, partition: Partition, offset: int) -> None:
        """A record was consumed and its processing begins."""
        state = self._partitions.setdefault(partition, _PartitionState())
        last = state.pending[-1] if state.pending else (state.position - 1 if state.position is not None else None)
        if last is not None and offset <= last:
            raise ValueError(f"offset {offset} of {partition} consumed after {last}: forget() the partition before re-reading it")
        state.pending.append(offset)
        state.running.add(offset)

    def done(self, partition: Partition, offset: int) -> bool:
        """A record's outcome (result or dead letter) is acknowledged; False if it is not tracked."""
        state = self._partitions.get(partition)
        if state is None or offset not in state.running:
            return False
        state.running.remove(offset)
        state.done.add(offset)
        while state.pending and state.pending[0] in state.done:
            finished = state.pending.popleft()
            state.done.discard(finished)
            state.position = finished + 1
        return True

    def committable(self) -> dict[Partition, int]:
        """Positions that moved since they were last committed (Kafka's "next offset to read")."""
        return {
            partition: state.position
            for partition, state in self._partitions.items()
            if state.position is not None and state.position != state.committed
        }

    def mark_committed(self, positions: dict[Partition, int]) -> None:
        for partition, position in positions.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = position

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop partitions this consumer no longer owns (revoked); late acknowledgements are ignored."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def in_flight(self, partition: Partition | None = None) -> int:
        """Records consumed and not yet acknowledged (in one partition, or in all)."""
        states = self._partitions.values() if partition is None else [self._partitions.get(partition, _PartitionState())]
        return sum(len(s.running) for s in states)

    def partitions(self) -> list[Partition]:
        return list(self._partitions)
