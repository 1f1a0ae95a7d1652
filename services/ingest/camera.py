"""A camera simulator: frames of several production lines published to Kafka at a steady rate.

Each line is a camera on its own line (Kafka key = line id, so a line's frames stay
in order). Images come from the synthetic product generator or from an MVTec
layout folder; a share of them are defective, and the ground truth (label and
defect type) travels in the `hdm-ground-truth` header so the stream's accuracy
can be measured downstream. Each frame is one trace, started by a `produce` span.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from PIL import Image
from tqdm import tqdm

from protos.hdm.v1 import frames_pb2
from services.kafka_io import GROUND_TRUTH_HEADER
from services.telemetry import inject_headers

ENCODINGS = {
    "png": frames_pb2.IMAGE_ENCODING_PNG,
    "jpeg": frames_pb2.IMAGE_ENCODING_JPEG,
    "raw": frames_pb2.IMAGE_ENCODING_RAW,
}
GOOD = "good"


@dataclass
class CameraConfig:
    lines: int = 2
    fps: float = 5.0               # frames per second on each line
    frames: int = 100              # frames per line
    data: str = "generated"        # "generated" or an MVTec-layout category folder
    defect_rate: float = 0.1
    product: str | None = None     # default: the category folder's name, or "synthetic"
    encoding: str = "png"
    image_size: int = 128
    seed: int = 0
    pool: int = 64                 # distinct images per class, encoded once and reused

    @property
    def product_name(self) -> str:
        if self.product:
            return self.product
        return "synthetic" if self.data == "generated" else Path(self.data).resolve().name


@dataclass(frozen=True)
class PooledImage:
    data: bytes
    width: int
    height: int
    channels: int
    label: int
    defect: str


@dataclass(frozen=True)
class SentFrame:
    frame_id: str
    line_id: str
    label: int
    defect: str


@dataclass
class CameraReport:
    sent: list[SentFrame] = field(default_factory=list)
    acknowledged: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return len(self.sent) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "frames": len(self.sent),
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "defective": sum(f.label for f in self.sent),
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
        }


class ImageSource(Protocol):
    def normal(self, rng: np.random.Generator) -> np.ndarray: ...
    def defective(self, rng: np.random.Generator) -> tuple[np.ndarray, str]: ...


class SyntheticSource:
    """Images from the hdm synthetic product generator."""

    def __init__(self, size: int, seed: int):
        from hdm.data.synthetic import ProductGenerator

        self._generator = ProductGenerator(size=size, seed=seed)

    def normal(self, rng: np.random.Generator) -> np.ndarray:
        return self._generator.normal(rng)

    def defective(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        image, _mask, defect = self._generator.defective(rng)
        return image, defect


class FolderSource:
    """Images of an MVTec-layout category: good ones from train/ and test/good, defective from test/<defect>."""

    def __init__(self, root: str | Path, size: int):
        from hdm.data.mvtec import MVTecCategory

        category = MVTecCategory(root)
        self._size = size
        self._good = list(category.train_paths) + [s.path for s in category.test_samples if s.label == 0]
        self._bad = [(s.path, s.defect) for s in category.test_samples if s.label == 1]
        if not self._good:
            raise ValueError(f"{root}: no normal images")

    @property
    def has_defects(self) -> bool:
        return bool(self._bad)

    def normal(self, rng: np.random.Generator) -> np.ndarray:
        from hdm.data.images import load_image

        return load_image(self._good[rng.integers(len(self._good))], self._size)

    def defective(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        from hdm.data.images import load_image

        path, defect = self._bad[rng.integers(len(self._bad))]
        return load_image(path, self._size), defect


def make_source(cfg: CameraConfig) -> ImageSource:
    if cfg.data == "generated":
        return SyntheticSource(cfg.image_size, cfg.seed)
    source = FolderSource(cfg.data, cfg.image_size)
    if cfg.defect_rate > 0 and not source.has_defects:
        raise ValueError(f"{cfg.data} has no defective test images; use --defect-rate 0")
    return source


def encode_image(image: np.ndarray, encoding: str) -> bytes:
    if encoding == "raw":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=encoding.upper())
    return buf.getvalue()


def build_pool(source: ImageSource, cfg: CameraConfig) -> tuple[list[PooledImage], list[PooledImage]]:
    """Encoded normal and defective images, deterministic from the seed."""
    rng = np.random.default_rng(cfg.seed)

    def pooled(image: np.ndarray, label: int, defect: str) -> PooledImage:
        return PooledImage(encode_image(image, cfg.encoding), image.shape[1], image.shape[0], image.shape[2], label, defect)

    normal = [pooled(source.normal(rng), 0, GOOD) for _ in range(cfg.pool)]
    defective = []
    if cfg.defect_rate > 0:
        for _ in range(cfg.pool):
            image, defect = source.defective(rng)
            defective.append(pooled(image, 1, defect))
    return normal, defective


class CameraSimulator:
    """Publishes `frames` frames on each of `lines` lines at `fps` per line."""

    def __init__(self, cfg: CameraConfig, normal: list[PooledImage], defective: list[PooledImage]):
        if cfg.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}")
        self.cfg = cfg
        self._normal = normal
        self._defective = defective
        self._rng = np.random.default_rng(cfg.seed + 1)

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds from start, line id) of every frame; lines are staggered within a period."""
        period = 1.0 / self.cfg.fps
        lines = [f"line-{i + 1}" for i in range(self.cfg.lines)]
        return sorted(
            ((n + j / len(lines)) * period, line) for n in range(self.cfg.frames) for j, line in enumerate(lines)
        )

    def run(self, producer: Any, topic: str, tracer: Tracer, progress: bool = True, flush_timeout_s: float = 60.0) -> CameraReport:
        report = CameraReport()
        schedule = self.schedule()
        start = time.monotonic()
        for due, line in tqdm(schedule, desc="camera", unit="frame", disable=not progress):
            delay = start + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            report.sent.append(self._send(producer, topic, tracer, line, report))
        producer.flush(timeout=flush_timeout_s)
        report.seconds = time.monotonic() - start
        return report

    def _pick(self) -> PooledImage:
        if self._defective and self._rng.random() < self.cfg.defect_rate:
            return self._defective[self._rng.integers(len(self._defective))]
        return self._normal[self._rng.integers(len(self._normal))]

    def _send(self, producer: Any, topic: str, tracer: Tracer, line: str, report: CameraReport) -> SentFrame:
        image = self._pick()
        frame_id = uuid.uuid4().hex
        message = frames_pb2.FrameMessage(
            frame_id=frame_id, line_id=line, camera_id=f"cam-{line}", product=self.cfg.product_name,
            encoding=ENCODINGS[self.cfg.encoding], width=image.width, height=image.height,
            channels=image.channels, data=image.data,
        )
        message.captured_at.GetCurrentTime()
        span = tracer.start_span(
            "produce", kind=SpanKind.PRODUCER,
            attributes={"hdm.frame_id": frame_id, "hdm.line_id": line, "hdm.product": message.product, "messaging.destination.name": topic},
        )
        truth = json.dumps({"label": image.label, "defect": image.defect}).encode()
        headers = inject_headers(trace.set_span_in_context(span)) + [(GROUND_TRUTH_HEADER, truth)]
        future = producer.send(topic, key=line.encode(), value=message.SerializeToString(), headers=headers)
        future.add_callback(_acked(span, report))
        future.add_errback(_failed(span, report))
        return SentFrame(frame_id, line, image.label, image.defect)


def _acked(span: Any, report: CameraReport) -> Callable[[Any], None]:
    def callback(metadata: Any) -> None:
        report.acknowledged += 1
        span.set_attribute("messaging.kafka.partition", metadata.partition)
        span.set_attribute("messaging.kafka.offset", metadata.offset)
        span.end()

    return callback


def _failed(span: Any, report: CameraReport) -> Callable[[Exception], None]:
    def errback(exc: Exception) -> None:
        report.failed += 1
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.end()

    return errback


def parse_ground_truth(value: bytes | None) -> tuple[int, str] | None:
    """(label, defect) from a frame's ground-truth header, None when absent."""
    if not value:
        return None
    truth = json.loads(value)
    return int(truth["label"]), str(truth["defect"])
