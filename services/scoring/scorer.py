"""The Scorer deployment: HDM's DDM on dynamic batches, one model per product version.

Ray Serve does the heavy lifting: `@serve.batch` gathers single-frame calls into
batches (size and wait changed in place through `user_config`), `@serve.multiplexed`
keeps the recently used models of each replica loaded and routes a model's frames
to replicas that already hold it, and the deployment's autoscaling adds replicas
when ongoing requests pile up. A model id is `<product>/<version>`, so a new
version is simply a new id: frames switch to it as the ingress asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from opentelemetry.trace import SpanKind
from ray import serve

from services.config import TelemetryConfig, load_dataclass
from services.registry import ModelRegistry, parse_model_id
from services.scoring.config import HEATMAP_POLICIES, ScorerConfig
from services.scoring.messages import ScoreRequest, ScoreResult
from services.scoring.pacing import BatchGate
from services.telemetry import extract_context, setup_telemetry


def frames_in(calls: list[list[ScoreRequest]]) -> int:
    """A batch's size in frames (a call may carry several), for @serve.batch's max_batch_size."""
    return sum(len(call) for call in calls)


# Models (product versions) one replica keeps loaded. Fixed by the decorator, so not
# in config; old versions fall out of it as frames move to new ones.
MODELS_PER_REPLICA = 4
# Runs of a full batch per model at warm-up: a TorchScript module optimises itself during
# its first runs, which are several times slower than the later ones.
WARMUP_RUNS = 2

log = logging.getLogger(__name__)


@serve.deployment(name="Scorer")
class Scorer:
    async def __init__(self, registry_root: str, scorer: dict[str, Any], telemetry: dict[str, Any]):
        import torch

        self._cfg = load_dataclass(ScorerConfig, scorer, "scorer")
        if self._cfg.torch_threads > 0:
            torch.set_num_threads(self._cfg.torch_threads)
        self._registry = ModelRegistry(registry_root)
        self._heatmaps = self._cfg.heatmaps
        self._gate = BatchGate(self._cfg.max_batch_size) if self._cfg.paced_batching else None
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._telemetry = setup_telemetry(load_dataclass(TelemetryConfig, telemetry, "telemetry"), "scoring.scorer")
        self._tracer = self._telemetry.tracer("hdm.scoring.scorer")
        meter = self._telemetry.meter("hdm.scoring.scorer")
        self._batch_sizes = meter.create_histogram("hdm.scorer.batch_size", unit="{frame}", description="frames per scored batch")
        self._batch_seconds = meter.create_histogram("hdm.scorer.batch_duration", unit="s", description="forward pass time of a batch")
        self._scored = meter.create_counter("hdm.scorer.frames", unit="{frame}", description="frames scored")
        self._warmed: list[str] = []
        if self._cfg.warmup:
            await self._warm_up()

    async def _warm_up(self) -> None:
        """Load the latest version of each registered product and run full batches through it."""
        latest = [v for v in (self._registry.latest(p) for p in self._registry.products()) if v is not None]
        for version in latest[:MODELS_PER_REPLICA]:
            try:
                detector = await self.get_model(version.model_id)
                blank = np.zeros((self._cfg.max_batch_size, detector.image_size, detector.image_size, 3), np.uint8)
                for _ in range(WARMUP_RUNS):
                    await asyncio.to_thread(detector.predict, blank)
                self._warmed.append(version.model_id)
            except Exception as exc:  # noqa: BLE001 - one broken version must not keep the replica from serving the others
                log.warning("warm-up of %s failed: %s", version.model_id, exc)

    def warmed_models(self) -> list[str]:
        """Model ids this replica loaded and ran at start."""
        return list(self._warmed)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batching and heatmap policy from the deployment's user_config, applied without a restart."""
        max_batch_size = int(user_config.get("max_batch_size", self._cfg.max_batch_size))
        self.score_batch.set_max_batch_size(max_batch_size)
        # Paced, the gate closes batches (it lets a batch's worth in when the replica frees
        # up), so Serve takes what is queued at once.
        wait_s = 0.0 if self._gate is not None else float(user_config.get("batch_wait_timeout_s", self._cfg.batch_wait_timeout_s))
        self.score_batch.set_batch_wait_timeout_s(wait_s)
        if self._gate is not None:
            self._gate.max_batch_size = max_batch_size
        heatmaps = user_config.get("heatmaps", self._heatmaps)
        if heatmaps not in HEATMAP_POLICIES:
            raise ValueError(f"heatmaps must be one of {', '.join(HEATMAP_POLICIES)}, got {heatmaps!r}")
        self._heatmaps = heatmaps

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, model_id: str) -> Any:
        from hdm.inference import Detector

        version = self._registry.resolve(model_id)
        return await asyncio.to_thread(Detector.load, version.path, self._cfg.device, self._cfg.torchscript)  # type: ignore[arg-type]

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Score the frames of one call (one model); Serve batches concurrent calls into score_batch."""
        if self._gate is not None:
            await self._gate.admit(len(requests))  # see services/scoring/pacing.py
        return await self.score_batch(requests)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05, batch_size_fn=frames_in)
    async def score_batch(self, calls: list[list[ScoreRequest]]) -> list[list[ScoreResult]]:
        # Serve splits batches by multiplexed model id, so one batch is one model.
        requests = [request for call in calls for request in call]
        if self._gate is not None:
            self._gate.started(len(requests))
        try:
            results = iter(await self._run_batch(requests))
        finally:
            if self._gate is not None:
                self._gate.finished()
        self._batch_sizes.record(len(requests))
        self._scored.add(len(requests), {"model": requests[0].model_id})
        return [[next(results) for _ in call] for call in calls]

    async def _run_batch(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        model_id = requests[0].model_id
        if any(r.model_id != model_id for r in requests):
            raise ValueError("a batch mixed model ids; call score() with multiplexed_model_id set")
        detector = await self.get_model(model_id)
        return await asyncio.to_thread(self._predict, detector, model_id, requests, time.time())

    def _predict(self, detector: Any, model_id: str, requests: list[ScoreRequest], started: float) -> list[ScoreResult]:
        _, version = parse_model_id(model_id)
        t0 = time.perf_counter()
        predictions = detector.predict([r.image for r in requests])
        score_ms = (time.perf_counter() - t0) * 1000.0
        self._batch_seconds.record(score_ms / 1000.0)
        scored_ns = time.time_ns()
        results = []
        for request, prediction in zip(requests, predictions, strict=True):
            t1 = time.perf_counter()
            heatmap, overlay = self._pictures(request, prediction, detector.image_size)
            post_ms = (time.perf_counter() - t1) * 1000.0
            results.append(
                ScoreResult(
                    frame_id=request.frame_id, model_version=version, score=float(prediction.score),
                    probability=float(prediction.probability), anomalous=bool(prediction.anomalous),
                    threshold=float(prediction.threshold), pixel_threshold=float(prediction.pixel_threshold),
                    anomalous_area=float(prediction.anomalous_area), heatmap_png=heatmap, overlay_png=overlay,
                    batch_size=len(requests), replica=self._replica, batch_started_at=started,
                    score_ms=score_ms, post_ms=post_ms,
                )
            )
            self._trace(request, results[-1], model_id, started, scored_ns)
        return results

    def _pictures(self, request: ScoreRequest, prediction: Any, image_size: int) -> tuple[bytes, bytes]:
        if self._heatmaps == "none" or (self._heatmaps == "anomalous" and not prediction.anomalous):
            return b"", b""
        from hdm.data.images import resize_rgb
        from hdm.visualize import heatmap_png, overlay, png_bytes

        frame = resize_rgb(request.image, image_size)
        return heatmap_png(prediction.anomaly_map), png_bytes(overlay(frame, prediction.anomaly_map, prediction.pixel_threshold))

    def _trace(self, request: ScoreRequest, result: ScoreResult, model_id: str, started: float, scored_ns: int) -> None:
        """The frame's `batch` (waiting for its batch) and `score` spans, in the frame's own trace."""
        context = extract_context(list((k, v.encode()) for k, v in request.trace.items()))
        attributes = {
            "hdm.frame_id": request.frame_id,
            "hdm.model_id": model_id,
            "hdm.batch.size": result.batch_size,
            "hdm.scorer.replica": self._replica,
        }
        started_ns = int(started * 1e9)
        sent_ns = min(int(request.sent_at * 1e9), started_ns)  # the ingress's clock may run a little ahead
        batch = self._tracer.start_span("batch", context=context, kind=SpanKind.INTERNAL, start_time=sent_ns, attributes=attributes)
        batch.end(end_time=started_ns)
        score = self._tracer.start_span("score", context=context, kind=SpanKind.INTERNAL, start_time=started_ns, attributes=attributes)
        score.set_attribute("hdm.anomalous", result.anomalous)
        score.set_attribute("hdm.score", result.score)
        score.end(end_time=scored_ns + int(result.post_ms * 1e6))

    def __del__(self) -> None:
        telemetry = self.__dict__.pop("_telemetry", None)  # Serve and the garbage collector may both call this
        if telemetry is not None:
            telemetry.shutdown()
