"""Losses against reference formulas."""

from __future__ import annotations

import math

import pytest
import torch

from hdm.config import LossConfig
from hdm.losses import discriminator_loss, focal_loss, smooth_l1


def _reference_focal(logit: float, y: int, gamma: float, alpha: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    if y == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.75), (0.0, 0.5), (1.0, 0.25)])
def test_focal_matches_lin_et_al_on_hard_labels(gamma, alpha):
    logits = torch.tensor([-3.0, -0.5, 0.2, 2.5]).view(1, 1, 2, 2)
    labels = torch.tensor([1, 0, 1, 0]).view(1, 1, 2, 2).float()
    expected = sum(_reference_focal(l, int(y), gamma, alpha) for l, y in zip(logits.flatten().tolist(), labels.flatten().tolist(), strict=True)) / 4
    assert focal_loss(logits, labels, gamma, alpha).item() == pytest.approx(expected, rel=1e-5)


def test_focal_down_weights_easy_pixels():
    easy = focal_loss(torch.full((1, 1, 2, 2), -4.0), torch.zeros(1, 1, 2, 2), 2.0, 0.5)
    hard = focal_loss(torch.full((1, 1, 2, 2), 1.0), torch.zeros(1, 1, 2, 2), 2.0, 0.5)
    bce_ratio = math.log(1 + math.exp(1.0)) / math.log(1 + math.exp(-4.0))
    assert hard / easy > bce_ratio  # more than plain cross-entropy would


def test_smooth_l1_and_weighting_per_sample():
    logits = torch.zeros(2, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    assert smooth_l1(logits, target).tolist() == pytest.approx([0.125, 0.125])  # 0.5 * 0.5^2
    cfg = LossConfig(lambda_focal=0.0, lambda_l1=1.0)
    weighted = discriminator_loss(logits, target, torch.tensor([0.0, 2.0]), cfg)
    assert weighted.item() == pytest.approx(0.125)
