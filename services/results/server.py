"""The `hdm.v1.ResultsService` RPCs on grpc.aio: validation, status codes, paging, the live stream.

Status codes: a malformed request (bad filter, garbage page token or cursor,
negative page size) is INVALID_ARGUMENT; a page larger than the configured
maximum, or one live stream too many, is RESOURCE_EXHAUSTED; an unknown frame
or a heatmap the retention policy did not keep is NOT_FOUND; a database outage
is UNAVAILABLE (retryable), and so is the end of a stream at shutdown.
Authentication is the interceptor's (auth.py).

The handlers run on the server's event loop; every database call goes to the
loop's default executor (asyncio.to_thread), so the loop only moves messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import AsyncIterator

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.exc import DBAPIError

from protos.hdm.v1 import results_pb2, results_service_pb2, results_service_pb2_grpc
from services.results.config import ResultsConfig
from services.results.feed import FeedItem, LiveFeed
from services.results.store import ResultQuery, Store
from services.results.tokens import (
    CURSOR_METADATA,
    TokenError,
    decode_cursor,
    decode_page_token,
    encode_cursor,
    encode_page_token,
    filter_fingerprint,
)
from services.telemetry import Telemetry

MAX_ID_LENGTH = 256
MAX_STATS_WINDOW_S = 366 * 24 * 3600
DEFAULT_STATS_WINDOW_S = 3600


class InvalidRequest(ValueError):
    """A request that can never succeed as sent (INVALID_ARGUMENT)."""


class RpcFailure(Exception):
    """Ends the call with this status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def parse_filter(f: results_service_pb2.ResultFilter) -> ResultQuery:
    for name in ("line_id", "camera_id", "product"):
        _check_id(getattr(f, name), f"filter.{name}")
    after = _timestamp_us(f.captured_after, "filter.captured_after") if f.HasField("captured_after") else None
    before = _timestamp_us(f.captured_before, "filter.captured_before") if f.HasField("captured_before") else None
    if after is not None and before is not None and after >= before:
        raise InvalidRequest("filter.captured_after must be earlier than filter.captured_before")
    if f.verdict not in results_pb2.Verdict.values():
        raise InvalidRequest(f"filter.verdict {f.verdict} is not a Verdict")
    if not math.isfinite(f.min_score):
        raise InvalidRequest("filter.min_score must be a finite number")
    return ResultQuery(
        line_id=f.line_id or None,
        camera_id=f.camera_id or None,
        product=f.product or None,
        captured_after_us=after,
        captured_before_us=before,
        verdict=f.verdict or None,
        min_score=f.min_score or None,
    )


def _check_id(value: str, name: str) -> None:
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(f"{name} is longer than {MAX_ID_LENGTH} characters")


def _required_id(value: str, name: str) -> str:
    if not value:
        raise InvalidRequest(f"{name} is required")
    _check_id(value, name)
    return value


def _timestamp_us(ts: Timestamp, name: str) -> int:
    # The range of google.protobuf.Timestamp: years 0001 to 9999.
    if not (-62_135_596_800 <= ts.seconds <= 253_402_300_799 and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidRequest(f"{name} is not a valid timestamp")
    return ts.ToMicroseconds()


def _window_s(window: Duration) -> float:
    if window.seconds < 0 or window.nanos < 0:
        raise InvalidRequest("window must not be negative")
    seconds = window.ToMicroseconds() / 1e6
    if seconds > MAX_STATS_WINDOW_S:
        raise InvalidRequest(f"window is longer than {MAX_STATS_WINDOW_S // 86400} days")
    return seconds or DEFAULT_STATS_WINDOW_S


class Wakeup:
    """Wakes the streams waiting on the server's event loop; notify() may be called from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """Take it before looking at the feed, then wait on it: news in between still wakes."""
        return self._event

    def notify(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the loop has closed: the server is gone, nobody is waiting
            pass

    def _fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class ResultsServicer(results_service_pb2_grpc.ResultsServiceServicer):
    def __init__(self, cfg: ResultsConfig, store: Store, feed: LiveFeed, telemetry: Telemetry, wakeup: Wakeup):
        self._cfg = cfg
        self._store = store
        self._feed = feed
        self._wakeup = wakeup
        feed.add_listener(wakeup.notify)
        self._active_streams = 0  # only touched on the event loop
        meter = telemetry.meter("hdm.results.server")
        self._rpc_ms = meter.create_histogram("hdm.results.rpc_duration_ms", unit="ms", description="unary RPC latency")
        self._streams_gauge = meter.create_up_down_counter("hdm.results.streams_active", description="live StreamResults calls")

    # --- RPCs ------------------------------------------------------------

    async def GetResult(self, request, context):
        async with self._guard(context, "GetResult"):
            frame_id = _required_id(request.frame_id, "frame_id")
            stored = await asyncio.to_thread(self._store.get, frame_id, request.include_images)
            if stored is None:
                raise RpcFailure(grpc.StatusCode.NOT_FOUND, f"no result for frame {frame_id!r}")
            return stored.result

    async def QueryResults(self, request, context):
        async with self._guard(context, "QueryResults"):
            size = self._page_size(request.page_size)
            query = parse_filter(request.filter)
            fingerprint = filter_fingerprint(tuple(vars(query).values()))
            after = decode_page_token(request.page_token, fingerprint) if request.page_token else None
            rows = await asyncio.to_thread(self._store.query, query, after, size + 1, request.include_images)
            response = results_service_pb2.QueryResultsResponse(results=[row.result for row in rows[:size]])
            if len(rows) > size:  # one row more than asked tells there is a next page
                response.next_page_token = encode_page_token(rows[size - 1].page_key, fingerprint)
            return response

    async def StreamResults(self, request, context) -> AsyncIterator[results_service_pb2.StreamedResult]:
        async with self._guard(context, "StreamResults"):
            query = parse_filter(request.filter)
            # No cursor: from now on.
            position = decode_cursor(request.cursor) if request.cursor else await asyncio.to_thread(self._store.max_seq)
            if self._active_streams >= self._cfg.max_streams:
                raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many live streams (max {self._cfg.max_streams}); retry later")
            self._active_streams += 1
            self._streams_gauge.add(1)
            try:
                await context.send_initial_metadata(((CURSOR_METADATA, encode_cursor(position)),))
                with self._feed.subscription():
                    async for item in self._follow(position, query):
                        yield await self._with_images(item) if request.include_images and item.row.has_images else item.message
                raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "results service is shutting down; reconnect with the last cursor")
            finally:
                self._active_streams -= 1
                self._streams_gauge.add(-1)

    async def GetHeatmap(self, request, context):
        async with self._guard(context, "GetHeatmap"):
            frame_id = _required_id(request.frame_id, "frame_id")
            stored = await asyncio.to_thread(self._store.get, frame_id)
            if stored is None:
                raise RpcFailure(grpc.StatusCode.NOT_FOUND, f"no result for frame {frame_id!r}")
            images = await asyncio.to_thread(self._store.images, frame_id) if stored.has_images else None
            if images is None:
                message = f"no heatmap stored for frame {frame_id!r} (retention: {self._store.heatmap_retention})"
                raise RpcFailure(grpc.StatusCode.NOT_FOUND, message)
            return results_service_pb2.Heatmap(
                frame_id=frame_id, heatmap_png=images[0], overlay_png=images[1], pixel_threshold=stored.result.pixel_threshold
            )

    async def GetLineStats(self, request, context):
        async with self._guard(context, "GetLineStats"):
            line_id = _required_id(request.line_id, "line_id")
            window_s = _window_s(request.window)
            end_us = int(time.time() * 1_000_000)
            start_us = end_us - int(window_s * 1_000_000)
            row = await asyncio.to_thread(self._store.line_stats, line_id, start_us, end_us)
            stats = results_service_pb2.LineStats(
                line_id=line_id,
                frames=row.frames,
                anomalies=row.anomalies,
                anomaly_rate=row.anomalies / row.frames if row.frames else 0.0,
                latency=results_service_pb2.LatencyPercentiles(p50_ms=row.p50_ms, p95_ms=row.p95_ms, p99_ms=row.p99_ms),
                model_versions=row.model_versions,
            )
            stats.window_start.FromMicroseconds(start_us)
            stats.window_end.FromMicroseconds(end_us)
            return stats

    # --- helpers -----------------------------------------------------------

    async def _follow(self, position: int, query: ResultQuery) -> AsyncIterator[FeedItem]:
        """Items after `position` that match `query`, in seq order, until the feed closes."""
        everything = query == ResultQuery()  # the common unfiltered feed skips the per-item check
        while not self._feed.closed:
            wakeup = self._wakeup.current()
            got = self._feed.read(position)
            items, position = got if got is not None else await asyncio.to_thread(self._feed.catch_up, position)
            for item in items:
                if everything or query.matches(item.row.result):
                    yield item
            if items:
                continue
            try:
                await asyncio.wait_for(wakeup.wait(), self._feed.poll_interval_s)
            except TimeoutError:  # nothing from the local consumer: look for other replicas' rows
                await asyncio.to_thread(self._feed.refresh, False)

    @contextlib.asynccontextmanager
    async def _guard(self, context: grpc.aio.ServicerContext, method: str):
        """Map failures to status codes; time unary calls."""
        start = time.perf_counter()
        try:
            yield
        except RpcFailure as exc:
            await context.abort(exc.code, str(exc))
        except (InvalidRequest, TokenError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except DBAPIError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {type(exc.orig).__name__}")
        finally:
            if method != "StreamResults":
                self._rpc_ms.record((time.perf_counter() - start) * 1000, {"rpc.method": method})

    def _page_size(self, size: int) -> int:
        if size < 0:
            raise InvalidRequest("page_size must not be negative")
        if size > self._cfg.page_size_max:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, f"page_size {size} is above the maximum {self._cfg.page_size_max}")
        return size or self._cfg.page_size_default

    async def _with_images(self, item: FeedItem) -> results_service_pb2.StreamedResult:
        message = results_service_pb2.StreamedResult()
        message.CopyFrom(item.message)  # feed items are shared by every stream: never mutate them
        images = await asyncio.to_thread(self._store.images, item.row.result.frame_id)
        if images is not None:
            message.result.heatmap_png, message.result.overlay_png = images
        return message
