"""HDMModel: the denoiser and discriminator together; in eval mode x -> (image score, anomaly map)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from hdm.config import HDMConfig
from hdm.models.denoiser import Denoiser
from hdm.models.discriminator import SegmentationUNet
from hdm.models.scoring import MapScorer


class InferenceOutput(NamedTuple):
    pred_score: torch.Tensor   # (B,) image score in [0, 1]
    anomaly_map: torch.Tensor  # (B, 1, S, S) pixel anomaly probabilities


class HDMModel(nn.Module):
    """DDM at inference: reconstruct x with the denoiser, localize differences with D.

    Training logic lives in hdm.training; this module only defines the forward computation.
    """

    def __init__(self, cfg: HDMConfig) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.score_mode = cfg.score.mode
        self.denoiser = Denoiser(cfg)
        self.discriminator = SegmentationUNet(6, cfg.discriminator.channels, cfg.discriminator.patch_size)
        sigma = cfg.score.smoothing_sigma * cfg.image_size / 256
        self.scorer = MapScorer(sigma, cfg.score.top_k_fraction)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.denoiser.reconstruct(x)

    def segment(self, x: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        """D's logit map (B,1,S,S) for images x and their reconstructions."""
        return self.discriminator(torch.cat([x, x0_hat], dim=1))

    def pixel_map(self, x: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
        """Unsmoothed per-pixel anomaly probabilities in [0, 1]."""
        if self.score_mode == "reconstruction":
            # |x - x0_hat| is at most 2 per channel in [-1, 1] units.
            return ((x.float() - x0_hat.float()).abs().mean(dim=1, keepdim=True) / 2).clamp(0, 1)
        # fp32 before the sigmoid: bf16 probabilities would tie scores and cost AUROC.
        return torch.sigmoid(self.segment(x, x0_hat).float())

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"expected (B, 3, {self.image_size}, {self.image_size}) input, got {tuple(x.shape)}")

    def anomaly_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Smoothed pixel anomaly probabilities (B,1,S,S): all of the network work, shape checks aside."""
        return self.scorer.smooth(self.pixel_map(x, self.reconstruct(x)))

    def forward(self, x: torch.Tensor) -> InferenceOutput:
        self.check_input(x)
        maps = self.anomaly_maps(x)
        return InferenceOutput(pred_score=self.scorer.score(maps), anomaly_map=maps)
