"""`hdm train-job`: retrain a product's model with Ray Train and publish it to the registry."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from hdm.cli_support import CliError, existing_dir, positive_float, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-job", help="distributed retraining on Ray (Ray Train), published as a new model version")
    p.add_argument("--config", help="TrainJobConfig YAML (k8s/base/train-config.yaml is the cluster's)")
    p.add_argument("--product", help="registry product name")
    p.add_argument("--data", type=existing_dir, help="MVTec AD category folder of the product")
    p.add_argument("--registry", help="model registry root (models/<product>/<version>/)")
    p.add_argument("--workers", type=positive_int, help="DDP workers")
    p.add_argument("--cpu", action="store_true", help="train on CPUs (no GPU per worker)")
    p.add_argument("--cpus-per-worker", type=positive_float)
    p.add_argument("--image-size", type=positive_int)
    p.add_argument("--preset", choices=("auto", "cpu", "gpu", "small"))
    p.add_argument("--max-minutes", type=positive_float)
    p.add_argument("--max-steps", type=positive_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--bootstrap", help="Kafka bootstrap servers for the announcement")
    p.add_argument("--no-announce", action="store_true", help="publish without announcing on inspection.models")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(handler=run)


def job_config(args: argparse.Namespace):
    from services.config import ConfigError, load_config
    from services.training.config import TrainJobConfig

    try:
        cfg = load_config(TrainJobConfig, args.config)
        changes = {
            "product": args.product,
            "data_dir": str(args.data) if args.data else None,
            "workers": args.workers,
            "cpus_per_worker": args.cpus_per_worker,
            "image_size": args.image_size,
            "preset": args.preset,
            "max_minutes": args.max_minutes,
            "max_steps": args.max_steps,
            "seed": args.seed,
        }
        cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
        if args.max_steps is not None and args.max_minutes is None:
            cfg = dataclasses.replace(cfg, max_minutes=None)
        if args.cpu:
            cfg = dataclasses.replace(cfg, use_gpu=False)
        if args.registry:
            cfg = dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, root=args.registry))
        if args.bootstrap:
            cfg = dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, bootstrap_servers=args.bootstrap))
        if args.no_announce:
            cfg = dataclasses.replace(cfg, announce=False)
        return cfg
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from hdm.data.mvtec import DatasetError
    from services.training.job import TrainingJobError, run_training_job

    cfg = job_config(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        result = run_training_job(cfg)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    except TrainingJobError as exc:
        print(f"hdm train-job: {exc}", file=sys.stderr)
        return 1
    summary = {"product": result.model.product, "version": result.model.version, "path": str(result.model.path),
               "metrics": result.metrics, "seconds": round(result.seconds, 1)}
    if args.json:
        print_json(summary)
    else:
        print(f"published {result.model.model_id} at {result.model.path} in {result.seconds:.0f}s; metrics {result.metrics}")
    return 0
