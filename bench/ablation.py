"""Ablation of HDM's modules on one category under one training budget.

    python -m bench.ablation --data ../shared/data/magnetic_tile [--minutes 15] [--image-size 128]
                             [--seed 0] [--variants none paste-dagm no-pom recon-only] [--runs runs/ablation]
                             [--override '{"dagm": {"bank_refresh_every": 4}}']

Trains each variant with the same budget and seed, exactly as `hdm train --ablation V
--max-minutes M` would, evaluates it on the test set as `hdm eval` does, and writes
bench/results/ablation.json (metrics, steps reached, seconds) with one progress line per
variant. Variants: none (full HDM), paste-dagm (DAGM replaced by Perlin cut-and-paste),
no-pom (no refined targets, rejection or difficulty weights), recon-only (DDM's
reconstruction error alone, no discriminator). Run it on a quiet machine: the budget is
wall-clock time, so anything else running costs the variants steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from hdm.config import ABLATIONS, HDMConfig
from hdm.evaluation import evaluate_run
from hdm.training import TrainHooks, train

RESULTS = Path(__file__).resolve().parent / "results" / "ablation.json"
METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "f1_max", "false_alarm_rate", "recall")


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    cfg = HDMConfig.for_device(args.device, args.image_size).with_ablation(variant)
    cfg = cfg.with_overrides(args.override).with_overrides({"train": {"seed": args.seed, "max_minutes": args.minutes, "max_steps": args.max_steps}})
    run_dir = args.runs / variant
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.monotonic()
    result = train(cfg, args.data, run_dir, device=args.device, hooks=TrainHooks(progress=args.progress))
    train_s = time.monotonic() - start
    metrics = evaluate_run(run_dir, args.data, device=args.device, progress=False)
    return {
        "variant": variant,
        "steps": result.steps,
        "train_seconds": round(train_s, 1),
        **{k: metrics[k] for k in METRICS},
        "per_defect_image_auroc": metrics["per_defect_image_auroc"],
        "run_dir": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--max-steps", type=int, default=10**9, help="also stop here (for quick checks)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", choices=ABLATIONS, default=list(ABLATIONS))
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--override", type=json.loads, default={}, help='config changes for every variant, e.g. \'{"dagm": {"bank_refresh_every": 4}}\'')
    parser.add_argument("--progress", action="store_true", help="show a progress bar per training run")
    args = parser.parse_args()
    rows = []
    report = {"data": str(args.data), "minutes": args.minutes, "image_size": args.image_size, "seed": args.seed,
              "device": args.device, "override": args.override, "load_average_start": [round(x, 2) for x in os.getloadavg()], "variants": rows}
    for i, variant in enumerate(args.variants, 1):
        print(f"[{i}/{len(args.variants)}] training {variant} for {args.minutes} min ...", flush=True)
        row = run_variant(variant, args)
        rows.append(row)
        print(f"[{i}/{len(args.variants)}] {variant}: {row['steps']} steps, image AUROC {row['image_auroc']:.4f}, "
              f"pixel AUROC {row['pixel_auroc']:.4f}, AUPRO {row['aupro']:.4f}", flush=True)
        report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after each variant: partial results survive
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
