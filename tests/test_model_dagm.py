"""DAGM: generated content appears only inside the mask; the rest of x0 is untouched."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hdm.config import HDMConfig
from hdm.dagm import AnomalyGenerator, refine, shuffled_patches
from hdm.models import HDMModel


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = HDMConfig.small(32)
    images = torch.rand(6, 3, 32, 32) * 1.6 - 0.8
    return cfg, images, HDMModel(cfg).denoiser


def _half_mask(n: int) -> torch.Tensor:
    mask = torch.zeros(n, 1, 32, 32)
    mask[:, :, 8:24, 4:20] = 1
    return mask


def test_refine_keeps_unmasked_pixels_and_changes_masked_ones(setup):
    cfg, images, denoiser = setup
    x0 = images[:3]
    mask = _half_mask(3)
    content = torch.zeros_like(x0)
    out = refine(denoiser, x0, content, mask, t_g=400, steps=3, tau=0.5, generator=torch.Generator().manual_seed(0))
    outside = mask.expand_as(x0) == 0
    assert torch.equal(out[outside], x0[outside])
    changed = (out - x0).abs()[~outside]
    assert changed.mean() > 0.05


def test_refine_is_reproducible_from_the_generator_and_tau_adds_variance(setup):
    cfg, images, denoiser = setup
    x0, mask, content = images[:2], _half_mask(2), images[2:4]
    run = lambda tau, seed: refine(denoiser, x0, content, mask, 500, 4, tau, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(0.5, 1), run(0.5, 1))
    spread = lambda tau: torch.stack([run(tau, s) for s in range(4)]).std(0)[mask.expand_as(x0) > 0].mean()  # noqa: E731
    assert spread(3.0) > spread(0.0)


@pytest.mark.parametrize("mode", ["crude", "diffusion"])
def test_generated_anomalies_differ_from_x0_only_inside_the_mask(setup, mode):
    cfg, images, denoiser = setup
    gen = AnomalyGenerator(cfg.dagm, images)
    rng = np.random.default_rng(0)
    idx = np.array([0, 1, 2, 3])
    if mode == "crude":
        x0, x_anom, mask = gen.crude(idx, rng)
    else:
        x0, x_anom, mask, _ = gen.diffusion(idx, denoiser, rng, torch.Generator().manual_seed(0))
    assert x_anom.shape == x0.shape and mask.shape == (4, 1, 32, 32)
    assert ((x_anom - x0).abs() * (1 - mask)).max() == 0
    assert ((x_anom - x0).abs() * mask).sum() > 0
    assert x_anom.min() >= -1 and x_anom.max() <= 1


def test_each_diffusion_made_anomaly_comes_with_the_cut_and_paste_it_was_refined_from(setup):
    cfg, images, denoiser = setup
    # One blend factor for all, so the crude draw and DAGM's draw blend alike.
    gen = AnomalyGenerator(replace(cfg.dagm, beta_range=(0.3, 0.3)), images)
    idx = np.array([0, 1, 2])
    _, pasted, pasted_mask = gen.crude(idx, np.random.default_rng(5))
    made = gen.diffusion(idx, denoiser, np.random.default_rng(5), torch.Generator().manual_seed(0))
    assert torch.equal(made.mask, pasted_mask) and torch.allclose(made.source, pasted)
    assert not torch.allclose(made.x_anom, made.source)  # the refinement changed the content


def test_dagm_refines_content_from_its_own_sources_while_crude_anomalies_keep_theirs(setup):
    cfg, _, denoiser = setup
    # One flat grey level per image: shuffled patches of another image are flat, Perlin noise is not.
    levels = torch.linspace(-0.6, 0.6, 6)
    flat = levels.view(6, 1, 1, 1).expand(6, 3, 32, 32).contiguous()
    dagm = replace(cfg.dagm, source_weights=(0.0, 0.0, 1.0), diffusion_source_weights=(1.0, 0.0, 0.0),
                   beta_range=(0.0, 0.0), coverage_range=(0.1, 0.2))
    gen = AnomalyGenerator(dagm, flat)
    idx = np.arange(4)
    made = gen.diffusion(idx, denoiser, np.random.default_rng(3), torch.Generator().manual_seed(0))
    for source, mask in zip(made.source, made.mask, strict=True):
        inside = source[:, mask[0] > 0]
        assert torch.allclose(inside, inside[0, 0]) and torch.isclose(levels, inside[0, 0]).any()
    _, crude, mask = gen.crude(idx, np.random.default_rng(3))
    assert all(x[:, m[0] > 0].std() > 0.05 for x, m in zip(crude, mask, strict=True))


def test_grey_data_gets_grey_anomalies(setup):
    cfg, images, denoiser = setup
    grey = images.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    gen = AnomalyGenerator(cfg.dagm, grey, grayscale=True)
    for x_anom in (gen.crude(np.arange(6), np.random.default_rng(1))[1],
                   gen.diffusion(np.arange(2), denoiser, np.random.default_rng(1), torch.Generator().manual_seed(0)).x_anom):
        assert torch.allclose(x_anom[:, 0], x_anom[:, 1]) and torch.allclose(x_anom[:, 1], x_anom[:, 2])


def test_masks_respect_the_foreground():
    cfg = HDMConfig.small(32)
    fg = np.zeros((2, 32, 32), dtype=bool)
    fg[:, 10:30, 5:25] = True
    gen = AnomalyGenerator(cfg.dagm, torch.zeros(2, 3, 32, 32), foreground=fg)
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert gen.mask(1, rng)[0][~torch.from_numpy(fg[1])].sum() == 0


def test_shuffled_patches_rearranges_the_same_pixels():
    img = torch.arange(3 * 32 * 32, dtype=torch.float32).view(3, 32, 32)
    out = shuffled_patches(img, np.random.default_rng(2))
    assert not torch.equal(out, img)
    assert torch.equal(out.flatten().sort().values, img.flatten().sort().values)
