"""Calibration: uniform p-values under the null, thresholds meeting the target false-alarm rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hdm.calibration import Calibration, CalibrationError, far_threshold, fit_calibration


def test_p_values_are_uniform_on_fresh_null_data():
    rng = np.random.default_rng(0)
    cal = fit_calibration(rng.beta(2, 5, 2000), rng.random(1000))
    p = cal.p_values(rng.beta(2, 5, 3000))
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert p.min() > 0
    prob = cal.probability(np.array([0.0, 0.3, 0.99]))
    assert prob[0] < prob[1] < prob[2] and prob[2] > 0.99


@pytest.mark.parametrize("far", [0.01, 0.05, 0.2])
def test_threshold_meets_target_far(far):
    rng = np.random.default_rng(1)
    null = rng.normal(size=500)
    cal = fit_calibration(null, rng.random(100), target_far=far)
    assert cal.method == "far"
    assert (null > cal.image_threshold).mean() <= far
    assert (null > cal.image_threshold).mean() >= far - 2 / null.size  # not needlessly conservative
    fresh = rng.normal(size=20000)
    assert (fresh > cal.image_threshold).mean() == pytest.approx(far, abs=0.02 + far / 2)


def test_pixel_threshold_meets_pixel_far():
    rng = np.random.default_rng(2)
    pixels = rng.random((10, 32, 32))
    cal = fit_calibration(rng.random(20), pixels, pixel_target_far=0.01)
    assert (pixels > cal.pixel_threshold).mean() <= 0.01
    assert cal.pixel_threshold == pytest.approx(0.99, abs=0.01)


def test_labelled_anomalies_give_the_f1_optimal_threshold():
    normals = np.linspace(0.0, 0.5, 50)
    anomalies = np.linspace(0.6, 1.0, 20)
    cal = fit_calibration(normals, np.zeros(10), anomaly_scores=anomalies)
    assert cal.method == "f1"
    assert 0.5 < cal.image_threshold < 0.6  # separates them perfectly
    pixel_maps = np.r_[np.zeros(100), np.ones(10)]
    masks = np.r_[np.zeros(100), np.ones(10)]
    cal = fit_calibration(normals, np.full(100, 0.2), anomaly_pixels=(pixel_maps, masks))
    assert 0.2 < cal.pixel_threshold < 1.0


def test_round_trip_and_errors(tmp_path):
    cal = fit_calibration(np.arange(10) / 10, np.arange(100) / 100)
    cal.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == cal
    (tmp_path / "bad.json").write_text("{\"image_threshold\": 1}")
    with pytest.raises(CalibrationError):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(CalibrationError):
        far_threshold(np.array([]), 0.01)
