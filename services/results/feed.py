"""The live feed behind StreamResults: new rows read once, shared by every subscriber.

Without it each of N subscribers would query the database after every batch;
with it one read per batch serves them all, and each stream only filters rows
in memory. The feed holds every stored row with floor < seq <= head: rows
become visible in seq order (see Store._write_transaction), so reading
"seq > head" never skips one. A stream positioned below the floor (resuming
from an old cursor) catches up from the database page by page until it reaches
the feed, then follows it.

The feed is refreshed by the local consumer right after it commits a batch, and
by streams whose poll interval passed without news (rows written by other
replicas). It starts no thread; listeners (the gRPC server's wake-up) are told
about news from whichever thread refreshed.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from opentelemetry.trace import SpanKind, Tracer

from protos.hdm.v1 import results_service_pb2
from services.results.store import Store, StoredResult
from services.results.tokens import encode_cursor
from services.telemetry import extract_context


@dataclass(frozen=True)
class FeedItem:
    row: StoredResult
    # Built once per result and sent as is by every stream (without images): never mutate.
    message: results_service_pb2.StreamedResult


def _items(rows: list[StoredResult]) -> list[FeedItem]:
    return [FeedItem(row, results_service_pb2.StreamedResult(result=row.result, cursor=encode_cursor(row.seq))) for row in rows]


class LiveFeed:
    def __init__(
        self,
        store: Store,
        page: int = 500,
        capacity: int = 5_000,
        poll_interval_s: float = 1.0,
        tracer: Tracer | None = None,
    ):
        self._store = store
        self._page = page
        self._capacity = capacity
        self.poll_interval_s = poll_interval_s
        self._tracer = tracer
        self._subscribers = 0
        self._lock = threading.Lock()          # guards the items, head and floor
        self._refresh_lock = threading.Lock()  # one database read at a time
        self._listeners: list[Callable[[], None]] = []
        self._items: list[FeedItem] = []
        self._seqs: list[int] = []  # self._items' seqs, for bisect
        self._head = self._floor = store.max_seq()
        self._last_refresh = time.monotonic()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called, from any thread, after new rows arrive and when the feed closes."""
        self._listeners.append(listener)

    def refresh(self, block: bool = True) -> int:
        """Read what was committed since the last read and tell the listeners; returns the row count.

        The consumer calls it with block=True after its commit, so its rows are
        read even if another refresh is under way. Streams whose poll interval
        ran out call it with block=False: one of them reads, the others skip.
        """
        if not self._refresh_lock.acquire(blocking=block):
            return 0
        try:
            if not block and time.monotonic() - self._last_refresh < self.poll_interval_s / 2:
                return 0
            total = 0
            while True:
                rows = self._store.after_seq(self._head, self._page)
                if rows:
                    self._append(rows)
                    self._publish_spans(rows)
                total += len(rows)
                if len(rows) < self._page:
                    break
            self._last_refresh = time.monotonic()
        finally:
            self._refresh_lock.release()
        if total:
            self._notify()
        return total

    def read(self, position: int) -> tuple[list[FeedItem], int] | None:
        """The next items after `position` and the new position, from memory;
        None when `position` is older than the feed holds (use catch_up)."""
        with self._lock:
            if position < self._floor:
                return None
            start = bisect.bisect_right(self._seqs, position)
            items = self._items[start : start + self._page]
        return items, (items[-1].row.seq if items else position)

    def catch_up(self, position: int) -> tuple[list[FeedItem], int]:
        """The next items after `position` from the database (blocking)."""
        rows = self._store.after_seq(position, self._page)
        return _items(rows), (rows[-1].seq if rows else position)

    @contextlib.contextmanager
    def subscription(self) -> Iterator[None]:
        """Counts a live stream for the duration (publication spans are only made for an audience)."""
        with self._lock:
            self._subscribers += 1
        try:
            yield
        finally:
            with self._lock:
                self._subscribers -= 1

    def close(self) -> None:
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _append(self, rows: list[StoredResult]) -> None:
        items = _items(rows)
        with self._lock:
            self._items.extend(items)
            self._seqs.extend(row.seq for row in rows)
            self._head = rows[-1].seq
            if len(self._items) > 2 * self._capacity:  # trim in chunks: amortized O(1) per row
                drop = len(self._items) - self._capacity
                self._floor = self._seqs[drop - 1]
                del self._items[:drop], self._seqs[:drop]

    def _publish_spans(self, rows: list[StoredResult]) -> None:
        """One span per result handed to live subscribers, continuing the frame's trace."""
        subscribers = self._subscribers
        if self._tracer is None or not subscribers:
            return
        for row in rows:
            headers = [(k, v.encode()) for k, v in (row.trace_context or {}).items()]
            attributes = {"hdm.frame_id": row.result.frame_id, "hdm.subscribers": subscribers}
            self._tracer.start_span("results.publish", context=extract_context(headers), kind=SpanKind.PRODUCER, attributes=attributes).end()
