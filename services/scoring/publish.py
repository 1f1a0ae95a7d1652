"""What the ingress publishes: InspectionResult records and dead letters, and the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from typing import Any

from protos.hdm.v1 import frames_pb2, results_pb2
from services.kafka_io import DLQ_REASON_HEADER
from services.scoring.messages import ScoreResult


def result_message(frame: frames_pb2.FrameMessage, scored: ScoreResult, decoded_at: float, now: float) -> results_pb2.InspectionResult:
    """The result of a frame, with where its time went (capture -> decoded -> batch -> ready)."""
    result = results_pb2.InspectionResult(
        frame_id=frame.frame_id, line_id=frame.line_id, camera_id=frame.camera_id, product=frame.product,
        model_version=scored.model_version, image_score=scored.score, anomaly_probability=scored.probability,
        verdict=results_pb2.VERDICT_ANOMALOUS if scored.anomalous else results_pb2.VERDICT_OK,
        threshold=scored.threshold, pixel_threshold=scored.pixel_threshold, anomalous_area=scored.anomalous_area,
        heatmap_png=scored.heatmap_png, overlay_png=scored.overlay_png, batch_size=scored.batch_size,
        scorer_replica=scored.replica,
    )
    captured = frame.captured_at.ToNanoseconds() / 1e9 if frame.HasField("captured_at") else decoded_at
    result.captured_at.CopyFrom(frame.captured_at)
    result.scored_at.FromNanoseconds(int(now * 1e9))
    latency = result.latency
    latency.ingest_ms = max(0.0, (decoded_at - captured) * 1000.0)
    latency.queue_ms = max(0.0, (scored.batch_started_at - decoded_at) * 1000.0)
    latency.score_ms = scored.score_ms
    latency.post_ms = scored.post_ms
    latency.total_ms = max(0.0, (now - captured) * 1000.0)
    return result


def dead_letter_headers(record: Any, reason: int, detail: str) -> list[tuple[str, bytes]]:
    """The original record's headers (trace, ground truth) plus the DeadLetter saying why."""
    letter = frames_pb2.DeadLetter(
        reason=reason, detail=detail[:2000], source_topic=record.topic,
        source_partition=record.partition, source_offset=record.offset,
    )
    letter.failed_at.GetCurrentTime()
    headers = [(key, value) for key, value in (record.headers or []) if key != DLQ_REASON_HEADER]
    return headers + [(DLQ_REASON_HEADER, letter.SerializeToString())]


def broker_ack(kafka_future: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    """An asyncio future settled with a kafka-python send future (whose callbacks run on the producer's thread)."""
    waiter = loop.create_future()

    def settle(value: Any = None, error: BaseException | None = None) -> None:
        if waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(value)

    kafka_future.add_callback(lambda value: loop.call_soon_threadsafe(settle, value))
    kafka_future.add_errback(lambda error: loop.call_soon_threadsafe(settle, None, error))
    return waiter
