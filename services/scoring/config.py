"""Configuration of the `inspection` Serve application: the `args` of its Serve config file.

One ScoringConfig is what `services.scoring.app:build` receives from the
`applications[].args` of config/serve.yaml (the file a KubeRay RayService embeds).
Defaults work on a laptop: CPU scorer, local `models/` registry, local broker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hdm.config import TORCHSCRIPT_CHOICES
from services.config import ConfigError, KafkaConfig, TelemetryConfig, load_dataclass
from services.registry import RegistryConfig

HEATMAP_POLICIES = ("anomalous", "all", "none")


@dataclass
class IngressConfig:
    group_id: str = "hdm-scoring"
    # Ingress replicas, each one consumer of the group: at most the frames topic's partitions.
    replicas: int = 1
    # Frames between the consumer and an acknowledged result; at the bound the
    # consumer pauses its partitions and resumes when half of them are done.
    max_in_flight: int = 128
    resume_fraction: float = 0.5
    # Frames of one poll that share a model go to the Scorer together, up to this many a
    # call: Serve's cost is per call (routing, RPC), and @serve.batch counts frames, so
    # calls still merge into batches of max_batch_size. At most scorer.max_batch_size.
    max_frames_per_call: int = 8
    # A call waits up to this long for more frames of its model (then goes part full),
    # so that at moderate rates calls carry several frames (services/scoring/coalesce.py).
    # On CPUs about half a full batch's time; 0 sends each poll's frames at once.
    call_linger_ms: float = 0.0
    # False (Nagle's rule at arrival): a call whose first frame finds no call of this
    # replica at the Scorer goes at once, so a quiet line pays no linger; calls begun while
    # one is out linger as usual. True: every part-full call waits out the linger.
    call_linger_when_idle: bool = False
    poll_timeout_ms: int = 100
    # Longest a fetch waits for new frames. Tansu answers an empty fetch only when this
    # expires (Kafka answers as data arrives), so it bounds the broker hop's latency.
    fetch_max_wait_ms: int = 25
    commit_interval_s: float = 0.2
    max_frame_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000
    # A scorer that raises for a frame (not a replica that died: those are retried
    # without limit) gets this many attempts before the frame goes to the DLQ.
    score_attempts: int = 3
    retry_backoff_s: float = 0.2
    drain_timeout_s: float = 30.0
    # How often the registry is re-read for a product seen without a model.
    registry_refresh_s: float = 2.0
    num_cpus: float = 0.5

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError("ingress.replicas must be at least 1")
        if self.max_frames_per_call < 1:
            raise ConfigError("ingress.max_frames_per_call must be at least 1")
        if self.call_linger_ms < 0:
            raise ConfigError("ingress.call_linger_ms must be >= 0")
        if self.max_in_flight < 1:
            raise ConfigError("ingress.max_in_flight must be at least 1")
        if not 0.0 <= self.resume_fraction < 1.0:
            raise ConfigError("ingress.resume_fraction must be in [0, 1)")
        if self.score_attempts < 1:
            raise ConfigError("ingress.score_attempts must be at least 1")


@dataclass
class ScorerConfig:
    # Dynamic batching (@serve.batch); changed in place through user_config. Serve closes
    # a batch on a timer, busy replica or not. With paced_batching the replica's calls are
    # held while a batch runs and go in together when it ends, so a batch is what arrived
    # during the previous one (services/scoring/pacing.py) and batch_wait_timeout_s is not
    # used; without pacing it is Serve's fixed wait.
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.05
    paced_batching: bool = True
    heatmaps: str = "anomalous"  # anomalous | all | none: which results carry PNG heatmaps
    # Resources per replica: num_gpus 1 on GPU nodes, 0 runs on the CPU.
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    device: str = "auto"
    # Run the model through a TorchScript trace: "auto" does on CPUs, where eager ops
    # contend for the GIL with the replica's request handling (see hdm.torchscript).
    torchscript: str = "auto"
    torch_threads: int = 0  # 0 leaves torch's default; on small CPUs leave a core to the ingress
    # A starting replica loads the latest version of each registered product (as many as
    # it keeps) and runs full batches through each before it reports ready, so frames
    # routed to a new replica (a scale-up under load) pay neither the load nor the first,
    # slow runs of a trace.
    warmup: bool = True
    # Autoscaling on ongoing requests per replica.
    min_replicas: int = 1
    max_replicas: int = 4
    initial_replicas: int | None = None
    target_ongoing_requests: float = 32.0
    max_ongoing_requests: int = 128
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if self.heatmaps not in HEATMAP_POLICIES:
            raise ConfigError(f"scorer.heatmaps must be one of {', '.join(HEATMAP_POLICIES)}, got {self.heatmaps!r}")
        if self.torchscript not in TORCHSCRIPT_CHOICES:
            raise ConfigError(f"scorer.torchscript must be one of {', '.join(TORCHSCRIPT_CHOICES)}, got {self.torchscript!r}")
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ConfigError("scorer.max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError("scorer needs 1 <= min_replicas <= max_replicas")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ConfigError("scorer.max_ongoing_requests must be >= max_batch_size, or batches never fill")

    def user_config(self) -> dict[str, Any]:
        """What a replica's reconfigure() applies without a restart."""
        return {"max_batch_size": self.max_batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_s, "heatmaps": self.heatmaps}

    def autoscaling_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }
        if self.initial_replicas is not None:
            config["initial_replicas"] = self.initial_replicas
        return config


@dataclass
class ScoringConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    ingress: IngressConfig = field(default_factory=IngressConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def __post_init__(self) -> None:
        if self.ingress.max_frames_per_call > self.scorer.max_batch_size:
            raise ConfigError(
                f"ingress.max_frames_per_call ({self.ingress.max_frames_per_call}) exceeds scorer.max_batch_size "
                f"({self.scorer.max_batch_size}): a call must fit in one batch"
            )
        # Serve's router rejects calls beyond the scorers' max_ongoing_requests and retries
        # them with backoff, which stalls the stream for seconds; frames should wait inside
        # the scorer's batch queue instead. (Calls carry one frame or more, so this is safe.)
        in_flight = self.ingress.max_in_flight * self.ingress.replicas
        capacity = self.scorer.max_ongoing_requests * self.scorer.min_replicas
        if in_flight > capacity:
            raise ConfigError(
                f"ingress.max_in_flight x replicas ({in_flight}) exceeds scorer.max_ongoing_requests x min_replicas "
                f"({capacity}): raise scorer.max_ongoing_requests or lower ingress.max_in_flight"
            )

    @classmethod
    def from_args(cls, args: dict[str, Any] | None) -> "ScoringConfig":
        return load_dataclass(cls, args, "inspection args")

    def to_args(self) -> dict[str, Any]:
        return asdict(self)
