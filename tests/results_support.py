"""Shared helpers for the results-service tests: results built directly as protobuf messages
(the scoring service that produces them in production is not needed), service configs, and a
backend fixture parametrized over SQLite and PostgreSQL."""

from __future__ import annotations

import io
import random
import time

import pytest
from PIL import Image

from protos.hdm.v1 import results_pb2
from services.results.config import AuthConfig, ResultsConfig

TOKEN = "test-token"
OK, ANOMALOUS = results_pb2.VERDICT_OK, results_pb2.VERDICT_ANOMALOUS
BACKENDS = ("sqlite", "postgresql")


def now_us() -> int:
    return int(time.time() * 1_000_000)


def png(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, format="PNG")
    return buf.getvalue()


def make_result(
    frame_id: str,
    line_id: str = "line-a",
    camera_id: str = "cam-1",
    product: str = "tile",
    captured_us: int | None = None,
    score: float = 0.1,
    verdict: int = OK,
    model_version: str = "v1",
    total_ms: float = 25.0,
    images: bool = True,
) -> results_pb2.InspectionResult:
    r = results_pb2.InspectionResult(
        frame_id=frame_id,
        line_id=line_id,
        camera_id=camera_id,
        product=product,
        model_version=model_version,
        image_score=score,
        anomaly_probability=min(1.0, score),
        verdict=verdict,
        threshold=0.5,
        pixel_threshold=0.4,
        batch_size=4,
        scorer_replica="scorer-0",
    )
    captured = now_us() if captured_us is None else captured_us
    r.captured_at.FromMicroseconds(captured)
    r.scored_at.FromMicroseconds(captured + int(total_ms * 1000))
    r.latency.total_ms = total_ms
    r.latency.score_ms = total_ms / 2
    if images:  # the scorer sends PNGs for every frame here; the store keeps them by policy
        r.heatmap_png, r.overlay_png = png(200 if verdict == ANOMALOUS else 10), png(128)
    return r


def dataset(n: int, seed: int = 0, end_us: int | None = None) -> list[results_pb2.InspectionResult]:
    """n results over the 30 minutes before end_us on three lines, some sharing a timestamp
    (so paging must break ties by frame_id), about one in six anomalous."""
    rng = random.Random(seed)
    end = end_us or now_us()
    out = []
    for i in range(n):
        captured = end - 30 * 60 * 1_000_000 + (i // 3) * 5_000_000  # triples share a capture time
        anomalous = rng.random() < 1 / 6
        out.append(
            make_result(
                f"frame-{rng.randrange(10**9):09d}-{i}",
                line_id=rng.choice(["line-a", "line-b", "line-c"]),
                camera_id=rng.choice(["cam-1", "cam-2"]),
                product=rng.choice(["tile", "gear"]),
                captured_us=captured,
                score=round(rng.uniform(0.6, 1.0) if anomalous else rng.uniform(0.0, 0.5), 4),
                verdict=ANOMALOUS if anomalous else OK,
                model_version=rng.choice(["v1", "v2"]),
                total_ms=rng.uniform(10, 200),
            )
        )
    return out


def service_config(database_url: str, **overrides) -> ResultsConfig:
    kwargs = dict(
        listen="127.0.0.1:0",
        database_url=database_url,
        consume=False,
        auth=AuthConfig(tokens=[TOKEN]),
        stream_poll_interval_s=0.2,
        shutdown_grace_s=1.0,
        page_size_max=500,
        max_streams=8,
    )
    kwargs.update(overrides)
    return ResultsConfig(**kwargs)


def database_url(backend: str, request: pytest.FixtureRequest, tmp_dir, module_scoped: bool = True) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir}/results.db"
    return request.getfixturevalue("postgres_module_url" if module_scoped else "postgres_url")
