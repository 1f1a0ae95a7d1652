"""What the demo shows a person: accuracy against the camera's ground truth, latency, heatmaps."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from protos.hdm.v1 import results_pb2

ANOMALOUS = results_pb2.VERDICT_ANOMALOUS


def summarize(results: Sequence[results_pb2.InspectionResult], truth: dict[str, int], dead_letters: int) -> dict[str, Any]:
    """Counts, precision/recall and latency of the results (as read back over gRPC)."""
    labels = np.array([truth[r.frame_id] for r in results])
    flagged = np.array([r.verdict == ANOMALOUS for r in results])
    scores = np.array([r.image_score for r in results])
    latency = np.array([r.latency.total_ms for r in results])
    # From the first capture to the last verdict: what the whole pipeline sustained.
    span_s = (max(_seconds(r.scored_at) for r in results) - min(_seconds(r.captured_at) for r in results)) if results else 0.0
    true_pos = int((flagged & (labels == 1)).sum())
    summary: dict[str, Any] = {
        "frames": len(results),
        "defective_frames": int(labels.sum()),
        "anomalies": int(flagged.sum()),
        "precision": true_pos / max(1, int(flagged.sum())),
        "recall": true_pos / max(1, int(labels.sum())),
        "false_alarm_rate": int((flagged & (labels == 0)).sum()) / max(1, int((labels == 0).sum())),
        "image_auroc": _auroc(labels, scores),
        "throughput_fps": len(results) / span_s if span_s > 0 else 0.0,
        "latency_p50_ms": float(np.percentile(latency, 50)) if len(latency) else 0.0,
        "latency_p99_ms": float(np.percentile(latency, 99)) if len(latency) else 0.0,
        "dead_letters": dead_letters,
        "model_versions": sorted({r.model_version for r in results}),
        "lines": sorted({r.line_id for r in results}),
    }
    return summary


def _seconds(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from hdm.metrics import image_auroc

    return image_auroc(labels, scores) if 0 < labels.sum() < len(labels) else None


def write_overlays(heatmaps: Iterable[tuple[results_pb2.InspectionResult, bytes]], folder: Path) -> list[Path]:
    """One PNG per anomalous frame: folder/<line>/<frame_id>.png."""
    written = []
    for result, overlay_png in heatmaps:
        path = folder / result.line_id / f"{result.frame_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(overlay_png)
        written.append(path)
    return written


def contact_sheet(pngs: Sequence[bytes], path: Path, columns: int = 6, limit: int = 24, tile: int = 192) -> Path | None:
    """The first overlays side by side in one PNG, enlarged to `tile` px, for a quick look."""
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in pngs[:limit]]
    if not images:
        return None
    w = h = max(tile, images[0].size[0])
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * w, rows * h), "black")
    for i, image in enumerate(images):
        sheet.paste(image.resize((w, h), Image.Resampling.NEAREST), ((i % columns) * w, (i // columns) * h))
    sheet.save(path)
    return path


def format_summary(s: dict[str, Any]) -> str:
    auroc = "n/a" if s["image_auroc"] is None else f"{s['image_auroc']:.3f}"
    rows = [
        ("frames scored", f"{s['frames']} on {len(s['lines'])} lines ({s['defective_frames']} defective by ground truth)"),
        ("anomalies flagged", str(s["anomalies"])),
        ("precision / recall", f"{s['precision']:.2f} / {s['recall']:.2f}   (false alarms {s['false_alarm_rate']:.1%}, image AUROC {auroc})"),
        ("throughput", f"{s['throughput_fps']:.1f} frames/s (first capture to last verdict)"),
        ("latency p50 / p99", f"{s['latency_p50_ms']:.0f} / {s['latency_p99_ms']:.0f} ms (capture to result)"),
        ("dead-letter queue", f"{s['dead_letters']} frames"),
        ("model", ", ".join(s["model_versions"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
