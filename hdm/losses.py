"""Discriminator losses (focal + smooth L1 against the refined target), per sample so POM can weight them."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hdm.config import LossConfig


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """Per-sample mean focal loss (Lin et al. 2017) on (B,1,S,S) logits; soft targets allowed.

    For a hard target y: -alpha_t * (1 - p_t)^gamma * log(p_t), with p_t = p if y = 1 else 1 - p and
    alpha_t = alpha if y = 1 else 1 - alpha. A soft target interpolates both terms.
    """
    logits = logits.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t).pow(gamma) * ce).flatten(1).mean(1)


def smooth_l1(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean smooth-L1 between the probability map and the target."""
    return F.smooth_l1_loss(torch.sigmoid(logits.float()), target, reduction="none").flatten(1).mean(1)


def discriminator_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """sum_b w_b (lambda_focal * focal_b + lambda_l1 * l1_b) / B."""
    per_sample = cfg.lambda_focal * focal_loss(logits, target, cfg.focal_gamma, cfg.focal_alpha)
    per_sample = per_sample + cfg.lambda_l1 * smooth_l1(logits, target)
    return (weights * per_sample).mean()
