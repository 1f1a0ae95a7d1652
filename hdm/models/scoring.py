"""From a pixel map to what a user sees: Gaussian-smoothed map and a top-k image score."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def separable_blur(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur (N, 1, H, W) maps with a 1-D kernel along both axes, replicating the borders."""
    pad = kernel.numel() // 2
    out = F.conv2d(F.pad(maps, (pad, pad, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, pad, pad), mode="replicate"), kernel.view(1, 1, -1, 1))


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) images, channel by channel."""
    b, c, h, w = images.shape
    kernel = gaussian_kernel1d(sigma).to(images.device)
    return separable_blur(images.reshape(b * c, 1, h, w), kernel).reshape(b, c, h, w)


class MapScorer(nn.Module):
    """Smooths (B,1,H,W) maps with a separable Gaussian and scores each by its top-k mean."""

    def __init__(self, sigma: float, top_k_fraction: float) -> None:
        super().__init__()
        self.top_k_fraction = top_k_fraction
        self.register_buffer("kernel", gaussian_kernel1d(sigma) if sigma > 0 else torch.ones(1), persistent=False)

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(maps.device.type, enabled=False):  # keep fp32 resolution of the scores
            return self._smooth(maps.float())

    def _smooth(self, maps: torch.Tensor) -> torch.Tensor:
        return maps if self.kernel.numel() == 1 else separable_blur(maps, self.kernel)

    def score(self, maps: torch.Tensor) -> torch.Tensor:
        flat = maps.flatten(1)
        k = max(1, round(self.top_k_fraction * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(dim=1)
