"""The FrameIngress deployment: frames in from Kafka, results out to Kafka, at least once.

One thread polls Kafka (the consumer is not thread-safe, and the group coordinator
needs it polled on time whatever scoring does); it decodes and validates each frame,
groups frames by model into calls (while an earlier call is out, a call waits up to
call_linger_ms to fill; see services/scoring/coalesce.py) and hands each call to the
replica's event loop with `run_coroutine_threadsafe`, where a coroutine scores its
frames through the Scorer's handle (Serve's cost is per call; the Scorer's @serve.batch
merges calls), publishes each InspectionResult and reports each frame finished. The
poll thread applies finished frames to an OffsetTracker and commits an offset only when
every earlier frame of its partition has its result (or dead letter) acknowledged by
the broker. Frames in flight are bounded: at the bound the partitions are paused until
enough of them are done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Coroutine

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from protos.hdm.v1 import frames_pb2
from services.kafka_io import GROUND_TRUTH_HEADER, header, make_consumer, make_producer
from services.registry import ModelRegistry, parse_announcement
from services.scoring.coalesce import CallCoalescer
from services.scoring.config import ScoringConfig
from services.scoring.frames import FrameLimits, FrameRejected, decode_frame
from services.scoring.ingress_metrics import IngressMetrics
from services.scoring.messages import ScoreRequest, ScoreResult
from services.scoring.offsets import OffsetTracker
from services.scoring.publish import broker_ack, dead_letter_headers, result_message
from services.scoring.versions import ModelVersions
from services.telemetry import extract_context, inject_headers, setup_telemetry

log = logging.getLogger("ray.serve")  # Serve writes it to the replica's log

# Failures that say nothing about the frame: the replica it went to died, or none is up yet.
REPLICA_FAILURES = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError, BackPressureError)
_MAX_BACKOFF_S = 2.0
_ANNOUNCEMENT_POLL_S = 0.5


@dataclass
class _Job:
    partition: TopicPartition
    record: Any                    # the kafka ConsumerRecord, kept for the DLQ's original bytes
    message: frames_pb2.FrameMessage
    request: ScoreRequest
    context: Context               # the frame's ingest span
    decoded_at: float


class _Rebalance(ConsumerRebalanceListener):
    """Commit what is finished before a partition moves to another ingress replica."""

    def __init__(self, ingress: "FrameIngress"):
        self._ingress = ingress

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._ingress._send_calls(force=True)
        self._ingress._settle()
        self._ingress._commit(force=True)
        self._ingress._tracker.forget(revoked)
        self._ingress._partitions = 0

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("ingress assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self._ingress._partitions = len(assigned)


@serve.deployment(name="FrameIngress", max_ongoing_requests=8)
class FrameIngress:
    async def __init__(self, scorer: Any, args: dict[str, Any]):
        cfg = ScoringConfig.from_args(args)
        kafka = cfg.kafka.with_env()
        self._cfg = cfg.ingress
        self._topics = kafka.topics
        self._limits = FrameLimits(cfg.ingress.max_frame_bytes, cfg.ingress.max_pixels)
        self._loop = asyncio.get_running_loop()
        self._scorer = scorer
        self._handles: dict[str, Any] = {}
        self._versions = ModelVersions(ModelRegistry(cfg.registry.root), cfg.ingress.registry_refresh_s)
        self._tracker = OffsetTracker()
        # Scorer calls handed to the event loop, and those answered; each written by one thread only.
        self._calls_sent = self._calls_answered = 0
        busy = None if cfg.ingress.call_linger_when_idle else (lambda: self._calls_sent > self._calls_answered)
        self._calls: CallCoalescer[_Job] = CallCoalescer(
            cfg.ingress.max_frames_per_call, cfg.ingress.call_linger_ms / 1000.0, busy=busy)
        self._finished: queue.SimpleQueue[tuple[TopicPartition, int]] = queue.SimpleQueue()
        self._in_flight = 0  # the tracker's count, published by the poll thread for other threads
        self._paused = False
        self._partitions = 0  # assigned to this replica's consumer, for readiness checks
        self._last_commit = self._last_announcements = 0.0
        self._draining = threading.Event()
        self._released = threading.Event()  # drained or gave up: coroutines stop retrying
        self._stopped = threading.Event()
        self._failure: BaseException | None = None
        self._telemetry = setup_telemetry(cfg.telemetry, "scoring.ingress")
        self._tracer = self._telemetry.tracer("hdm.scoring.ingress")
        self._metrics = IngressMetrics(self._telemetry.meter("hdm.scoring.ingress"), lambda: self._in_flight)
        self._producer = make_producer(kafka, max_block_ms=10_000)
        self._consumer = make_consumer(kafka, cfg.ingress.group_id, fetch_max_wait_ms=cfg.ingress.fetch_max_wait_ms)
        self._consumer.subscribe([self._topics.frames], listener=_Rebalance(self))
        # No group: every ingress replica reads every announcement, from the start of the topic.
        self._announcements = make_consumer(kafka, None)
        self._thread = threading.Thread(target=self._run, name="hdm-kafka-poll", daemon=True)
        self._thread.start()

    # ----- the deployment's methods (called through its handle) -----

    def stats(self) -> dict[str, Any]:
        return dict(self._metrics.snapshot(), paused=self._paused, partitions=self._partitions, models=self._versions.snapshot())

    def model_versions(self) -> dict[str, str]:
        return self._versions.snapshot()

    def check_health(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"the Kafka poll loop failed: {self._failure!r}")
        if not self._thread.is_alive() and not self._draining.is_set():
            raise RuntimeError("the Kafka poll loop stopped")

    async def drain(self) -> dict[str, Any]:
        """Stop consuming, let in-flight frames finish (up to drain_timeout_s), commit, leave the group."""
        self._draining.set()
        await asyncio.to_thread(self._stopped.wait, self._cfg.drain_timeout_s + 10.0)
        return self.stats()

    async def __del__(self) -> None:
        # Serve calls this when the replica stops (scale-down, redeploy, shutdown).
        await self.drain()
        await asyncio.to_thread(self._producer.close, 10)
        self._telemetry.shutdown()

    # ----- the poll thread -----

    def _run(self) -> None:
        try:
            while not self._draining.is_set():
                self._step()
            self._finish()
        except Exception as exc:  # noqa: BLE001 - reported through check_health, which restarts the replica
            self._failure = exc
            log.exception("Kafka poll loop failed")
        finally:
            self._released.set()
            self._consumer.close(autocommit=False)
            self._announcements.close(autocommit=False)
            self._stopped.set()

    def _step(self) -> None:
        self._read_announcements()
        self._settle()
        self._commit()
        free = self._flow_control()
        records = self._consumer.poll(timeout_ms=self._poll_timeout_ms(), max_records=max(1, free))
        for partition, batch in records.items():
            for record in batch:
                job = self._accept(partition, record)
                full = None if job is None else self._calls.add(job.request.model_id, job)
                if full:
                    self._dispatch(full)
        self._send_calls()

    def _poll_timeout_ms(self) -> int:
        """The poll's wait, cut short when held frames are due for their Scorer call."""
        wait_s = self._calls.wait_s()
        return self._cfg.poll_timeout_ms if wait_s is None else min(self._cfg.poll_timeout_ms, int(wait_s * 1000))

    def _send_calls(self, force: bool = False) -> None:
        for jobs in self._calls.due(force):
            self._dispatch(jobs)

    def _dispatch(self, jobs: list[_Job]) -> None:
        self._calls_sent += 1
        self._submit(self._process(jobs))

    def _finish(self) -> None:
        self._send_calls(force=True)
        self._consumer.pause(*self._consumer.assignment())
        deadline = time.monotonic() + self._cfg.drain_timeout_s
        while self._tracker.in_flight() and time.monotonic() < deadline:
            self._settle()
            self._commit()
            self._consumer.poll(timeout_ms=self._cfg.poll_timeout_ms)  # keeps the group membership alive
        self._settle()
        self._commit(force=True)
        self._in_flight = self._metrics.released = self._tracker.in_flight()
        log.info("ingress drained: %d frame(s) released uncommitted", self._metrics.released)

    def _flow_control(self) -> int:
        """Pause at max_in_flight, resume below resume_fraction of it; the room left for new frames."""
        in_flight = self._in_flight = self._tracker.in_flight()
        if in_flight >= self._cfg.max_in_flight and not self._paused:
            self._paused = True
            self._metrics.count("pauses")
        elif self._paused and in_flight <= self._cfg.max_in_flight * self._cfg.resume_fraction:
            self._paused = False
            self._consumer.resume(*self._consumer.paused())
        if self._paused:
            self._consumer.pause(*self._consumer.assignment())  # also partitions assigned meanwhile
        return self._cfg.max_in_flight - in_flight

    def _settle(self) -> None:
        while True:
            try:
                partition, offset = self._finished.get_nowait()
            except queue.Empty:
                return
            self._tracker.done(partition, offset)

    def _commit(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_commit < self._cfg.commit_interval_s:
            return
        positions = self._tracker.committable()
        if not positions:
            return
        try:
            self._consumer.commit({tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()})
        except KafkaError as exc:  # e.g. a rebalance in progress: the next step tries again
            log.warning("offset commit failed, will retry: %s", exc)
            return
        self._tracker.mark_committed(positions)
        self._last_commit = time.monotonic()
        self._metrics.count("commits")

    def _read_announcements(self) -> None:
        now = time.monotonic()
        if now - self._last_announcements < _ANNOUNCEMENT_POLL_S:
            return
        self._last_announcements = now
        if not self._announcements.assignment():
            partitions = self._announcements.partitions_for_topic(self._topics.models)
            if not partitions:
                log.warning("topic %s not found yet: model announcements wait for it", self._topics.models)
                return
            self._announcements.assign([TopicPartition(self._topics.models, p) for p in sorted(partitions)])
        for batch in self._announcements.poll(timeout_ms=0).values():
            for record in batch:
                try:
                    self._versions.announce(parse_announcement(record.value))
                except Exception as exc:  # noqa: BLE001 - a bad announcement must not stop the stream
                    log.warning("ignoring unreadable model announcement at offset %s: %s", record.offset, exc)

    def _accept(self, partition: TopicPartition, record: Any) -> _Job | None:
        """Decode and validate a frame: its job, or None when it went to the DLQ."""
        self._tracker.start(partition, record.offset)
        self._metrics.consumed()
        span = self._tracer.start_span(
            "ingest", context=extract_context(record.headers), kind=SpanKind.CONSUMER,
            attributes={"messaging.kafka.partition": record.partition, "messaging.kafka.offset": record.offset},
        )
        context = trace.set_span_in_context(span)
        try:
            frame = decode_frame(record.value, self._limits, lambda product: self._versions.lookup(product) is not None)
        except FrameRejected as rejected:
            span.set_status(Status(StatusCode.ERROR, rejected.detail))
            span.set_attribute("hdm.dlq.reason", rejected.reason_name)
            span.end()
            self._submit(self._dead_letter(partition, record, rejected.reason, rejected.detail, context))
            return None
        model = self._versions.lookup(frame.message.product)
        span.set_attributes({"hdm.frame_id": frame.message.frame_id, "hdm.line_id": frame.message.line_id, "hdm.model_id": model.model_id})
        span.end()
        carrier = {key: value.decode() for key, value in inject_headers(context)}
        now = time.time()
        request = ScoreRequest(frame.message.frame_id, model.model_id, frame.image, carrier, now)
        return _Job(partition, record, frame.message, request, context, now)

    def _submit(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).add_done_callback(self._check_outcome)

    def _check_outcome(self, future: concurrent.futures.Future) -> None:
        if future.cancelled():
            return  # the event loop is closing with the replica
        exc = future.exception()
        if exc is not None:
            # A frame that got neither a result nor a dead letter would hold back its
            # partition's commit forever: fail health so Serve restarts the replica.
            self._failure = exc
            log.error("frame processing failed unexpectedly", exc_info=exc)

    # ----- coroutines on the replica's event loop -----

    async def _process(self, jobs: list[_Job]) -> None:
        try:
            outcomes = await self._score(jobs)
        finally:
            self._calls_answered += 1
        await asyncio.gather(*(self._complete(job, outcome) for job, outcome in zip(jobs, outcomes, strict=True)))

    async def _complete(self, job: _Job, outcome: ScoreResult | BaseException | None) -> None:
        if outcome is None:
            return  # released: the frame stays uncommitted and is read again
        if isinstance(outcome, BaseException):
            await self._dead_letter(job.partition, job.record, frames_pb2.DeadLetter.REASON_SCORING_FAILED, repr(outcome), job.context)
            return
        result = result_message(job.message, outcome, job.decoded_at, time.time())
        truth = header(job.record.headers, GROUND_TRUTH_HEADER)
        with self._tracer.start_as_current_span(
            "publish", context=job.context, kind=SpanKind.PRODUCER,
            attributes={"hdm.frame_id": result.frame_id, "messaging.destination.name": self._topics.results},
        ):
            headers = inject_headers() + ([(GROUND_TRUTH_HEADER, truth)] if truth else [])
            sent = await self._send(self._topics.results, result.frame_id.encode(), result.SerializeToString(), headers)
        if sent:
            self._metrics.published(result)
            self._finished.put((job.partition, job.record.offset))

    async def _score(self, jobs: list[_Job]) -> list[ScoreResult | BaseException | None]:
        """Each frame's result, or its error after score_attempts failures, or None once released."""
        if len(jobs) == 1:
            outcome = await self._call(jobs, self._cfg.score_attempts)
            return outcome if isinstance(outcome, list) else [outcome]
        outcome = await self._call(jobs, attempts=1)
        if isinstance(outcome, list):
            return outcome
        if outcome is None:
            return [None] * len(jobs)
        # One frame may be at fault: score each alone, so only that one goes to the DLQ.
        return [single[0] for single in await asyncio.gather(*(self._score([job]) for job in jobs))]

    async def _call(self, jobs: list[_Job], attempts: int) -> list[ScoreResult] | BaseException | None:
        """One Scorer call for frames of one model, retried while its replica is gone."""
        handle = self._handle(jobs[0].request.model_id)
        failures = 0
        delay = self._cfg.retry_backoff_s
        while not self._released.is_set():
            try:
                sent_at = time.time()
                for job in jobs:
                    job.request.sent_at = sent_at
                return await handle.remote([job.request for job in jobs])
            except REPLICA_FAILURES as exc:
                # Serve retries only before a replica accepts a call; one that dies with
                # the frames on it fails the call, and the frames are simply sent again.
                self._metrics.retry("replica")
                log.warning("scorer replica unavailable for %d frame(s), retrying: %s", len(jobs), type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - the scorer raised for these frames
                failures += 1
                self._metrics.retry("error")
                if failures >= attempts:
                    return exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)
        return None

    def _handle(self, model_id: str) -> Any:
        if model_id not in self._handles:
            self._handles[model_id] = self._scorer.options(method_name="score", multiplexed_model_id=model_id)
        return self._handles[model_id]

    async def _dead_letter(self, partition: TopicPartition, record: Any, reason: int, detail: str, context: Context) -> None:
        reason_name = frames_pb2.DeadLetter.Reason.Name(reason)
        with self._tracer.start_as_current_span(
            "publish", context=context, kind=SpanKind.PRODUCER,
            attributes={"messaging.destination.name": self._topics.dlq, "hdm.dlq.reason": reason_name},
        ):
            # The original record, untouched: value, key and headers.
            sent = await self._send(self._topics.dlq, record.key, record.value, dead_letter_headers(record, reason, detail))
        if sent:
            self._metrics.dead_letter(reason_name)
            self._finished.put((partition, record.offset))

    async def _send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> bool:
        """Produce and wait for the broker's acknowledgement, retrying until it comes or the ingress is released."""
        delay = self._cfg.retry_backoff_s
        while not self._released.is_set():
            try:
                await broker_ack(self._producer.send(topic, key=key, value=value, headers=headers), self._loop)
                return True
            except KafkaError as exc:
                log.warning("publishing to %s failed, retrying: %s", topic, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
        return False
