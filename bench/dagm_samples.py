"""What DAGM makes with a trained run's denoiser, next to the cut-and-paste it starts from.

    python -m bench.dagm_samples --model RUN_DIR --data CATEGORY_DIR [--count 64] [--seed 0]
                                 [--out bench/results/dagm_samples.json]

Draws `count` DAGM anomalies from the run's training images with the run's denoiser, each
beside the cut-and-paste anomaly it was refined from (same mask, content and blend: what the
paste-dagm ablation trains on). For each kind it reports how much the masked pixels changed
(mean |x_anom - x0| inside the mask, images in [-1, 1]), the share POM's visibility bar lets
through, how much DDM's reconstruction reveals them (its change inside the mask over its
change outside: the repair ratio, also for the category's real defects; for DAGM also as a
share of its source's), the share POM keeps in all (with the run's
`diffusion_min_repair_ratio` for DAGM), and the run's discriminator's mean probability over
the refined target of those it keeps. It also probes the denoiser itself: its one-step x0
estimate of normal images at several timesteps, against the images (a denoiser that has
learned its schedule is near the identity at small t). Writes the JSON and a PNG beside
it, eight rows of [x0 | cut-and-paste | DAGM | mask].
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hdm import pom
from hdm.batches import BatchBuilder
from hdm.checkpoint import CheckpointError, load_checkpoint
from hdm.config import HDMConfig
from hdm.data.images import load_images, to_tensor
from hdm.data.mvtec import DatasetError, MVTecCategory, TestDataset
from hdm.foreground import foreground_masks
from hdm.models import HDMModel
from hdm.visualize import save_png

RESULTS = Path(__file__).resolve().parent / "results" / "dagm_samples.json"
PROBE_TIMESTEPS = (5, 50, 100, 250, 400)
GRID_ROWS = 8


def anomaly_stats(model: HDMModel, cfg: HDMConfig, x0: torch.Tensor, x_anom: torch.Tensor, mask: torch.Tensor,
                  min_repair_ratio: float | None = None) -> dict[str, float]:
    target = pom.refined_target(mask, x_anom, x0, cfg.pom)
    visible = pom.visible(mask, target, x_anom, x0, cfg.pom)
    area = mask.flatten(1).sum(1).clamp_min(1)
    change = (pom.change_magnitude(x_anom, x0) * mask).flatten(1).sum(1) / area
    x0_hat = model.reconstruct(x_anom)
    ratio = pom.repair_ratio(mask, x_anom, x0_hat)
    kept = visible if min_repair_ratio is None else visible & (ratio >= min_repair_ratio)
    prob = torch.sigmoid(model.segment(x_anom, x0_hat).float())
    detected = (prob * target).flatten(1).sum(1) / target.flatten(1).sum(1).clamp_min(1e-6)
    return {
        "median_change_in_mask": round(float(change.median()), 4),
        "pom_visible_share": round(float(visible.float().mean()), 3),
        "median_repair_ratio": round(float(ratio.median()), 2),
        "pom_kept_share": round(float(kept.float().mean()), 3),
        "discriminator_detects": round(float(detected[kept].mean()), 3) if kept.any() else 0.0,
    }


def real_defect_stats(model: HDMModel, category: MVTecCategory, size: int) -> dict[str, float]:
    """The same measures on the category's real defects, against their ground-truth masks."""
    dataset = TestDataset([s for s in category.test_samples if s.label == 1], size)
    if not len(dataset):
        return {}
    x, mask = (torch.stack(t) for t in zip(*((dataset[i][0], dataset[i][1]) for i in range(len(dataset))), strict=True))
    x0_hat = model.reconstruct(x)
    ratio = pom.repair_ratio(mask, x, x0_hat)
    prob = torch.sigmoid(model.segment(x, x0_hat).float())
    detected = (prob * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    return {"count": len(dataset), "median_repair_ratio": round(float(ratio.median()), 2),
            "discriminator_detects": round(float(detected.mean()), 3)}


def denoiser_probe(model: HDMModel, images: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean |x0_hat(t) - x| on normal images, per timestep."""
    denoiser = model.denoiser
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in PROBE_TIMESTEPS:
        steps = torch.full((images.shape[0],), t, dtype=torch.long)
        x0_hat = denoiser.predict_x0(denoiser.add_noise(images, noise, steps), steps)
        out[str(t)] = round(float((x0_hat - images).abs().mean()), 4)
    return out


def grid(x0: torch.Tensor, pasted: torch.Tensor, refined: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    def rgb(t: torch.Tensor) -> np.ndarray:
        return ((t.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)

    rows = [
        np.concatenate([rgb(x0[i]), rgb(pasted[i]), rgb(refined[i]), rgb(mask[i].expand(3, -1, -1) * 2 - 1)], axis=1)
        for i in range(min(GRID_ROWS, x0.shape[0]))
    ]
    return np.concatenate(rows, axis=0)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a run directory written by hdm train")
    parser.add_argument("--data", type=Path, required=True, help="the category it was trained on")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        checkpoint = load_checkpoint(args.model)
        category = MVTecCategory(args.data)
        paths = list(category.train_paths)
    except (CheckpointError, DatasetError) as exc:
        parser.error(str(exc))
    model, cfg = checkpoint.model.eval(), checkpoint.config
    picks = np.random.default_rng(args.seed).choice(len(paths), size=min(args.count, len(paths)), replace=False)
    images = to_tensor(load_images([paths[i] for i in picks], cfg.image_size, progress=False), cfg.image_size)
    builder = BatchBuilder(cfg, images, foreground_masks(images.numpy(), cfg.dagm.foreground), args.seed)
    indices = np.arange(len(images))
    x0, refined, mask, pasted = builder.anomalies.diffusion(indices, model.denoiser, np.random.default_rng(args.seed),
                                                            torch.Generator().manual_seed(args.seed))
    share = pom.repair_ratio(mask, refined, model.reconstruct(refined)) / pom.repair_ratio(mask, pasted, model.reconstruct(pasted))
    report = {
        "model": str(args.model),
        "steps": checkpoint.meta.get("steps"),
        "count": len(images),
        "cut_and_paste": anomaly_stats(model, cfg, x0, pasted, mask),
        "dagm": {**anomaly_stats(model, cfg, x0, refined, mask, cfg.pom.diffusion_min_repair_ratio),
                 "median_repair_share": round(float(share.median()), 2)},
        "real_defects": real_defect_stats(model, category, cfg.image_size),
        "denoiser_x0_error_by_t": denoiser_probe(model, images, args.seed),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    picture = save_png(grid(x0, pasted, refined, mask), args.out.with_suffix(".png"))
    print(json.dumps(report))
    print(f"wrote {args.out} and {picture}")


if __name__ == "__main__":
    main()
