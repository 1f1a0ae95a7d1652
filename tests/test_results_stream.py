"""StreamResults over a real gRPC socket on SQLite and PostgreSQL: live delivery, filters,
resuming from a cursor after a disconnect without gaps or repeats, duplicates, limits."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from results_support import ANOMALOUS, BACKENDS, OK, TOKEN, database_url, make_result, service_config

from services.results.client import ResultsClient, result_filter
from services.results.service import ResultsService
from services.results.store import IncomingResult, Store


@pytest.fixture(scope="module", params=BACKENDS)
def live(request, tmp_path_factory):
    url = database_url(request.param, request, tmp_path_factory.mktemp("results-stream"))
    with ResultsService(service_config(url)) as service:
        other_replica = Store(url)  # writes this service is never told about
        with ResultsClient(f"127.0.0.1:{service.port}", token=TOKEN) as client:
            yield service, client, other_replica
        other_replica.dispose()


def _line() -> str:
    return f"line-{uuid.uuid4().hex[:8]}"  # each test streams its own line


def _insert(service: ResultsService, results, other_replica: Store | None = None) -> None:
    if other_replica is not None:  # only the stream's poll interval finds these rows
        other_replica.insert([IncomingResult(r) for r in results])
        return
    service.store.insert([IncomingResult(r) for r in results])
    service.feed.refresh()  # what the local consumer does after its commit


class Collector:
    """Reads a stream in a thread, as an MES client would."""

    def __init__(self, stream):
        self.stream = stream
        self.items = []
        self.error: grpc.RpcError | None = None
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.stream.start_cursor()  # the server has accepted the stream
            self.started.set()
            for item in self.stream:
                self.items.append(item)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.started.set()

    @property
    def frame_ids(self) -> list[str]:
        return [item.result.frame_id for item in self.items]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while len(self.items) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.frame_ids

    def stop(self) -> None:
        self.stream.cancel()
        self._thread.join(5)


def _open(client: ResultsClient, **kwargs) -> Collector:
    collector = Collector(client.stream(**kwargs))
    assert collector.started.wait(5)
    return collector


def test_stream_delivers_new_matching_results_in_order_from_this_and_other_replicas(live):
    service, client, other_replica = live
    line = _line()
    collector = _open(client, filter=result_filter(line_id=line, verdict="anomalous"))
    batches = [
        [make_result(f"{line}-{b}-{i}", line_id=line if i % 3 else "other", verdict=ANOMALOUS if i % 2 else OK) for i in range(12)]
        for b in range(4)
    ]
    for b, batch in enumerate(batches):
        _insert(service, batch, other_replica if b % 2 else None)
    expected = [r.frame_id for batch in batches for r in batch if r.line_id == line and r.verdict == ANOMALOUS]
    got = collector.wait_for(len(expected))
    time.sleep(0.5)  # nothing more may arrive
    collector.stop()
    assert collector.frame_ids == expected == got
    # The live filter (Python) and the query filter (SQL) agree.
    queried = {r.frame_id for r in client.iter_query(result_filter(line_id=line, verdict="anomalous"))}
    assert queried == set(expected)


def test_stream_resumes_after_a_disconnect_without_gaps_or_repeats(live):
    service, client, _ = live
    line = _line()
    first = _open(client, filter=result_filter(line_id=line))
    _insert(service, [make_result(f"{line}-a{i}", line_id=line) for i in range(10)])
    first.wait_for(4)
    first.stop()  # the client goes away part-way
    received = first.frame_ids
    assert 4 <= len(received) <= 10
    _insert(service, [make_result(f"{line}-b{i}", line_id=line) for i in range(10)])  # while disconnected
    second = _open(client, filter=result_filter(line_id=line), cursor=first.stream.cursor)
    _insert(service, [make_result(f"{line}-c{i}", line_id=line) for i in range(5)])
    rest = second.wait_for(25 - len(received))
    second.stop()
    expected = [f"{line}-{p}{i}" for p, n in (("a", 10), ("b", 10), ("c", 5)) for i in range(n)]
    assert received + rest == expected


def test_stream_without_cursor_starts_now_and_its_start_cursor_resumes(live):
    service, client, _ = live
    line = _line()
    _insert(service, [make_result(f"{line}-old{i}", line_id=line) for i in range(5)])
    stream = client.stream(filter=result_filter(line_id=line))
    start = stream.start_cursor()
    stream.cancel()  # gone before any result arrived
    _insert(service, [make_result(f"{line}-new{i}", line_id=line) for i in range(5)])
    resumed = _open(client, filter=result_filter(line_id=line), cursor=start)
    got = resumed.wait_for(5)
    time.sleep(0.3)
    resumed.stop()
    assert got == resumed.frame_ids == [f"{line}-new{i}" for i in range(5)]


def test_redelivered_results_are_not_streamed_twice(live):
    service, client, _ = live
    line = _line()
    collector = _open(client, filter=result_filter(line_id=line))
    batch = [make_result(f"{line}-{i}", line_id=line) for i in range(6)]
    _insert(service, batch)
    _insert(service, batch[2:] + [make_result(f"{line}-6", line_id=line)])  # a re-delivery plus one new
    collector.wait_for(7)
    time.sleep(0.5)
    collector.stop()
    assert collector.frame_ids == [f"{line}-{i}" for i in range(7)]


def test_streams_beyond_the_limit_are_resource_exhausted(live):
    service, client, _ = live
    streams = [_open(client) for _ in range(service.cfg.max_streams)]
    assert all(s.stream.start_cursor() for s in streams)
    try:
        with pytest.raises(grpc.RpcError) as info:
            next(iter(client.stream()))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.query(page_size=1) is not None  # unary calls still have their threads
    finally:
        for s in streams:
            s.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # slots free up once the server sees the cancellations
        extra = client.stream()
        accepted = bool(extra.start_cursor())  # no start cursor: the call was refused
        extra.cancel()
        if accepted:
            break
        time.sleep(0.1)
    else:
        pytest.fail("stream slots were not released after the clients cancelled")
