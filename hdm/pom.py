"""POM on the generation side: which generated samples train the model, and how much.

- refined target M* = M * P_change, where P_change is a soft probability that a pixel
  really changed, from the locally averaged |x_anom - x0| (optionally measured against the
  denoiser's own reconstruction error there, a noise floor, for diffusion-made anomalies);
- candidates whose refined target keeps too little of the mask, or whose mean change is
  too small, are rejected (an invisible "anomaly" is label noise) and resampled;
  diffusion-made ones may also have to be revealed by DDM's own reconstruction;
- accepted samples are weighted by difficulty, 1 + gamma * (1 - p_detected), with
  p_detected the current discriminator's mean probability over the refined target
  (diffusion-made ones may have a gamma of their own).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hdm.config import POMConfig


def change_magnitude(x_anom: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """(B,1,S,S) channel-mean |x_anom - x0|, averaged over 3x3 neighbourhoods against single-pixel noise."""
    d = (x_anom - x0).abs().mean(dim=1, keepdim=True)
    return F.avg_pool2d(d, 3, stride=1, padding=1, count_include_pad=False)


def change_probability(x_anom: torch.Tensor, x0: torch.Tensor, scale: float, floor: torch.Tensor | None = None) -> torch.Tensor:
    """P_change = d^2 / (d^2 + scale^2 + floor^2): 0.5 at d = scale (no floor), near 1 for clear changes.

    `floor` (B,1,S,S) is the change the denoiser itself makes to the normal image there: a
    change no larger than that is one the DDM cannot tell from the material's own variation.
    """
    d2 = change_magnitude(x_anom, x0).square()
    denominator = d2 + scale**2 if floor is None else d2 + scale**2 + floor.square()
    return d2 / denominator


def refined_target(
    mask: torch.Tensor, x_anom: torch.Tensor, x0: torch.Tensor, cfg: POMConfig, floor: torch.Tensor | None = None
) -> torch.Tensor:
    """M* = M * P_change when POM is on; the raw mask otherwise."""
    if not cfg.enabled:
        return mask
    return mask * change_probability(x_anom, x0, cfg.change_scale, floor)


def visible(
    mask: torch.Tensor, target: torch.Tensor, x_anom: torch.Tensor, x0: torch.Tensor, cfg: POMConfig, min_mean_change: float | None = None
) -> torch.Tensor:
    """(B,) bool: does each candidate change enough of its mask by enough to be a real anomaly?

    `min_mean_change` overrides cfg.min_mean_change (diffusion-made candidates have their own bar).
    """
    area = mask.flatten(1).sum(1)
    if not cfg.enabled:
        return area > 0
    kept = target.flatten(1).sum(1) / area.clamp_min(1)
    mean_change = (change_magnitude(x_anom, x0) * mask).flatten(1).sum(1) / area.clamp_min(1)
    return (area > 0) & (kept >= cfg.min_changed_fraction) & (mean_change >= (cfg.min_mean_change if min_mean_change is None else min_mean_change))


def repair_ratio(mask: torch.Tensor, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """(B,) how much DDM's reconstruction changes each image inside its mask, over outside it.

    DDM finds a real defect because the denoiser, trained on normal images, repairs it: on
    magnetic tile the reconstruction moves defect pixels 1.85x as much as the rest of the
    image (median). An anomaly the denoiser leaves alone (its own generated content often is
    one, 0.96x) gives D nothing in concat(x, x0_hat) to go by, so it can only learn it by
    appearance.
    """
    diff = change_magnitude(reconstruction, x)
    inside = (diff * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    outside = (diff * (1 - mask)).flatten(1).sum(1) / (1 - mask).flatten(1).sum(1).clamp_min(1)
    return inside / outside.clamp_min(1e-6)


def revealed(mask: torch.Tensor, x_anom: torch.Tensor, reconstruction: torch.Tensor, min_ratio: float) -> torch.Tensor:
    """(B,) bool: is each candidate's repair ratio at least `min_ratio` (and its mask non-empty)?"""
    return (mask.flatten(1).sum(1) > 0) & (repair_ratio(mask, x_anom, reconstruction) >= min_ratio)


def difficulty_weights(prob: torch.Tensor, target: torch.Tensor, cfg: POMConfig, n_diffusion: int = 0) -> torch.Tensor:
    """(B,) weights normalised to mean 1; anomalies the discriminator misses count more.

    The first n_diffusion rows are diffusion-made and use cfg.diffusion_difficulty_gamma.
    """
    if not cfg.enabled:
        return torch.ones(prob.shape[0], device=prob.device)
    mass = target.flatten(1).sum(1)
    detected = (prob.detach() * target).flatten(1).sum(1) / mass.clamp_min(1e-6)
    gamma = torch.full_like(mass, cfg.difficulty_gamma)
    if cfg.diffusion_difficulty_gamma is not None:
        gamma[:n_diffusion] = cfg.diffusion_difficulty_gamma
    weights = torch.where(mass > 0, 1 + gamma * (1 - detected), torch.ones_like(mass))
    return weights / weights.mean()
