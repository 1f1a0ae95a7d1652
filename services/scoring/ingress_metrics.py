"""The ingress's counters: plain numbers for its `stats()` method, and OpenTelemetry instruments.

Metrics: frames consumed and results published (rates give frames/s), capture-to-result
latency per line, anomaly rate per line, dead letters by reason, scoring retries, and
frames in flight. Counters are written by the poll thread and the event loop and read
by others; each is a single int update, which the GIL keeps whole.
"""

from __future__ import annotations

from typing import Any, Callable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from protos.hdm.v1 import results_pb2


class IngressMetrics:
    def __init__(self, meter: Meter, in_flight: Callable[[], int]):
        self.counts = {"consumed": 0, "published": 0, "dead_letters": 0, "replica_retries": 0, "error_retries": 0, "commits": 0, "pauses": 0}
        self.released = 0
        self._lines: dict[str, list[int]] = {}  # line -> [results, anomalous]
        self._in_flight = in_flight
        self._consumed = meter.create_counter("hdm.ingress.frames_consumed", unit="{frame}", description="frames read from Kafka")
        self._results = meter.create_counter("hdm.ingress.results", unit="{frame}", description="results published, by line and verdict")
        self._latency = meter.create_histogram("hdm.ingress.latency", unit="ms", description="capture to result, per frame")
        self._dead_letters = meter.create_counter("hdm.ingress.dead_letters", unit="{frame}", description="frames sent to the DLQ, by reason")
        self._retries = meter.create_counter("hdm.ingress.score_retries", unit="{attempt}", description="scoring attempts repeated, by cause")
        meter.create_observable_gauge("hdm.ingress.in_flight", [self._observe_in_flight], unit="{frame}")
        meter.create_observable_gauge("hdm.ingress.anomaly_rate", [self._observe_anomaly_rate], description="anomalous share of results, per line")

    def consumed(self) -> None:
        self.counts["consumed"] += 1
        self._consumed.add(1)

    def published(self, result: results_pb2.InspectionResult) -> None:
        anomalous = result.verdict == results_pb2.VERDICT_ANOMALOUS
        self.counts["published"] += 1
        counts = self._lines.setdefault(result.line_id, [0, 0])
        counts[0] += 1
        counts[1] += int(anomalous)
        self._results.add(1, {"line": result.line_id, "verdict": "anomalous" if anomalous else "ok"})
        self._latency.record(result.latency.total_ms, {"line": result.line_id})

    def dead_letter(self, reason: str) -> None:
        self.counts["dead_letters"] += 1
        self._dead_letters.add(1, {"reason": reason})

    def retry(self, cause: str) -> None:
        self.counts[f"{cause}_retries"] += 1
        self._retries.add(1, {"cause": cause})

    def count(self, name: str) -> None:
        self.counts[name] += 1

    def snapshot(self) -> dict[str, Any]:
        return dict(self.counts, released=self.released, in_flight=self._in_flight())

    def _observe_in_flight(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self._in_flight())]

    def _observe_anomaly_rate(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(bad / total, {"line": line}) for line, (total, bad) in list(self._lines.items()) if total]
