"""The one HDM training function, used by `hdm train` and by the Ray Train job.

Schedule (HDM_METHOD.md): warm up the denoiser alone on normal images; then train jointly,
each step drawing DAGM anomalies made with the current denoiser, filtered and weighted by
POM, updating the denoiser (on normals) and D (on the mix) together; finally calibrate on
held-out normal images and write the checkpoint. Stops at max_steps or max_minutes,
whichever comes first; checkpoints periodically and resumes from them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hdm import __version__, pom
from hdm.batches import BatchBuilder, TrainingBatch
from hdm.calibration import Calibration, fit_calibration
from hdm.checkpoint import load_checkpoint, load_train_state, save_checkpoint, save_train_state
from hdm.config import HDMConfig
from hdm.data.images import load_images, to_tensor
from hdm.data.mvtec import DatasetError, MVTecCategory
from hdm.foreground import foreground_masks
from hdm.losses import discriminator_loss
from hdm.models import HDMModel
from hdm.precision import autocast, resolve_device

LOG_FILE = "train_log.jsonl"
# Share of a time budget kept back for calibration and the final checkpoint.
FINISH_RESERVE = 0.03
# Budget keys that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("max_steps", "max_minutes")


class TrainingError(ValueError):
    """Training cannot start: bad data, or an output directory holding something else."""


@dataclass
class TrainHooks:
    """What a distributed runner (Ray Train) plugs in; the CLI uses the defaults.

    prepare_model wraps the `Objective` module (all trainable parameters). The warm-up
    steps leave the discriminator unused, so a DDP wrapper needs find_unused_parameters=True.
    """

    prepare_model: Callable[[nn.Module], nn.Module] | None = None  # e.g. ray.train.torch.prepare_model (DDP)
    report: Callable[[dict[str, Any], Path | None], None] | None = None  # metrics, and the checkpoint dir when one was written
    rank: int = 0
    world_size: int = 1
    progress: bool = True


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    calibration: Calibration
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainingData:
    images: torch.Tensor              # (N, 3, S, S) training normals in [-1, 1]
    holdout: torch.Tensor             # (M, 3, S, S) normals kept back for calibration
    foreground: np.ndarray | None     # (N, S, S) bool object masks, or None


class Objective(nn.Module):
    """Everything with gradients in one forward, so DDP can wrap it: L = L_noise + L_D."""

    def __init__(self, model: HDMModel, cfg: HDMConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(
        self,
        x0: torch.Tensor,
        generator: torch.Generator,
        batch: TrainingBatch | None = None,
        x0_hat: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        loss_cfg = self.cfg.loss
        noise = self.model.denoiser.training_loss(x0, generator)
        out = {"loss_noise": noise.detach()}
        total = loss_cfg.lambda_noise * noise
        if batch is not None and x0_hat is not None:
            logits = self.model.segment(batch.x, x0_hat)
            weights = pom.difficulty_weights(torch.sigmoid(logits.detach().float()), batch.target, self.cfg.pom, batch.n_diffusion)
            d_loss = discriminator_loss(logits, batch.target, weights, loss_cfg)
            total = total + d_loss
            out["loss_d"] = d_loss.detach()
        out["loss"] = total
        return out


def load_training_data(data_dir: str | Path, cfg: HDMConfig, rank: int = 0, world_size: int = 1, progress: bool = True) -> TrainingData:
    """Training normals in memory (this rank's shard), a seeded held-out split, and foreground masks."""
    try:
        category = MVTecCategory(data_dir)
    except DatasetError as exc:
        raise TrainingError(str(exc)) from None
    paths = list(category.train_paths)
    if len(paths) < 4:
        raise TrainingError(f"{data_dir}: {len(paths)} training image(s); need at least 4")
    order = np.random.default_rng(cfg.train.seed).permutation(len(paths))
    p = cfg.pom
    n_hold = min(max(round(p.holdout_fraction * len(paths)), p.holdout_min), p.holdout_max, len(paths) // 2)
    hold_paths = [paths[i] for i in order[:n_hold]]
    train_paths = [paths[i] for i in order[n_hold:]][rank::world_size]
    size = cfg.image_size
    images = to_tensor(load_images(train_paths, size, progress), size)
    holdout = to_tensor(load_images(hold_paths, size, progress), size)
    return TrainingData(images, holdout, foreground_masks(images.numpy(), cfg.dagm.foreground))


def lr_factor(progress: float) -> float:
    """Cosine decay to 5% over the run (by steps or by time, whichever is further along)."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """State of one training run; `train()` below is the entry point."""

    def __init__(self, cfg: HDMConfig, data: TrainingData, run_dir: Path, device: torch.device, hooks: TrainHooks) -> None:
        self.cfg = cfg
        self.data = data
        self.run_dir = run_dir
        self.device = device
        self.hooks = hooks
        self.is_main = hooks.rank == 0
        seed = cfg.train.seed + 1000 * hooks.rank
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)  # the denoiser's noise
        self.model = HDMModel(cfg).to(device)
        self.objective = Objective(self.model, cfg)
        self.step_module = hooks.prepare_model(self.objective) if hooks.prepare_model else self.objective
        t = cfg.train
        self.opt_denoiser = torch.optim.AdamW(self.model.denoiser.parameters(), lr=t.lr_denoiser, weight_decay=t.weight_decay)
        self.opt_discriminator = torch.optim.AdamW(self.model.discriminator.parameters(), lr=t.lr_discriminator, weight_decay=t.weight_decay)
        self.builder = BatchBuilder(cfg, data.images.to(device), data.foreground, seed)
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.history: list[dict[str, Any]] = []

    # -- budget ---------------------------------------------------------------------
    @property
    def budget_seconds(self) -> float | None:
        minutes = self.cfg.train.max_minutes
        return None if minutes is None else minutes * 60 * (1 - FINISH_RESERVE)

    def progress(self) -> float:
        by_steps = self.step / self.cfg.train.max_steps
        budget = self.budget_seconds
        return max(by_steps, self.elapsed / budget) if budget else by_steps

    def done(self) -> bool:
        """Whether to stop; under DDP every rank stops on the same step (any rank's budget ends it).

        Wall-clock budgets run out at slightly different steps on different ranks, and a rank
        that stopped alone would leave the others waiting in their next gradient all-reduce.
        """
        finished = self.progress() >= 1.0
        if self.hooks.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(finished)], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            finished = bool(flag.item())
        return finished

    # -- one step ---------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        warmup = self.step < cfg.train.warmup_steps or cfg.score.mode == "reconstruction"
        factor = lr_factor(self.progress())
        for opt, base in ((self.opt_denoiser, cfg.train.lr_denoiser), (self.opt_discriminator, cfg.train.lr_discriminator)):
            for group in opt.param_groups:
                group["lr"] = base * factor
        self.model.train()
        with autocast(self.device, cfg.precision):
            if warmup:
                x0 = self.builder.normals()
                batch = x0_hat = None
            else:
                with torch.no_grad():
                    batch = self.builder.next(self.model.denoiser, self.step)
                    x0_hat = self.model.reconstruct(batch.x)
                x0 = self._denoiser_batch(batch.x0)
            out = self.step_module(x0, self.generator, batch, x0_hat)
        self.opt_denoiser.zero_grad(set_to_none=True)
        self.opt_discriminator.zero_grad(set_to_none=True)
        out["loss"].backward()
        nn.utils.clip_grad_norm_(self.model.denoiser.parameters(), 1.0)
        self.opt_denoiser.step()
        if not warmup:
            self.opt_discriminator.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in out.items()}

    def _denoiser_batch(self, x0: torch.Tensor) -> torch.Tensor:
        n = self.cfg.train.denoiser_batch_size
        return x0[:n] if 0 < n < x0.shape[0] else x0

    # -- loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        t = self.cfg.train
        bar = tqdm(
            total=t.max_steps if t.max_minutes is None else None,
            initial=self.step,
            desc=f"train {self.cfg.train.ablation}",
            unit="step",
            disable=not (self.hooks.progress and self.is_main),
        )
        session_start = time.monotonic()
        base_elapsed = self.elapsed
        last_ckpt = self.step
        finished = self.done()
        while not finished:
            losses = self.train_step()
            self.elapsed = base_elapsed + time.monotonic() - session_start
            bar.update(1)
            if self.step % t.log_every_steps == 0 or self.step == 1:
                self._log(losses, bar)
            finished = self.done()
            if self.step - last_ckpt >= t.checkpoint_every_steps and not finished:
                self._checkpoint(Calibration.default(), final=False)
                last_ckpt = self.step
        bar.close()
        calibration = self.calibrate()
        self._checkpoint(calibration, final=True)
        return TrainResult(self.run_dir, self.step, self.elapsed, calibration, self.history)

    def _log(self, losses: dict[str, float], bar: tqdm) -> None:
        record = {"step": self.step, "seconds": round(self.elapsed, 1), "lr_factor": round(lr_factor(self.progress()), 4),
                  "bank": len(self.builder.bank), **{k: round(v, 5) for k, v in losses.items()}}
        self.history.append(record)
        bar.set_postfix({k: record[k] for k in ("loss_noise", "loss_d") if k in record} | {"s": record["seconds"]})
        if self.is_main:
            with open(self.run_dir / LOG_FILE, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.hooks.report:
            self.hooks.report(record, None)

    # -- calibration and checkpoints ---------------------------------------------------------
    @torch.no_grad()
    def calibrate(self) -> Calibration:
        """POM on the discrimination side: null distribution of held-out normal scores."""
        scores, maps = predict_tensors(self.model, self.data.holdout, self.device, self.cfg.precision)
        return fit_calibration(scores, maps, self.cfg.pom.target_far, self.cfg.pom.pixel_target_far)

    def _checkpoint(self, calibration: Calibration, final: bool) -> None:
        if self.is_main:
            meta = {"steps": self.step, "seconds": round(self.elapsed, 1), "seed": self.cfg.train.seed,
                    "ablation": self.cfg.train.ablation, "complete": final, "hdm_version": __version__,
                    "train_images": int(self.data.images.shape[0]), "holdout_images": int(self.data.holdout.shape[0])}
            save_checkpoint(self.run_dir, self.model, self.cfg, calibration, meta)
            save_train_state(self.run_dir, self.state())
        if self.hooks.report:
            self.hooks.report({"step": self.step, "seconds": round(self.elapsed, 1), "checkpoint": True}, self.run_dir if self.is_main else None)

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "config": json.dumps(self.cfg.to_dict()),
            "opt_denoiser": self.opt_denoiser.state_dict(),
            "opt_discriminator": self.opt_discriminator.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "batch_streams": self.builder.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue a run: weights from model.safetensors, the rest from the training state."""
        saved = HDMConfig.from_dict(json.loads(state["config"]))
        if _comparable(saved) != _comparable(self.cfg):
            raise TrainingError(f"{self.run_dir} holds a run with a different configuration; use a new --out")
        self.model.load_state_dict(load_checkpoint(self.run_dir).model.state_dict())
        self.opt_denoiser.load_state_dict(state["opt_denoiser"])
        self.opt_discriminator.load_state_dict(state["opt_discriminator"])
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        if "batch_streams" in state:  # older runs shared one stream with the bank; they go on with fresh ones
            self.builder.restore(state["batch_streams"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])


def _comparable(cfg: HDMConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for key in _RESUMABLE_CHANGES:
        d["train"].pop(key)
    return d


@torch.no_grad()
def predict_tensors(model: HDMModel, images: torch.Tensor, device: torch.device, precision: str, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) and anomaly maps (N, S, S) for prepared images, in eval mode."""
    model.eval()
    scores, maps = [], []
    for start in range(0, images.shape[0], batch_size):
        with torch.inference_mode(), autocast(device, precision):  # type: ignore[arg-type]
            out = model(images[start : start + batch_size].to(device))
        scores.append(out.pred_score.float().cpu().numpy())
        maps.append(out.anomaly_map[:, 0].float().cpu().numpy())
    return np.concatenate(scores), np.concatenate(maps)


def train(
    cfg: HDMConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    device: str | torch.device = "auto",
    resume: bool = False,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train an HDM model on the normal images of `data_dir` and write a checkpoint to `run_dir`.

    With resume=True an existing run in run_dir continues from its last checkpoint (same
    config; the budget may grow). Without it, run_dir must not hold a run already.
    """
    hooks = hooks or TrainHooks()
    run_dir = Path(run_dir)
    state = load_train_state(run_dir)
    if state is not None and not resume:
        raise TrainingError(f"{run_dir} already holds a training run; resume it or choose a new output directory")
    resolved = resolve_device(device)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    start = time.monotonic()
    data = load_training_data(data_dir, cfg, hooks.rank, hooks.world_size, hooks.progress and hooks.rank == 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, data, run_dir, resolved, hooks)
    if state is not None:
        trainer.restore(state)
    else:
        trainer.elapsed = time.monotonic() - start  # loading the data counts against --max-minutes too
    return trainer.run()
