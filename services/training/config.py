"""Configuration of a retraining job (`hdm train-job --config FILE`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.config import KafkaConfig, TelemetryConfig
from services.registry import RegistryConfig

PRESETS = ("auto", "cpu", "gpu", "small")


@dataclass
class TrainJobConfig:
    product: str = "default"
    data_dir: str = "data/default"          # an MVTec AD category (or normal-only) folder
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    image_size: int = 256
    # Network sizes: "auto" = gpu when the workers have GPUs, else cpu (hdm.config presets).
    preset: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # HDMConfig keys, e.g. {"train": {"batch_size": 32}}
    ablation: str = "none"
    max_minutes: float | None = 60.0
    max_steps: int | None = None
    seed: int = 0
    # Ray Train: one DDP rank per worker.
    workers: int = 1
    use_gpu: bool = True
    cpus_per_worker: float = 4.0
    max_failures: int = 2                    # worker failures survived by resuming from the last checkpoint
    storage_path: str = "ray-train"          # Ray Train checkpoints; a shared volume in clusters
    announce: bool = True                    # publish the new version on inspection.models
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    telemetry: TelemetryConfig = field(default_factory=lambda: TelemetryConfig(service_name="hdm-train"))

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        if self.max_minutes is None and self.max_steps is None:
            raise ValueError("set max_minutes or max_steps: a job needs a budget")
