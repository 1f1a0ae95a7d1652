"""POM: refined targets, rejection of invisible anomalies, difficulty weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdm import pom
from hdm.batches import BatchBuilder
from hdm.config import HDMConfig, POMConfig
from hdm.dagm import Generated

CFG = POMConfig()


def _pair(delta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x0 = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    return x0, x0 + delta * mask, mask


def test_refined_target_follows_the_change_inside_the_mask():
    x0, x_anom, mask = _pair(0.5)
    x_anom[..., 8:24, 8:16] = 0  # left half of the masked square unchanged
    target = pom.refined_target(mask, x_anom, x0, CFG)
    assert target.max() <= 1 and (target <= mask).all()
    assert target[..., 10:22, 18:22].min() > 0.9   # clearly changed
    assert target[..., 10:22, 8:13].max() < 0.05   # unchanged although masked
    assert torch.equal(pom.refined_target(mask, x_anom, x0, POMConfig(enabled=False)), mask)


def test_invisible_candidates_are_rejected_and_visible_ones_kept():
    faint = _pair(0.005)
    clear = _pair(0.4)
    x0 = torch.cat([faint[0], clear[0]])
    x_anom = torch.cat([faint[1], clear[1]])
    mask = torch.cat([faint[2], clear[2]])
    target = pom.refined_target(mask, x_anom, x0, CFG)
    assert pom.visible(mask, target, x_anom, x0, CFG).tolist() == [False, True]
    # Without POM every masked candidate passes, invisible or not.
    off = POMConfig(enabled=False)
    assert pom.visible(mask, mask, x_anom, x0, off).tolist() == [True, True]


def test_builder_resamples_until_candidates_are_visible():
    cfg = HDMConfig.small(32).with_overrides({"dagm": {"beta_range": [0.0, 0.95]}, "pom": {"max_tries": 6}})
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    builder = BatchBuilder(cfg, images, None, seed=0)
    x, mask, target = builder.crude(16)
    assert x.shape[0] >= 12  # almost all slots filled after resampling
    for i in range(x.shape[0]):
        assert target[i].sum() / mask[i].sum() >= cfg.pom.min_changed_fraction


def test_hard_anomalies_weigh_more_and_normals_stay_neutral():
    target = torch.zeros(3, 1, 8, 8)
    target[:2, :, 2:6, 2:6] = 1
    prob = torch.zeros(3, 1, 8, 8)
    prob[0, :, 2:6, 2:6] = 0.9  # found
    prob[1, :, 2:6, 2:6] = 0.1  # missed
    w = pom.difficulty_weights(prob, target, POMConfig(difficulty_gamma=1.0))
    assert w[1] > w[0] > w[2] * 0.99
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    assert torch.equal(pom.difficulty_weights(prob, target, POMConfig(enabled=False)), torch.ones(3))


def test_diffusion_made_anomalies_can_have_a_difficulty_gamma_of_their_own():
    target = torch.zeros(3, 1, 8, 8)
    target[:2, :, 2:6, 2:6] = 1
    prob = torch.full((3, 1, 8, 8), 0.1)  # both anomalies missed; row 2 is a normal
    cfg = POMConfig(difficulty_gamma=1.0, diffusion_difficulty_gamma=0.0)
    w = pom.difficulty_weights(prob, target, cfg, n_diffusion=1)
    assert torch.isclose(w[0], w[2]) and w[1] > 1.5 * w[0]  # the diffusion-made one weighs as a normal
    same = pom.difficulty_weights(prob, target, POMConfig(difficulty_gamma=1.0), n_diffusion=1)
    assert torch.isclose(same[0], same[1])  # None: the common gamma


def test_diffusion_bank_is_refreshed_every_n_steps_and_whenever_empty():
    from hdm.models.denoiser import Denoiser

    cfg = HDMConfig.small(32).with_overrides({"dagm": {"bank_refresh_every": 3}})
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    builder = BatchBuilder(cfg, images, None, seed=0)
    refreshed = []
    builder.refresh_bank = lambda denoiser: refreshed.append(True)  # count calls, skip the generation
    denoiser = Denoiser(cfg)
    builder.next(denoiser, 5)
    assert refreshed == [True]  # an empty bank (a resumed run) is filled at once, off schedule
    builder.bank.add(images[:1], torch.zeros(1, 1, 32, 32))
    refreshed.clear()
    for step in range(7):
        builder.next(denoiser, step)
    assert len(refreshed) == 3  # steps 0, 3 and 6


def test_the_bank_never_reshuffles_the_batches_so_the_paste_ablation_sees_the_same_ones():
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    full = BatchBuilder(HDMConfig.small(32), images, None, seed=3)
    paste = BatchBuilder(HDMConfig.small(32).with_overrides({"dagm": {"mode": "paste"}}), images, None, seed=3)
    made = []

    def diffusion(idx, denoiser, rng, generator):  # a stand-in for DAGM whose candidates POM often rejects
        x0 = images[torch.as_tensor(idx)]
        mask = torch.zeros(len(idx), 1, 32, 32)
        mask[..., 8:20, 8:20] = 1
        made.append(rng.random() < 0.5)  # visible or not, at random from the bank's stream
        x_anom = (x0 + (0.5 if made[-1] else 0.0) * mask).clamp(-1, 1)
        return Generated(x0, x_anom, mask, x_anom)

    full.anomalies.diffusion = diffusion
    took_a_slot = 0
    for step in range(24):
        a, b = full.next(None, step), paste.next(None, step)
        assert torch.equal(a.x0, b.x0)
        differs = (a.x != b.x).flatten(1).any(1)
        assert not differs[1:].any()  # only the slot DAGM's anomaly took, whatever the bank did before
        took_a_slot += int(differs[0])
        assert a.n_diffusion == int(differs[0]) and b.n_diffusion == 0  # the weights know which row is DAGM's
    assert 0 < sum(made) < len(made) and took_a_slot > 12


def test_extra_placement_adds_dagms_anomalies_to_exactly_the_paste_ablations_batch():
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    full = BatchBuilder(HDMConfig.small(32).with_overrides({"dagm": {"placement": "extra"}}), images, None, seed=3)
    paste = BatchBuilder(HDMConfig.small(32).with_overrides({"dagm": {"mode": "paste"}}), images, None, seed=3)

    def diffusion(idx, denoiser, rng, generator):
        x0 = images[torch.as_tensor(idx)]
        mask = torch.zeros(len(idx), 1, 32, 32)
        mask[..., 8:20, 8:20] = 1
        return Generated(x0, (x0 + 0.5 * mask).clamp(-1, 1), mask, x0)

    full.anomalies.diffusion = diffusion
    for step in range(8):
        a, b = full.next(None, step), paste.next(None, step)
        assert a.n_diffusion == 1 and a.x.shape[0] == b.x.shape[0] + 1  # 0.25 of 4 anomalies, on top of 8
        assert torch.equal(a.x[1:], b.x) and torch.equal(a.target[1:], b.target) and torch.equal(a.x0, b.x0)
        assert a.target[0].sum() > 0  # the added row is an anomaly with its refined target


def test_a_fractional_diffusion_share_is_right_on_average():
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    builder = BatchBuilder(HDMConfig.small(32).with_overrides({"dagm": {"diffusion_fraction": 0.375}}), images, None, seed=0)
    counts = [builder.diffusion_count(4) for _ in range(4000)]  # 1.5 of 4 anomalies
    assert set(counts) == {1, 2} and np.mean(counts) == pytest.approx(1.5, abs=0.04)
    assert BatchBuilder(HDMConfig.small(32), images, None, seed=0).diffusion_count(4) == 1  # 0.25 of 4: exact, no draw
    paste = BatchBuilder(HDMConfig.small(32).with_overrides({"dagm": {"mode": "paste"}}), images, None, seed=0)
    assert paste.diffusion_count(4) == 0


def test_diffusion_made_candidates_face_their_own_visibility_bar():
    cfg = HDMConfig.small(32).with_overrides({"pom": {"min_mean_change": 0.03, "diffusion_min_mean_change": 0.08}})
    images = torch.zeros(8, 3, 32, 32)
    x0, x_anom, mask = _pair(0.05)  # visible by the crude bar, too faint by the diffusion one
    target = pom.refined_target(mask, x_anom, x0, cfg.pom)
    assert pom.visible(mask, target, x_anom, x0, cfg.pom).tolist() == [True]
    assert pom.visible(mask, target, x_anom, x0, cfg.pom, cfg.pom.diffusion_min_mean_change).tolist() == [False]

    def build(overrides):
        builder = BatchBuilder(cfg.with_overrides(overrides), images, None, seed=0)
        builder.anomalies.diffusion = lambda idx, denoiser, rng, generator: Generated(x0, x_anom, mask, x_anom)
        builder.refresh_bank(denoiser=None)
        return builder

    assert len(build({}).bank) == 0
    assert len(build({"pom": {"diffusion_min_mean_change": None}}).bank) == 1  # None: the crude bar


def test_a_diffusion_made_change_within_the_denoisers_own_error_loses_its_target():
    x0, x_anom, mask = _pair(0.1)
    grain = torch.zeros(1, 3, 32, 32)
    grain[..., :, 16:] = 0.3  # the right half varies more than the denoiser can reproduce

    class Smoother:
        def reconstruct(self, x):
            return x + grain  # reproduces the left half exactly, misses the right half by 0.3

    cfg = HDMConfig.small(32).with_overrides({"pom": {"diffusion_noise_floor": True, "min_changed_fraction": 0.0}})
    builder = BatchBuilder(cfg, torch.zeros(8, 3, 32, 32), None, seed=0)
    builder.anomalies.diffusion = lambda idx, denoiser, rng, generator: Generated(x0, x_anom, mask, x_anom)
    builder.refresh_bank(denoiser=Smoother())
    (_, target), = builder.bank.items
    plain, grained = target[0, 10:22, 9:14], target[0, 10:22, 19:23]
    assert plain.min() > 0.7     # 0.1 against a scale of 0.06 and no floor
    assert grained.max() < 0.15  # the same change under a floor of 0.3
    # Off (the default), the floor is not consulted: both halves get the plain target.
    off = BatchBuilder(cfg.with_overrides({"pom": {"diffusion_noise_floor": False}}), torch.zeros(8, 3, 32, 32), None, seed=0)
    off.anomalies.diffusion = builder.anomalies.diffusion
    off.refresh_bank(denoiser=None)
    assert torch.allclose(off.bank.items[0][1][0, 10:22, 19:23], plain[:, :4])


def test_diffusion_made_candidates_the_reconstruction_leaves_alone_are_rejected():
    x0, x_anom, mask = _pair(0.3)
    x_anom = torch.cat([x_anom, x_anom])
    mask, x0 = torch.cat([mask, mask]), torch.cat([x0, x0])

    class Repairs:
        """Repairs the first candidate's anomaly (as the denoiser does a real defect), not the second's."""

        def reconstruct(self, x):
            out = x + 0.05  # the same error everywhere, as on normal pixels
            out[0] = out[0] - 0.3 * mask[0]
            return out

    assert pom.revealed(mask, x_anom, Repairs().reconstruct(x_anom), 1.4).tolist() == [True, False]

    def bank_size(ratio):
        cfg = HDMConfig.small(32).with_overrides({"pom": {"diffusion_min_repair_ratio": ratio}})
        builder = BatchBuilder(cfg, torch.zeros(8, 3, 32, 32), None, seed=0)
        builder.anomalies.diffusion = lambda idx, denoiser, rng, generator: Generated(x0, x_anom, mask, x_anom)
        builder.refresh_bank(denoiser=Repairs())
        return len(builder.bank)

    assert bank_size(1.4) == 1
    assert bank_size(None) == 2  # off (the default): both are visible, both kept
