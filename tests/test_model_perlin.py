"""Perlin masks: deterministic from the seed, requested coverage, confined to the foreground."""

from __future__ import annotations

import numpy as np
import pytest

from hdm.perlin import perlin_mask, perlin_noise


def test_same_seed_same_mask_other_seed_other_mask():
    a = perlin_mask(64, np.random.default_rng(3), coverage=0.1)
    b = perlin_mask(64, np.random.default_rng(3), coverage=0.1)
    c = perlin_mask(64, np.random.default_rng(4), coverage=0.1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("coverage", [0.01, 0.05, 0.2, 0.4])
@pytest.mark.parametrize("local", [False, True])
def test_mask_hits_requested_coverage(coverage, local):
    for seed in range(5):
        m = perlin_mask(64, np.random.default_rng(seed), scale_range=(0, 4), coverage=coverage, local=local)
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert m.mean() == pytest.approx(coverage, abs=0.01 + 0.1 * coverage)


def test_finest_scale_on_a_small_image_still_gives_a_mask():
    # 32 periods across 32 px on both axes would sample the noise only at its zero lattice points.
    for seed in range(40):
        m = perlin_mask(32, np.random.default_rng(seed), scale_range=(5, 5), coverage=0.1)
        assert m.mean() == pytest.approx(0.1, abs=0.02)


def test_mask_stays_inside_the_region_and_covers_its_share():
    region = np.zeros((64, 64), dtype=bool)
    region[16:48, 8:40] = True
    for seed in range(5):
        m = perlin_mask(64, np.random.default_rng(seed), coverage=0.25, region=region)
        assert m[~region].sum() == 0
        assert m[region].mean() == pytest.approx(0.25, abs=0.04)


def test_noise_is_smooth_and_bounded_for_any_size():
    n = perlin_noise(50, (2, 4), np.random.default_rng(0))
    assert n.shape == (50, 50)
    assert np.abs(n).max() <= 1.5
    # Low-frequency noise: neighbouring pixels differ far less than the noise's range.
    assert np.abs(np.diff(n, axis=1)).mean() < 0.1 * (n.max() - n.min())
