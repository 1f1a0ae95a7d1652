"""Apply a trained HDM checkpoint to images: scores, calibrated probabilities, verdicts, heatmaps.

`Detector` is what the streaming Scorer and `hdm predict` use. It holds no global state;
one instance per thread (or per Serve replica) is the intended use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdm.calibration import Calibration
from hdm.checkpoint import content_hash, load_checkpoint
from hdm.config import HDMConfig, TorchScript
from hdm.data.images import to_tensor
from hdm.models import HDMModel, InferenceOutput
from hdm.precision import autocast, resolve_device
from hdm.torchscript import trace_anomaly_maps, wants_torchscript


@dataclass(frozen=True)
class Prediction:
    score: float               # image score in [0, 1] (top-k mean of the smoothed map)
    probability: float         # calibrated anomaly probability: 1 - p-value under the normal null
    anomalous: bool            # score > threshold
    threshold: float           # the calibrated image threshold
    pixel_threshold: float     # the calibrated heatmap threshold
    anomaly_map: np.ndarray    # float32 (S, S) pixel probabilities
    anomalous_area: float      # share of pixels above pixel_threshold


class Detector:
    """A loaded model with its calibration, ready to score uint8 images of any size."""

    def __init__(
        self,
        model: HDMModel,
        config: HDMConfig,
        calibration: Calibration,
        version: str,
        device: torch.device,
        meta: dict[str, Any] | None = None,
        max_batch: int = 32,
        torchscript: TorchScript = "off",
    ) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.calibration = calibration
        self.version = version
        self.device = device
        self.meta = meta or {}
        self.max_batch = max_batch
        # The maps through a TorchScript trace (see hdm.torchscript), or eager when None.
        self._traced = trace_anomaly_maps(self.model, device) if wants_torchscript(torchscript, device) else None

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "auto", torchscript: TorchScript = "off") -> Detector:
        """Raises hdm.checkpoint.CheckpointError for a directory that is not a checkpoint."""
        resolved = resolve_device(device)
        ckpt = load_checkpoint(run_dir, device=resolved)
        version = str(ckpt.meta.get("version") or content_hash(run_dir))
        return cls(ckpt.model, ckpt.config, ckpt.calibration, version, resolved, ckpt.meta, torchscript=torchscript)

    @property
    def traced(self) -> bool:
        return self._traced is not None

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def run(self, x: torch.Tensor) -> InferenceOutput:
        """The model on a prepared batch (B, 3, S, S) in [-1, 1]; float32 outputs on the CPU."""
        x = x.to(self.device)
        with torch.inference_mode(), autocast(self.device, self.config.precision):
            if self._traced is None:
                out = self.model(x)
            else:
                self.model.check_input(x)
                maps = self._traced(x)
                out = InferenceOutput(self.model.scorer.score(maps), maps)
        return InferenceOutput(out.pred_score.float().cpu(), out.anomaly_map.float().cpu())

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Prediction]:
        """uint8 images, (B, H, W, 3) or a list of (H, W[, 3]) arrays of any size."""
        predictions: list[Prediction] = []
        for start in range(0, len(images), self.max_batch):
            x = to_tensor(images[start : start + self.max_batch], self.image_size)
            predictions.extend(self._predictions(self.run(x)))
        return predictions

    def _predictions(self, out: InferenceOutput) -> list[Prediction]:
        cal = self.calibration
        scores = out.pred_score.numpy().astype(np.float64)
        maps = out.anomaly_map[:, 0].numpy().astype(np.float32)
        probabilities = cal.probability(scores)
        return [
            Prediction(
                score=float(score),
                probability=float(prob),
                anomalous=bool(score > cal.image_threshold),
                threshold=cal.image_threshold,
                pixel_threshold=cal.pixel_threshold,
                anomaly_map=amap,
                anomalous_area=float((amap > cal.pixel_threshold).mean()),
            )
            for score, prob, amap in zip(scores, probabilities, maps, strict=True)
        ]
