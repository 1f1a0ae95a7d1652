"""DAGM: anomaly generation from normal images.

A Perlin mask M marks where the anomaly goes. The content starts crude (shuffled patches
of another training image, a colour/intensity jitter of the image itself, or Perlin-coloured
noise). In "diffusion" mode the crude composite is forward-noised to t_g and brought back
with a few reverse steps of the SHARED denoiser whose variance is inflated by (1 + tau),
re-imposing the unmasked pixels of x0 after each step (inpainting), so the content takes on
the product's own look while staying off the normal manifold. Finally
x_anom = M * ((1 - beta) * x_gen + beta * x0) + (1 - M) * x0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from hdm.config import DAGMConfig
from hdm.models.denoiser import Denoiser
from hdm.models.scoring import gaussian_blur
from hdm.perlin import fractal_noise, perlin_mask

SOURCES = ("shuffle", "jitter", "noise")


class Generated(NamedTuple):
    """Diffusion-made anomalies, each with the cut-and-paste anomaly it was refined from."""

    x0: torch.Tensor      # (n,3,S,S) the normal images
    x_anom: torch.Tensor  # (n,3,S,S) the anomalies
    mask: torch.Tensor    # (n,1,S,S)
    source: torch.Tensor  # (n,3,S,S) the crude composite with the same mask, content and beta


def shuffled_patches(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """`image` (3, S, S) cut into a g x g grid (g in 2, 4, 8) whose tiles are permuted and flipped."""
    size = image.shape[-1]
    g = int(rng.choice([2, 4, 8]))
    tile = size // g
    tiles = [image[:, i * tile : (i + 1) * tile, j * tile : (j + 1) * tile] for i in range(g) for j in range(g)]
    order = rng.permutation(len(tiles))
    out = image.clone()
    for k, src in enumerate(order):
        t = tiles[src]
        if rng.random() < 0.5:
            t = t.flip(-1)
        if rng.random() < 0.5:
            t = t.flip(-2)
        i, j = divmod(k, g)
        out[:, i * tile : (i + 1) * tile, j * tile : (j + 1) * tile] = t
    return out


def jitter(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Intensity/colour change of `image` (3, S, S): brightness, contrast, channel gains, maybe blur or inversion."""
    mean = image.mean()
    out = (image - mean) * float(rng.uniform(0.4, 1.8)) + mean + float(rng.uniform(-0.5, 0.5))
    gains = torch.from_numpy(rng.uniform(0.7, 1.3, 3).astype(np.float32)).to(image.device)
    out = out * gains.view(3, 1, 1)
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5, 7]))
        out = F.avg_pool2d(out[None], k, stride=1, padding=k // 2, count_include_pad=False)[0]
    if rng.random() < 0.2:
        out = -out
    return out.clamp(-1, 1)


def perlin_colour(size: int, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """A (3, S, S) field: a random base colour modulated by Perlin noise per channel."""
    base = rng.uniform(-1, 1, 3)
    amp = rng.uniform(0.2, 1.0)
    res = 2 ** int(rng.integers(1, 5))
    fields = np.stack([fractal_noise(size, (res, res), 3, rng) for _ in range(3)])
    out = base[:, None, None] + amp * fields
    return torch.from_numpy(out.astype(np.float32)).clamp(-1, 1).to(device)


def _probabilities(weights: tuple[float, float, float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


class AnomalyGenerator:
    """Draws masks and crude content, and refines content with the denoiser (DAGM)."""

    def __init__(
        self,
        cfg: DAGMConfig,
        images: torch.Tensor,
        foreground: np.ndarray | None = None,
        grayscale: bool = False,
    ) -> None:
        self.cfg = cfg
        self.images = images            # (N, 3, S, S) normal training images in [-1, 1]
        self.foreground = foreground    # (N, S, S) bool, or None for no restriction
        self.grayscale = grayscale      # sources stay grey on grey data, else colour alone gives anomalies away
        self.crude_p = _probabilities(cfg.source_weights)
        self.diffusion_p = _probabilities(cfg.diffusion_source_weights or cfg.source_weights)

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def mask(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        lo, hi = self.cfg.coverage_range
        region = None if self.foreground is None else self.foreground[index]
        m = perlin_mask(
            self.size,
            rng,
            scale_range=tuple(self.cfg.perlin_scale_range),
            coverage=float(rng.uniform(lo, hi)),
            region=region,
            local=bool(rng.random() < self.cfg.local_mask_prob),
        )
        return torch.from_numpy(m)[None].to(self.images.device)

    def crude_content(self, index: int, rng: np.random.Generator, source_p: np.ndarray) -> torch.Tensor:
        """Crude anomalous content (3, S, S) for training image `index`, its source drawn from source_p."""
        kind = SOURCES[int(rng.choice(len(SOURCES), p=source_p))]
        if kind == "shuffle":
            other = int(rng.integers(len(self.images)))
            content = shuffled_patches(self.images[other], rng)
        elif kind == "jitter":
            content = jitter(self.images[index], rng)
        else:
            content = perlin_colour(self.size, rng, self.images.device)
        if self.grayscale:
            content = content.mean(dim=0, keepdim=True).expand(3, -1, -1)
        return content

    def betas(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        lo, hi = self.cfg.beta_range
        return torch.from_numpy(rng.uniform(lo, hi, (n, 1, 1, 1)).astype(np.float32)).to(self.images.device)

    @staticmethod
    def blend(x0: torch.Tensor, content: torch.Tensor, mask: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return mask * ((1 - beta) * content + beta * x0) + (1 - mask) * x0

    def draw(
        self, indices: np.ndarray, rng: np.random.Generator, source_p: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each training index: x0 (n,3,S,S), crude content (n,3,S,S) and mask (n,1,S,S)."""
        x0 = self.images[torch.as_tensor(indices)]
        content = torch.stack([self.crude_content(int(i), rng, source_p) for i in indices])
        masks = torch.stack([self.mask(int(i), rng) for i in indices])
        return x0, content, masks

    def crude(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cut-and-paste anomalies: (x0, x_anom, mask)."""
        x0, content, masks = self.draw(indices, rng, self.crude_p)
        return x0, self.blend(x0, content, masks, self.betas(len(indices), rng)), masks

    @torch.no_grad()
    def diffusion(
        self,
        indices: np.ndarray,
        denoiser: Denoiser,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> Generated:
        """Denoiser-made anomalies, one t_g ~ U(t_range) for the call."""
        x0, content, masks = self.draw(indices, rng, self.diffusion_p)
        x_gen = refine(denoiser, x0, content, masks, int(rng.integers(self.cfg.t_range[0], self.cfg.t_range[1] + 1)),
                       self.cfg.reverse_steps, self.cfg.tau, generator)
        sigma = self.cfg.keep_texture_sigma * self.size / 128
        if sigma > 0:
            # Only the low-frequency part of the change: the product keeps its own fine texture,
            # so an anomaly cannot be told apart by being smoother than the material around it.
            x_gen = x0 + gaussian_blur(x_gen - x0, sigma)
        if self.grayscale:
            x_gen = x_gen.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        beta = self.betas(len(indices), rng)
        return Generated(x0, self.blend(x0, x_gen, masks, beta), masks, self.blend(x0, content, masks, beta))


def refine(
    denoiser: Denoiser,
    x0: torch.Tensor,
    content: torch.Tensor,
    mask: torch.Tensor,
    t_g: int,
    steps: int,
    tau: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Inpaint the masked region of x0, starting from the crude content noised to t_g.

    Each reverse step has its noise variance inflated by (1 + tau); after each step the
    unmasked pixels are replaced by x0 noised to the new level, so only the masked region
    is generated and it fits its surroundings. Returns x_gen with x_gen == x0 outside M.
    """
    device = x0.device

    def randn(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)

    def known(t: int) -> torch.Tensor:
        return denoiser.add_noise(x0, randn(x0.shape), torch.full((x0.shape[0],), t, device=device, dtype=torch.long))

    composite = mask * content + (1 - mask) * x0
    t0 = torch.full((x0.shape[0],), t_g, device=device, dtype=torch.long)
    x_t = denoiser.add_noise(composite, randn(x0.shape), t0)
    x_est = denoiser.reverse(
        x_t,
        t_g,
        steps,
        eta=1.0,
        variance_scale=math.sqrt(1.0 + tau),
        generator=generator,
        hook=lambda sample, t: mask * sample + (1 - mask) * known(t),
    )
    return mask * x_est.float().clamp(-1, 1) + (1 - mask) * x0
