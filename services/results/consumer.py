"""Kafka `inspection.results` into the store: at-least-once delivery made effectively-once.

A polled batch is written in one database transaction, and only then are its
offsets committed. A crash between the two re-delivers the batch after the
restart, and the insert-or-ignore by frame_id collapses the repeats, so nothing
is lost and nothing is stored twice. This is the service's one background
thread besides the gRPC server's event loop and its database threads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from google.protobuf.message import DecodeError
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import SQLAlchemyError

from protos.hdm.v1 import results_pb2
from services.kafka_io import make_consumer
from services.results.config import ResultsConfig
from services.results.feed import LiveFeed
from services.results.store import IncomingResult, Rejected, Store, storable_problem
from services.telemetry import Telemetry, extract_context, inject_headers

log = logging.getLogger("hdm.results.consumer")


@dataclass
class _Decoded:
    items: list[IncomingResult]
    rejected: list[Rejected]
    spans: list[trace.Span]


class ResultsConsumer:
    def __init__(
        self, cfg: ResultsConfig, store: Store, feed: LiveFeed, telemetry: Telemetry, on_failure: Callable[[], None] = lambda: None
    ):
        self._cfg = cfg
        self._on_failure = on_failure
        self._store = store
        self._feed = feed
        self._tracer = telemetry.tracer("hdm.results.consumer")
        meter = telemetry.meter("hdm.results.consumer")
        self._stored = meter.create_counter("hdm.results.stored", description="results stored for the first time")
        self._duplicates = meter.create_counter("hdm.results.duplicates", description="re-delivered results that changed nothing")
        self._rejected = meter.create_counter("hdm.results.rejected", description="records that are not storable results")
        self._batch_size = meter.create_histogram("hdm.results.ingest_batch_size", description="records per database transaction")
        self._lag = meter.create_histogram("hdm.results.ingest_lag_ms", unit="ms", description="capture to stored")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._assigned = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hdm-results-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand (stored and committed, or neither), then leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("consumer thread did not stop within %.0fs", timeout_s)

    def wait_assigned(self, timeout_s: float) -> bool:
        """True once the group gave this consumer its partitions (tests and the demo wait for it)."""
        return self._assigned.wait(timeout_s)

    def _run(self) -> None:
        consumer = self._connect()
        if consumer is None:
            return
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=self._cfg.consumer_poll_ms, max_records=self._cfg.ingest_batch_max)
                if consumer.assignment():
                    self._assigned.set()
                records = [rec for recs in polled.values() for rec in recs]
                if records and self._store_batch(records):
                    self._commit(consumer, records)
                    self._feed.refresh()
        except Exception:  # the thread must not die silently: the service would stop ingesting
            log.exception("results consumer failed; uncommitted records will be re-read on restart")
            self._on_failure()
        finally:
            consumer.close(autocommit=False)

    def _connect(self) -> KafkaConsumer | None:
        topic = self._cfg.kafka.topics.results
        while not self._stop.is_set():
            try:
                return make_consumer(self._cfg.kafka, self._cfg.consumer_group, [topic])
            except KafkaError as exc:
                log.warning("cannot reach Kafka at %s (%s); retrying", self._cfg.kafka.bootstrap_servers, exc)
                self._stop.wait(2.0)
        return None

    def _store_batch(self, records: list[ConsumerRecord]) -> bool:
        """Decode and store; retries while the database is unreachable. False if stopped first."""
        decoded = self._decode(records)
        delay = 0.5
        try:
            while True:
                try:
                    outcome = self._store.insert(decoded.items, decoded.rejected)
                    break
                except SQLAlchemyError as exc:  # database down or failing over: keep the records, retry
                    if self._stop.is_set():
                        return False
                    log.warning("storing %d results failed (%s); retrying in %.1fs", len(records), exc, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10.0)
            fresh = set(outcome.inserted)
            first_delivery = []  # per item; a frame repeated within the batch is new only once
            for item in decoded.items:
                first_delivery.append(item.result.frame_id in fresh)
                fresh.discard(item.result.frame_id)
            for span, new in zip(decoded.spans, first_delivery, strict=True):
                span.set_attribute("hdm.duplicate", not new)
            self._record_metrics(decoded, first_delivery, outcome.duplicates)
            return True
        finally:
            for span in decoded.spans:
                span.end()

    def _decode(self, records: list[ConsumerRecord]) -> _Decoded:
        out = _Decoded([], [], [])
        for rec in records:
            try:
                result = results_pb2.InspectionResult.FromString(rec.value or b"")
                problem = storable_problem(result)
            except DecodeError as exc:
                problem = f"not an InspectionResult ({exc})"
            if problem is not None:
                log.warning("rejected %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, problem)
                out.rejected.append(Rejected(rec.topic, rec.partition, rec.offset, problem, rec.value))
                continue
            span = self._tracer.start_span(
                "results.store",
                context=extract_context(rec.headers),
                kind=SpanKind.CONSUMER,
                attributes={"hdm.frame_id": result.frame_id, "hdm.line_id": result.line_id, "messaging.kafka.offset": rec.offset},
            )
            # The stored context is this span's, so the live feed's publication continues the same trace.
            carrier = {k: v.decode() for k, v in inject_headers(trace.set_span_in_context(span))}
            out.items.append(IncomingResult(result, carrier or None))
            out.spans.append(span)
        return out

    def _record_metrics(self, decoded: _Decoded, first_delivery: list[bool], duplicates: int) -> None:
        now_us = time.time() * 1_000_000
        self._batch_size.record(len(decoded.items) + len(decoded.rejected))
        for item, new in zip(decoded.items, first_delivery, strict=True):
            r = item.result
            if new:
                self._stored.add(1, {"line_id": r.line_id})
                self._lag.record((now_us - r.captured_at.ToMicroseconds()) / 1000.0, {"line_id": r.line_id})
        if duplicates:
            self._duplicates.add(duplicates)
        if decoded.rejected:
            self._rejected.add(len(decoded.rejected))

    def _commit(self, consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = OffsetAndMetadata(max(rec.offset + 1, offsets[tp].offset if tp in offsets else 0), "", -1)
        try:
            consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group rebalanced: another member re-reads these records and the
            # idempotent insert makes the repeat harmless.
            log.warning("offset commit failed (%s); the records will be re-delivered and collapse", exc)
