"""The consumer against a real Tansu broker, on SQLite and PostgreSQL: every result stored once,
bad records kept aside, traces continued, and a restart mid-stream that loses and repeats nothing."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from results_support import ANOMALOUS, BACKENDS, OK, TOKEN, database_url, make_result, service_config

from services.config import TelemetryConfig
from services.kafka_io import make_producer
from services.results.client import ResultsClient
from services.results.service import ResultsService
from services.telemetry import inject_headers, read_spans, setup_telemetry


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    return database_url(request.param, request, tmp_path, module_scoped=False)


def _config(db_url, kafka_config, **overrides):
    group = f"hdm-results-{uuid.uuid4().hex[:8]}"
    return service_config(db_url, consume=True, kafka=kafka_config, consumer_group=group, consumer_poll_ms=100, **overrides)


def _start(cfg) -> ResultsService:
    service = ResultsService(cfg)
    service.start()
    assert service.consumer.wait_assigned(30), "the consumer never got its partitions"
    return service


def _wait_until(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _metric_sums(reader: InMemoryMetricReader) -> dict[str, float]:
    sums: dict[str, float] = {}
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if hasattr(metric.data, "is_monotonic"):  # counters
                    sums[metric.name] = sum(point.value for point in metric.data.data_points)
    return sums


def test_every_result_is_stored_once_bad_records_kept_and_traces_continued(db_url, kafka_config, tmp_path):
    spans_path = tmp_path / "spans.jsonl"
    metrics = InMemoryMetricReader()
    telemetry = setup_telemetry(TelemetryConfig(traces="file", path=str(spans_path)), "results", extra_readers=[metrics])
    service = ResultsService(_config(db_url, kafka_config), telemetry=telemetry)
    service.start()
    assert service.consumer.wait_assigned(30)
    producer = make_producer(kafka_config)
    tracer = TracerProvider().get_tracer("scoring")
    topic = kafka_config.topics.results
    results = [make_result(f"f-{i}", line_id=f"line-{i % 3}", verdict=ANOMALOUS if i % 4 == 0 else OK) for i in range(60)]
    publish_spans = {}
    try:
        for r in results:
            with tracer.start_as_current_span("scoring.publish") as span:
                publish_spans[r.frame_id] = span.get_span_context()
                producer.send(topic, key=r.frame_id.encode(), value=r.SerializeToString(), headers=inject_headers())
        for r in results[:15]:  # re-delivered by a scorer that restarted before its offset commit
            producer.send(topic, key=r.frame_id.encode(), value=r.SerializeToString())
        producer.send(topic, key=b"junk", value=b"\xff\xfenot protobuf")
        producer.send(topic, key=b"anon", value=make_result("").SerializeToString())
        producer.flush()
        assert _wait_until(lambda: service.store.count() == 60 and len(service.store.rejected()) == 2)
        time.sleep(0.5)  # nothing more may be stored
        assert service.store.count() == 60
        reasons = sorted(r.reason for r in service.store.rejected())
        assert reasons[0] == "frame_id is empty" and reasons[1].startswith("not an InspectionResult")
        with ResultsClient(f"127.0.0.1:{service.port}", token=TOKEN) as client:
            for r in results[::7]:
                kept = r.heatmap_png if r.verdict == ANOMALOUS else b""
                assert client.get_result(r.frame_id, include_images=True).heatmap_png == kept
        counted = _metric_sums(metrics)
        assert (counted["hdm.results.stored"], counted["hdm.results.duplicates"], counted["hdm.results.rejected"]) == (60, 15, 2)
    finally:
        producer.close()
        service.stop()
        telemetry.shutdown()
    # Each frame's store span continues the trace its result arrived with, under the publish span.
    store_spans = [s for s in read_spans(str(spans_path)) if s["name"] == "results.store"]
    for frame_id, ctx in publish_spans.items():
        parents = {(s["context"]["trace_id"], s["parent_id"]) for s in store_spans if s["attributes"]["hdm.frame_id"] == frame_id}
        assert (f"0x{ctx.trace_id:032x}", f"0x{ctx.span_id:016x}") in parents


def test_a_restart_mid_stream_loses_nothing_and_stores_nothing_twice(db_url, kafka_config):
    cfg = _config(db_url, kafka_config)
    total = 240
    results = [make_result(f"r-{i:04d}", line_id=f"line-{i % 2}") for i in range(total)]
    first = _start(cfg)
    # A crash between the database commit and the offset commit: the first instance never
    # commits offsets, so the second re-reads everything the first stored.
    first.consumer._commit = lambda consumer, records: None
    producer = make_producer(kafka_config)
    sent = [0]

    def produce() -> None:  # keeps producing across the restart
        for start in range(0, total, 20):
            for r in results[start : start + 20]:
                producer.send(kafka_config.topics.results, key=r.frame_id.encode(), value=r.SerializeToString())
            producer.flush()
            sent[0] = start + 20
            time.sleep(0.1)

    writer = threading.Thread(target=produce)
    streamed: list[str] = []
    client = ResultsClient(f"127.0.0.1:{first.port}", token=TOKEN)
    stream = client.stream(timeout_s=60)
    stream.start_cursor()
    writer.start()
    stopper = threading.Thread(target=first.stop)
    second = None
    try:
        with pytest.raises(grpc.RpcError) as ended:
            for item in stream:
                streamed.append(item.result.frame_id)
                if len(streamed) == 60:
                    sent_at_stop = sent[0]
                    stopper.start()  # stop while results keep arriving
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert sent_at_stop < total, "the restart should happen mid-stream"
        stopper.join()
        stored_by_first = first.store.count()
        client.close()
        metrics = InMemoryMetricReader()
        second = ResultsService(cfg, telemetry=setup_telemetry(cfg.telemetry, "results", extra_readers=[metrics]))
        second.start()
        assert second.consumer.wait_assigned(30)
        client = ResultsClient(f"127.0.0.1:{second.port}", token=TOKEN)
        resumed = client.stream(cursor=stream.cursor, timeout_s=60)
        try:
            for item in resumed:
                streamed.append(item.result.frame_id)
                if len(streamed) == total:
                    break
        finally:
            resumed.cancel()
        writer.join()
        # Everything the first stored comes again (its offsets were never committed) and collapses.
        assert _wait_until(lambda: _metric_sums(metrics).get("hdm.results.duplicates", 0) >= stored_by_first)
        assert second.store.count() == total
        assert _metric_sums(metrics)["hdm.results.stored"] == total - stored_by_first
    finally:
        writer.join()
        producer.close()
        client.close()
        if second is not None:
            second.stop()
            second.telemetry.shutdown()
    assert sorted(streamed) == [r.frame_id for r in results]  # each exactly once across the reconnect
