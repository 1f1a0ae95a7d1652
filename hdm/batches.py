"""Training batches for the joint phase: normal images, DAGM anomalies, POM-refined targets.

Diffusion-made anomalies cost `reverse_steps` denoiser passes each, so they are kept in a
bank refreshed with the current denoiser a few samples per step (DAGMConfig explains the
trade-off); crude anomalies are cheap and made fresh for every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hdm import pom
from hdm.config import HDMConfig
from hdm.dagm import AnomalyGenerator
from hdm.models.denoiser import Denoiser


@dataclass
class TrainingBatch:
    x0: torch.Tensor      # (B,3,S,S) normal images (the denoiser trains on these)
    x: torch.Tensor       # (B,3,S,S) what D sees: some of x0 replaced by anomalies
    target: torch.Tensor  # (B,1,S,S) D's target: M* with POM, the mask M without (0 for normals)


class AnomalyBank:
    """A ring buffer of accepted diffusion-made anomalies (x_anom, target)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.next = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, x: torch.Tensor, target: torch.Tensor) -> None:
        for item in zip(x, target, strict=True):
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                self.items[self.next] = item
            self.next = (self.next + 1) % self.capacity

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.items or n <= 0:
            return None
        picks = rng.choice(len(self.items), size=min(n, len(self.items)), replace=False)
        xs, targets = zip(*(self.items[int(i)] for i in picks), strict=True)
        return torch.stack(xs), torch.stack(targets)


class BatchBuilder:
    """Assembles each joint-phase batch: B normals, a share of them turned into anomalies."""

    def __init__(
        self,
        cfg: HDMConfig,
        images: torch.Tensor,
        foreground: np.ndarray | None,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> None:
        self.cfg = cfg
        self.images = images
        self.rng = rng
        self.generator = generator
        grayscale = bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())
        self.anomalies = AnomalyGenerator(cfg.dagm, images, foreground, grayscale)
        self.bank = AnomalyBank(cfg.dagm.bank_size)

    @property
    def uses_diffusion(self) -> bool:
        return self.cfg.dagm.mode == "diffusion" and self.cfg.dagm.diffusion_fraction > 0

    def normals(self) -> torch.Tensor:
        idx = self.rng.choice(len(self.images), size=self.cfg.train.batch_size, replace=len(self.images) < self.cfg.train.batch_size)
        x0 = self.images[torch.as_tensor(idx)]
        if self.cfg.train.hflip:
            flip = torch.from_numpy(self.rng.random(len(idx)) < 0.5).to(x0.device)
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        return x0

    def refresh_bank(self, denoiser: Denoiser) -> None:
        """Make `bank_refresh_count` diffusion anomalies with the current denoiser; keep the visible ones."""
        n = self.cfg.dagm.bank_refresh_count
        idx = self.rng.choice(len(self.images), size=n)
        x0, x_anom, mask = self.anomalies.diffusion(idx, denoiser, self.rng, self.generator)
        floor = None
        if self.cfg.pom.diffusion_noise_floor:
            with torch.no_grad():
                floor = pom.change_magnitude(denoiser.reconstruct(x0), x0)
        target = pom.refined_target(mask, x_anom, x0, self.cfg.pom, floor)
        keep = pom.visible(mask, target, x_anom, x0, self.cfg.pom, self.cfg.pom.diffusion_min_mean_change)
        self.bank.add(x_anom[keep], target[keep])

    def crude(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n cut-and-paste anomalies (x_anom, mask, target); invisible ones are redrawn up to max_tries times, then dropped."""
        xs, masks, targets = [], [], []
        needed = n
        for _ in range(max(1, self.cfg.pom.max_tries) if self.cfg.pom.enabled else 1):
            if needed == 0:
                break
            idx = self.rng.choice(len(self.images), size=needed)
            x0, x_anom, mask = self.anomalies.crude(idx, self.rng)
            target = pom.refined_target(mask, x_anom, x0, self.cfg.pom)
            keep = pom.visible(mask, target, x_anom, x0, self.cfg.pom)
            xs.append(x_anom[keep])
            masks.append(mask[keep])
            targets.append(target[keep])
            needed -= int(keep.sum())
        return torch.cat(xs), torch.cat(masks), torch.cat(targets)

    def next(self, denoiser: Denoiser, step: int) -> TrainingBatch:
        x0 = self.normals()
        n_anom = int(round(self.cfg.dagm.anomaly_fraction * x0.shape[0]))
        xs, targets = [x0[:0]], [x0[:0, :1]]
        if self.uses_diffusion:
            if step % self.cfg.dagm.bank_refresh_every == 0 or not self.bank:
                self.refresh_bank(denoiser)
            banked = self.bank.sample(int(round(self.cfg.dagm.diffusion_fraction * n_anom)), self.rng)
            if banked is not None:
                xs.append(banked[0])
                targets.append(banked[1])
        n_crude = n_anom - sum(x.shape[0] for x in xs)
        if n_crude > 0:
            x_crude, _, target_crude = self.crude(n_crude)
            xs.append(x_crude)
            targets.append(target_crude)
        x, target = torch.cat(xs), torch.cat(targets)
        k = x.shape[0]
        # Anomalies take the first k slots; the rest of the batch stays normal.
        return TrainingBatch(x0=x0, x=torch.cat([x, x0[k:]]), target=torch.cat([target, torch.zeros_like(x0[k:, :1])]))
