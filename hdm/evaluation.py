"""Evaluate a checkpoint on a category's test set in the MVTec AD protocol."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hdm import metrics
from hdm.data.mvtec import MVTecCategory, TestDataset
from hdm.inference import Detector


class EvaluationError(ValueError):
    """The data cannot be evaluated (e.g. no labelled test images)."""


@dataclass
class TestOutputs:
    labels: np.ndarray   # (N,) 0/1
    defects: list[str]   # defect type per image ("good" for normals)
    scores: np.ndarray   # (N,)
    masks: np.ndarray    # (N, S, S) ground truth
    maps: np.ndarray     # (N, S, S) predicted probabilities


def score_test_set(detector: Detector, data_dir: str | Path, batch_size: int = 16, progress: bool = True) -> TestOutputs:
    category = MVTecCategory(data_dir)
    samples = category.test_samples
    if not samples or len({s.label for s in samples}) < 2:
        raise EvaluationError(f"{data_dir}: evaluation needs test/good and at least one test/<defect> folder")
    dataset = TestDataset(samples, detector.image_size)
    scores, maps, masks = [], [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="eval", unit="batch", disable=not progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        out = detector.run(torch.stack([img for img, _, _ in items]))
        scores.append(out.pred_score.numpy())
        maps.append(out.anomaly_map[:, 0].numpy())
        masks.append(np.stack([m[0].numpy() for _, m, _ in items]))
    return TestOutputs(
        labels=np.array([s.label for s in samples]),
        defects=[s.defect for s in samples],
        scores=np.concatenate(scores),
        masks=np.concatenate(masks),
        maps=np.concatenate(maps),
    )


def summarize(outputs: TestOutputs, detector: Detector) -> dict[str, Any]:
    """The metrics dict `hdm eval --json` prints."""
    result = metrics.evaluate(outputs.labels, outputs.scores, outputs.masks, outputs.maps)
    cal = detector.calibration
    flagged = outputs.scores > cal.image_threshold
    good = outputs.labels == 0
    result.update(
        threshold=cal.image_threshold,
        pixel_threshold=cal.pixel_threshold,
        calibration=cal.method,
        # What the calibrated verdict does on this test set.
        false_alarm_rate=float(flagged[good].mean()),
        recall=float(flagged[~good].mean()),
        per_defect_image_auroc={
            d: metrics.image_auroc(outputs.labels[sel], outputs.scores[sel])
            for d in sorted(set(outputs.defects) - {"good"})
            for sel in [np.array([x in (d, "good") for x in outputs.defects])]
        },
        model_version=detector.version,
    )
    return result


def evaluate_run(run_dir: str | Path, data_dir: str | Path, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Load a run, score the test set of `data_dir`, and return the metrics with timing."""
    start = time.monotonic()
    detector = Detector.load(run_dir, device=device)
    outputs = score_test_set(detector, data_dir, progress=progress)
    result = summarize(outputs, detector)
    result["seconds"] = round(time.monotonic() - start, 2)
    return result
