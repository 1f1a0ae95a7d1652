"""`hdm train`, `hdm eval`, `hdm predict`, `hdm synth`: the model library on the command line.

Handlers import torch and the model code lazily so `hdm --help` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hdm.cli_support import CliError, existing_dir, existing_file, positive_float, positive_int, print_json

ABLATION_CHOICES = ("none", "paste-dagm", "no-pom", "recon-only")  # hdm.config.ABLATIONS, without importing it
MATERIAL_CHOICES = ("metal", "fabric", "wood")  # hdm.data.synthetic.MATERIALS, without importing it
UNLIMITED_STEPS = 10**9


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_predict(subparsers)
    _register_synth(subparsers)


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (auto: cuda when available)")


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train an HDM model on a category's normal images",
                              description="Train HDM (DAGM + DDM + POM) on CATEGORY_DIR/train/good and write a checkpoint to RUN_DIR.")
    p.add_argument("--data", required=True, type=existing_dir, metavar="CATEGORY_DIR")
    p.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    p.add_argument("--image-size", type=positive_int, help="training resolution (default: 128 on CPU, 256 on GPU)")
    p.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--max-minutes", type=positive_float, help="stop after this much training time (calibration included)")
    p.add_argument("--seed", type=int, default=0)
    _device_option(p)
    p.add_argument("--ablation", choices=ABLATION_CHOICES, default="none",
                   help="switch one module off: paste-dagm (Perlin cut-and-paste instead of DAGM), "
                        "no-pom, recon-only (DDM reconstruction error, no discriminator)")
    p.add_argument("--config", type=existing_file, metavar="JSON",
                   help="JSON file of config overrides, e.g. {\"train\": {\"batch_size\": 4}}")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    p.add_argument("--json", action="store_true", help="print a JSON summary when done")
    p.set_defaults(handler=_train)


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a trained model on a category's test set",
                              description="Image/pixel AUROC, AUPRO, pixel AP and F1-max in the MVTec AD protocol.")
    p.add_argument("--model", required=True, type=existing_dir, metavar="RUN_DIR")
    p.add_argument("--data", required=True, type=existing_dir, metavar="CATEGORY_DIR")
    _device_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_eval)


def _register_predict(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="score images and write heatmap overlays",
                              description="Write one overlay PNG per image to DIR and print one JSON line per image.")
    p.add_argument("--model", required=True, type=existing_dir, metavar="RUN_DIR")
    p.add_argument("images", nargs="+", type=existing_file, metavar="IMAGE")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    _device_option(p)
    p.set_defaults(handler=_predict)


def _register_synth(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("synth", help="write a generated product category (MVTec AD layout) to try HDM without data",
                              description="Generate plates of one material with scratches, holes, stains and missing "
                                          "material, in the MVTec AD layout, deterministic from --seed.")
    p.add_argument("--out", required=True, type=Path, metavar="CATEGORY_DIR", help="a new or empty folder")
    p.add_argument("--material", choices=MATERIAL_CHOICES, default="metal")
    p.add_argument("--image-size", type=positive_int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=positive_int, default=200, help="normal training images")
    p.add_argument("--test-good", type=positive_int, default=40, help="normal test images")
    p.add_argument("--test-defect", type=positive_int, default=60, help="defective test images, the defect types in turn")
    p.set_defaults(handler=_synth)


def _load_config(args: argparse.Namespace) -> Any:
    import torch

    from hdm.config import ConfigError, HDMConfig

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    try:
        cfg = HDMConfig.for_device(device, args.image_size or (128 if device == "cpu" else 256))
        if args.image_size:
            cfg = cfg.with_overrides({"image_size": args.image_size})
        if args.config:
            cfg = cfg.with_overrides(_read_json(args.config))
        budget: dict[str, Any] = {"seed": args.seed}
        if args.max_minutes:
            budget["max_minutes"] = args.max_minutes
            budget["max_steps"] = UNLIMITED_STEPS  # the clock decides, unless --max-steps says otherwise
        if args.max_steps:
            budget["max_steps"] = args.max_steps
        return cfg.with_ablation(args.ablation).with_overrides({"train": budget})
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object of config overrides")
    return data


def _train(args: argparse.Namespace) -> int:
    import torch

    from hdm.checkpoint import CheckpointError
    from hdm.training import TrainHooks, TrainingError, train

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: CUDA is not available on this machine")
    cfg = _load_config(args)
    try:
        result = train(cfg, args.data, args.out, device=args.device, resume=args.resume, hooks=TrainHooks(progress=True))
    except (TrainingError, CheckpointError) as exc:
        raise CliError(str(exc)) from None
    summary = {
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "ablation": cfg.train.ablation,
        "image_size": cfg.image_size,
        "threshold": result.calibration.image_threshold,
        "pixel_threshold": result.calibration.pixel_threshold,
    }
    if args.json:
        print_json(summary)
    else:
        print(f"trained {summary['steps']} steps in {summary['seconds']} s -> {summary['run_dir']} "
              f"(image threshold {summary['threshold']:.4f})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from hdm.checkpoint import CheckpointError
    from hdm.data.images import ImageError
    from hdm.data.mvtec import DatasetError
    from hdm.evaluation import EvaluationError, evaluate_run

    try:
        result = evaluate_run(args.model, args.data, device=args.device, progress=not args.json)
    except (CheckpointError, DatasetError, EvaluationError, ImageError) as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # e.g. --device cuda without CUDA
        raise CliError(str(exc)) from None
    if args.json:
        print_json(result)
    else:
        for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "f1_max", "threshold", "false_alarm_rate", "recall", "images", "seconds"):
            value = result[key]
            print(f"{key:>18}  {value:.4f}" if isinstance(value, float) else f"{key:>18}  {value}")
        for defect, auroc in result["per_defect_image_auroc"].items():
            print(f"{'auroc ' + defect:>18}  {auroc:.4f}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from hdm.checkpoint import CheckpointError
    from hdm.data.images import ImageError, decode_image
    from hdm.inference import Detector
    from hdm.visualize import overlay, save_png

    try:
        detector = Detector.load(args.model, device=args.device)
    except (CheckpointError, ValueError) as exc:
        raise CliError(str(exc)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "predictions.jsonl", "w") as log:
        for path in args.images:
            try:
                # Native size for the overlay; the detector resizes to its own input size.
                image = decode_image(path.read_bytes(), formats=None)
            except ImageError as exc:
                raise CliError(f"{path}: {exc}") from None
            pred = detector.predict([image])[0]
            overlay_path = save_png(overlay(image, pred.anomaly_map, pred.pixel_threshold), args.out / f"{path.stem}_overlay.png")
            line = json.dumps({
                "image": str(path), "score": pred.score, "probability": pred.probability,
                "verdict": "anomalous" if pred.anomalous else "normal", "anomalous": pred.anomalous,
                "threshold": pred.threshold, "anomalous_area": pred.anomalous_area,
                "overlay": str(overlay_path), "model_version": detector.version,
            }, sort_keys=True)
            print(line)
            log.write(line + "\n")
    sys.stdout.flush()
    return 0


def _synth(args: argparse.Namespace) -> int:
    from hdm.data.synthetic import write_dataset

    if args.image_size < 16:
        raise CliError(f"--image-size {args.image_size}: at least 16")
    try:
        root = write_dataset(args.out, size=args.image_size, seed=args.seed, n_train=args.train, n_test_good=args.test_good,
                             n_test_defect=args.test_defect, material=args.material, progress=True)
    except FileExistsError as exc:
        raise CliError(str(exc)) from None
    except NotADirectoryError:
        raise CliError(f"{args.out}: not a directory") from None
    print(f"wrote {args.train} training and {args.test_good + args.test_defect} test images of {args.material} plates to {root}")
    return 0
