"""POM on the discrimination side: what a score means at deployment.

Fitted on held-out normal images: the null distribution of image scores gives each frame a
calibrated anomaly probability (1 - p-value under the null) and the decision threshold for a
target false-alarm rate; with labelled anomalies the threshold is the F1-optimal one instead.
The pixel threshold for heatmaps is set the same way on pixel probabilities.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from hdm import metrics

PIXEL_QUANTILES = 1001  # the stored pixel null is this many quantiles, not every pixel


class CalibrationError(ValueError):
    """A calibration file or input that cannot be used."""


@dataclass(frozen=True)
class Calibration:
    image_threshold: float
    pixel_threshold: float
    method: Literal["default", "far", "f1"] = "default"
    target_far: float = 0.01
    pixel_target_far: float = 0.001
    null_scores: tuple[float, ...] = field(default=())       # sorted image scores of held-out normals
    pixel_null_quantiles: tuple[float, ...] = field(default=())

    @classmethod
    def default(cls) -> Calibration:
        """For a model not calibrated yet: thresholds at 0.5, probability = raw score."""
        return cls(image_threshold=0.5, pixel_threshold=0.5)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """P(null score >= s), with the +1 correction so a p-value is never 0."""
        null = np.asarray(self.null_scores)
        if null.size == 0:
            return 1.0 - np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        at_least = null.size - np.searchsorted(null, np.asarray(scores, dtype=np.float64), side="left")
        return (1.0 + at_least) / (1.0 + null.size)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated anomaly probability: 1 - p-value under the null of normal images."""
        return 1.0 - self.p_values(scores)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        try:
            return cls(
                image_threshold=float(data["image_threshold"]),
                pixel_threshold=float(data["pixel_threshold"]),
                method=data.get("method", "default"),
                target_far=float(data.get("target_far", 0.01)),
                pixel_target_far=float(data.get("pixel_target_far", 0.001)),
                null_scores=tuple(sorted(float(s) for s in data.get("null_scores", ()))),
                pixel_null_quantiles=tuple(float(q) for q in data.get("pixel_null_quantiles", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"bad calibration data: {exc}") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}: not valid JSON ({exc.msg})") from None


def far_threshold(null: np.ndarray, far: float) -> float:
    """The lowest threshold t with share(null > t) <= far (flag when score > t)."""
    null = np.sort(np.asarray(null, dtype=np.float64).ravel())
    if null.size == 0:
        raise CalibrationError("no null scores to calibrate on")
    allowed = int(np.floor(far * null.size))  # how many normals may exceed the threshold
    return float(null[null.size - 1 - allowed])


def fit_calibration(
    null_scores: np.ndarray,
    null_pixels: np.ndarray,
    target_far: float = 0.01,
    pixel_target_far: float = 0.001,
    anomaly_scores: np.ndarray | None = None,
    anomaly_pixels: tuple[np.ndarray, np.ndarray] | None = None,
) -> Calibration:
    """Fit on normal image scores and pixel probabilities.

    With `anomaly_scores` (labelled anomalous images) the image threshold is F1-optimal over
    normals + anomalies; with `anomaly_pixels` = (maps, masks) the pixel threshold likewise.
    Otherwise both thresholds meet the target false-alarm rates on the normals.
    """
    null_scores = np.sort(np.asarray(null_scores, dtype=np.float64).ravel())
    null_pixels = np.asarray(null_pixels, dtype=np.float64).ravel()
    method: Literal["far", "f1"] = "far"
    image_threshold = far_threshold(null_scores, target_far)
    pixel_threshold = _quantile_threshold(null_pixels, pixel_target_far)
    if anomaly_scores is not None and len(anomaly_scores):
        method = "f1"
        scores = np.concatenate([null_scores, np.asarray(anomaly_scores, dtype=np.float64).ravel()])
        labels = np.concatenate([np.zeros(null_scores.size), np.ones(len(anomaly_scores))])
        image_threshold = _strict_threshold(metrics.f1_max(labels, scores)[1], scores)
    if anomaly_pixels is not None:
        maps, masks = (np.asarray(a, dtype=np.float64).ravel() for a in anomaly_pixels)
        pix_scores = np.concatenate([null_pixels, maps])
        pix_labels = np.concatenate([np.zeros(null_pixels.size), masks > 0.5])
        pixel_threshold = _strict_threshold(metrics.f1_max(pix_labels, pix_scores)[1], pix_scores)
    quantiles = np.quantile(null_pixels, np.linspace(0, 1, PIXEL_QUANTILES)) if null_pixels.size else np.array([])
    return Calibration(
        image_threshold=image_threshold,
        pixel_threshold=pixel_threshold,
        method=method,
        target_far=target_far,
        pixel_target_far=pixel_target_far,
        null_scores=tuple(float(s) for s in null_scores),
        pixel_null_quantiles=tuple(float(q) for q in quantiles),
    )


def _quantile_threshold(null_pixels: np.ndarray, far: float) -> float:
    if null_pixels.size == 0:
        raise CalibrationError("no null pixels to calibrate on")
    return float(np.quantile(null_pixels, 1.0 - far, method="higher"))


def _strict_threshold(f1_threshold: float, scores: np.ndarray) -> float:
    """f1_max flags score >= t; verdicts here flag score > threshold: take the midpoint to the next lower score."""
    below = scores[scores < f1_threshold]
    return float((below.max() + f1_threshold) / 2) if below.size else float(np.nextafter(f1_threshold, -np.inf))
