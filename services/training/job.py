"""Retraining on a Ray cluster: Ray Train runs hdm.training.train on every worker (DDP),
the final checkpoint becomes a new immutable registry version, and scorers hear of it
on `inspection.models`.

Worker failures are survived by Ray Train restarting the group from the last reported
checkpoint (`max_failures`); the training loop resumes from it with its optimizer and RNG
state, so a restarted run continues rather than starts over.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdm.config import HDMConfig
from services.registry import ModelRegistry, ModelVersion, announce
from services.training.config import TrainJobConfig

log = logging.getLogger(__name__)


class TrainingJobError(RuntimeError):
    """The distributed run failed after Ray Train's retries; the cause is in the message and the Ray logs."""


@dataclass
class JobResult:
    model: ModelVersion
    metrics: dict[str, float]
    seconds: float


def build_hdm_config(cfg: TrainJobConfig) -> HDMConfig:
    """The model config a job trains: preset sizes, then the ablation, then explicit overrides."""
    preset = cfg.preset if cfg.preset != "auto" else ("gpu" if cfg.use_gpu else "cpu")
    base = {"cpu": HDMConfig.cpu, "small": HDMConfig.small, "gpu": lambda size: HDMConfig(image_size=size)}[preset](cfg.image_size)
    budget: dict[str, Any] = {"seed": cfg.seed, "max_minutes": cfg.max_minutes}
    if cfg.max_steps is not None:
        budget["max_steps"] = cfg.max_steps
    configured = base.with_ablation(cfg.ablation).with_overrides(cfg.overrides)
    return configured.with_overrides({"train": budget})


def train_loop_per_worker(loop: dict[str, Any]) -> None:
    """What each Ray Train worker runs: the library's training loop with Ray's hooks."""
    import ray.train
    import ray.train.torch

    from hdm.training import TrainHooks, train

    context = ray.train.get_context()
    rank = context.get_world_rank()
    run_dir = Path(tempfile.mkdtemp(prefix=f"hdm-train-rank{rank}-"))
    resume = _restore(ray.train.get_checkpoint(), run_dir)
    hooks = TrainHooks(
        # The discriminator sits out the warm-up steps, so DDP must expect unused parameters.
        prepare_model=functools.partial(
            ray.train.torch.prepare_model, parallel_strategy_kwargs={"find_unused_parameters": True}
        ),
        report=_report,
        rank=rank,
        world_size=context.get_world_size(),
        progress=rank == 0,
    )
    try:
        train(HDMConfig.from_dict(loop["hdm_config"]), loop["data_dir"], run_dir,
              device=ray.train.torch.get_device(), resume=resume, hooks=hooks)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _restore(checkpoint: Any, run_dir: Path) -> bool:
    """Copy the last reported checkpoint into the worker's run dir; True when there was one."""
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        shutil.copytree(folder, run_dir, dirs_exist_ok=True)
    return True


def _report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=checkpoint)


def fit(cfg: TrainJobConfig, hdm_cfg: HDMConfig, run_name: str) -> Any:
    """Run the distributed training and return Ray Train's Result."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"hdm_config": hdm_cfg.to_dict(), "data_dir": str(Path(cfg.data_dir).resolve())},
        scaling_config=ScalingConfig(
            num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(Path(cfg.storage_path).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    return trainer.fit()


def evaluate_remote(cfg: TrainJobConfig, model: ModelVersion) -> dict[str, float]:
    """Test-set metrics of the new version, computed on a worker (the driver may have no GPU or CPU to spare)."""
    import ray

    from hdm.data.mvtec import MVTecCategory

    if not MVTecCategory(cfg.data_dir).test_samples:
        return {}
    task = ray.remote(_evaluate).options(num_cpus=cfg.cpus_per_worker, num_gpus=1 if cfg.use_gpu else 0)
    return ray.get(task.remote(str(model.path), str(Path(cfg.data_dir).resolve())))


def _evaluate(run_dir: str, data_dir: str) -> dict[str, float]:
    from hdm.evaluation import evaluate_run

    result = evaluate_run(run_dir, data_dir, progress=False)
    keys = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "f1_max")
    return {k: float(result[k]) for k in keys if result.get(k) is not None}


def run_training_job(cfg: TrainJobConfig) -> JobResult:
    """Train, publish the checkpoint as a new version, evaluate it, announce it."""
    import ray

    from hdm.data.mvtec import MVTecCategory

    MVTecCategory(cfg.data_dir)  # a wrong folder fails here, not inside every worker
    start = time.monotonic()
    if not ray.is_initialized():
        ray.init()  # joins $RAY_ADDRESS (RayJob, KubeRay) or starts a local cluster
    run_name = f"hdm-{cfg.product}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = fit(cfg, build_hdm_config(cfg), run_name)
    if result.error is not None:
        raise TrainingJobError(f"training failed: {result.error}")
    if result.checkpoint is None:
        raise TrainingJobError("training finished without reporting a checkpoint")
    with result.checkpoint.as_directory() as folder:
        model = ModelRegistry(cfg.registry.root).publish(cfg.product, folder)
    log.info("published %s at %s", model.model_id, model.path)
    metrics = evaluate_remote(cfg, model)
    metrics.update({k: float(v) for k, v in (result.metrics or {}).items() if k in ("step", "seconds")})
    if cfg.announce:
        _announce(cfg, model, metrics)
    return JobResult(model, metrics, time.monotonic() - start)


def _announce(cfg: TrainJobConfig, model: ModelVersion, metrics: dict[str, float]) -> None:
    from services.kafka_io import make_producer

    producer = make_producer(cfg.kafka.with_env())
    try:
        announce(producer, cfg.kafka.topics.models, model, metrics)
    finally:
        producer.close()
