"""Detector: loads a checkpoint, scores uint8 images of any size, applies the calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdm.calibration import Calibration
from hdm.checkpoint import CheckpointError, save_checkpoint
from hdm.config import HDMConfig
from hdm.inference import Detector
from hdm.models import HDMModel


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = HDMConfig.small(32)
    cal = Calibration(image_threshold=0.5, pixel_threshold=0.5, method="far", null_scores=tuple(np.linspace(0.4, 0.6, 21)))
    return save_checkpoint(tmp_path_factory.mktemp("run"), HDMModel(cfg), cfg, cal)


def test_predict_any_size_and_grayscale(run_dir):
    det = Detector.load(run_dir, device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 40, 3), dtype=np.uint8), rng.integers(0, 256, (20, 70), dtype=np.uint8)]
    preds = det.predict(images)
    assert det.image_size == 32 and len(det.version) == 12  # content hash when meta names no version
    assert len(preds) == 2
    for p in preds:
        assert p.anomaly_map.shape == (32, 32) and p.anomaly_map.dtype == np.float32
        assert 0.0 <= p.anomaly_map.min() <= p.anomaly_map.max() <= 1.0
        assert p.anomalous == (p.score > p.threshold)
        assert p.anomalous_area == pytest.approx(float((p.anomaly_map > p.pixel_threshold).mean()))
        assert p.probability == pytest.approx(float(det.calibration.probability(np.array([p.score]))[0]))


def test_scores_do_not_depend_on_batch_companions(run_dir):
    det = Detector.load(run_dir, device="cpu")
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    together = det.predict(batch)
    alone = det.predict(batch[2:3])
    assert alone[0].score == pytest.approx(together[2].score, abs=1e-3)


def test_load_rejects_a_non_checkpoint(tmp_path):
    with pytest.raises(CheckpointError):
        Detector.load(tmp_path, device="cpu")


def test_torchscript_trace_scores_like_eager_at_every_batch_size(run_dir):
    eager = Detector.load(run_dir, device="cpu", torchscript="off")
    traced = Detector.load(run_dir, device="cpu", torchscript="on")
    assert traced.traced and not eager.traced
    rng = np.random.default_rng(2)
    for batch in (1, 3, 5):  # the trace was made with 2 images
        images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        for a, b in zip(eager.predict(images), traced.predict(images), strict=True):
            assert b.score == pytest.approx(a.score, abs=1e-5)
            np.testing.assert_allclose(b.anomaly_map, a.anomaly_map, atol=1e-5)
            assert (a.anomalous, a.anomalous_area) == (b.anomalous, b.anomalous_area)


def test_torchscript_auto_traces_on_cpu_and_bad_choices_are_refused(run_dir):
    assert Detector.load(run_dir, device="cpu", torchscript="auto").traced
    with pytest.raises(ValueError, match="torchscript"):
        Detector.load(run_dir, device="cpu", torchscript="yes")  # type: ignore[arg-type]
