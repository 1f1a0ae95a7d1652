"""Training batches for the joint phase: normal images, DAGM anomalies, POM-refined targets.

Diffusion-made anomalies cost `reverse_steps` denoiser passes each, so they are kept in a
bank refreshed with the current denoiser a few samples per step (DAGMConfig explains the
trade-off); crude anomalies are cheap and made fresh for every batch.

The bank draws its random numbers from streams of its own. What it makes and keeps depends
on the denoiser's weights (POM rejects some), and those differ between two runs of one seed
as soon as a time budget shifts the learning rate; on a shared stream that difference would
re-deal every later batch. With separate streams the normals and crude anomalies of step k
depend only on the seed, so a run is repeatable and the cut-and-paste ablation sees the same
batches as full HDM, except for DAGM's anomalies (in crude ones' slots or on top of them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hdm import pom
from hdm.config import HDMConfig
from hdm.dagm import AnomalyGenerator
from hdm.models.denoiser import Denoiser


@dataclass
class TrainingBatch:
    x0: torch.Tensor      # (B,3,S,S) normal images (the denoiser trains on these)
    x: torch.Tensor       # (B',3,S,S) what D sees: x0 with anomalies in some slots (B' > B with placement "extra")
    target: torch.Tensor  # (B',1,S,S) D's target: M* with POM, the mask M without (0 for normals)
    n_diffusion: int = 0  # the first n_diffusion rows of x are diffusion-made anomalies


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


BANK_STREAM = 1  # the bank's seed is (seed, BANK_STREAM): a stream unrelated to the batches'


class BatchBuilder:
    """Assembles each joint-phase batch: B normals, a share of them turned into anomalies."""

    def __init__(
        self,
        cfg: HDMConfig,
        images: torch.Tensor,
        foreground: np.ndarray | None,
        seed: int,
    ) -> None:
        self.cfg = cfg
        self.images = images
        self.rng = np.random.default_rng(seed)                   # normals and crude anomalies
        self.bank_rng = np.random.default_rng([seed, BANK_STREAM])  # everything the bank does
        self.bank_generator = torch.Generator().manual_seed(int(self.bank_rng.integers(2**62)))
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
        idx = self.bank_rng.choice(len(self.images), size=n)
        x0, x_anom, mask, _ = self.anomalies.diffusion(idx, denoiser, self.bank_rng, self.bank_generator)
        floor = None
        if self.cfg.pom.diffusion_noise_floor:
            with torch.no_grad():
                floor = pom.change_magnitude(denoiser.reconstruct(x0), x0)
        target = pom.refined_target(mask, x_anom, x0, self.cfg.pom, floor)
        keep = pom.visible(mask, target, x_anom, x0, self.cfg.pom, self.cfg.pom.diffusion_min_mean_change)
        ratio = self.cfg.pom.diffusion_min_repair_ratio
        if self.cfg.pom.enabled and ratio is not None:
            with torch.no_grad():
                keep &= pom.revealed(mask, x_anom, denoiser.reconstruct(x_anom), ratio)
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

    def diffusion_count(self, n_anom: int) -> int:
        """How many of n_anom anomalies are diffusion-made: diffusion_fraction of them on average.

        A fractional count is rounded up or down at random (from the bank's stream), so the
        share is right at any batch size.
        """
        if not self.uses_diffusion:
            return 0
        expected = self.cfg.dagm.diffusion_fraction * n_anom
        whole = math.floor(expected)
        fraction = expected - whole
        return whole + int(fraction > 1e-9 and self.bank_rng.random() < fraction)

    def next(self, denoiser: Denoiser, step: int) -> TrainingBatch:
        """The batch for joint step `step`."""
        x0 = self.normals()
        n_anom = int(round(self.cfg.dagm.anomaly_fraction * x0.shape[0]))
        # Crude anomalies for every slot, even those DAGM's take below, so that the batch
        # stream does not depend on how many DAGM supplies (module docstring).
        x, _, target = self.crude(n_anom) if n_anom > 0 else (x0[:0], None, x0[:0, :1])
        # Crude anomalies take the first slots of the batch, the rest stays normal.
        k = x.shape[0]
        x, target = torch.cat([x, x0[k:]]), torch.cat([target, torch.zeros_like(x0[k:, :1])])
        banked = self.diffusion_made(denoiser, step, self.diffusion_count(n_anom))
        if banked is None:
            return TrainingBatch(x0=x0, x=x, target=target)
        # DAGM's go in front, in place of crude ones or in addition to them (DAGMConfig.placement).
        n_diffusion = banked[0].shape[0]
        keep = slice(n_diffusion, None) if self.cfg.dagm.placement == "swap" else slice(None)
        return TrainingBatch(x0=x0, x=torch.cat([banked[0], x[keep]]), target=torch.cat([banked[1], target[keep]]),
                             n_diffusion=n_diffusion)

    def diffusion_made(self, denoiser: Denoiser, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """n diffusion-made anomalies (x_anom, target) from the bank, refreshed first when due; None for none."""
        if n <= 0:
            return None
        if step % self.cfg.dagm.bank_refresh_every == 0 or not self.bank:
            self.refresh_bank(denoiser)
        return self.bank.sample(n, self.bank_rng)

    def state(self) -> dict[str, Any]:
        """The random streams, for resuming a run (the bank itself is refilled after a resume)."""
        return {"batches": json.dumps(self.rng.bit_generator.state), "bank": json.dumps(self.bank_rng.bit_generator.state),
                "bank_generator": self.bank_generator.get_state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(state["batches"])
        self.bank_rng.bit_generator.state = json.loads(state["bank"])
        self.bank_generator.set_state(state["bank_generator"])
