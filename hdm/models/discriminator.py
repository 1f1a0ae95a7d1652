"""DDM's discriminative network: a segmentation UNet on concat(x, x0_hat) giving a logit map."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class SegmentationUNet(nn.Module):
    """Encoder-decoder with skip connections; one 2x downsampling between consecutive levels."""

    def __init__(self, in_channels: int = 6, channels: tuple[int, ...] = (32, 64, 128, 256, 256), patch_size: int = 1) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.encoders = nn.ModuleList()
        c_prev = in_channels * patch_size**2
        for c in channels:
            self.encoders.append(ConvBlock(c_prev, c))
            c_prev = c
        self.decoders = nn.ModuleList(
            ConvBlock(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], patch_size**2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = F.pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x
        for i, enc in enumerate(self.encoders):
            if i:
                h = F.max_pool2d(h, 2)
            h = enc(h)
            skips.append(h)
        for dec, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = dec(torch.cat([h, skip], dim=1))
        logits = self.head(h)
        return F.pixel_shuffle(logits, self.patch_size) if self.patch_size > 1 else logits
