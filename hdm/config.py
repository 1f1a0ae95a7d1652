"""Typed configuration of an HDM model and its training (JSON-safe, nested dataclasses).

Defaults are production sizes (256 px, GPU-sized networks). `HDMConfig.cpu(size)` is
the budget preset a 2-core CPU can train in minutes; `HDMConfig.small(size)` is the
tiny one the tests use. Every method choice HDM_METHOD.md leaves open is a field here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hdm.typed_config import ConfigError, from_mapping

ABLATIONS = ("none", "paste-dagm", "no-pom", "recon-only")
Ablation = Literal["none", "paste-dagm", "no-pom", "recon-only"]
# Whether inference runs through a TorchScript trace (hdm.torchscript); "auto": on CPUs.
TORCHSCRIPT_CHOICES = ("auto", "on", "off")
TorchScript = Literal["auto", "on", "off"]


@dataclass
class DenoiserConfig:
    """The diffusers UNet2DModel that predicts noise; attention only at the lowest resolution."""

    block_out_channels: tuple[int, ...] = (64, 128, 256, 256)
    layers_per_block: int = 1
    norm_num_groups: int = 32
    attention_head_dim: int = 32
    # The UNet sees patch_size x patch_size pixel blocks as channels (pixel unshuffle), so
    # its first level runs at S / patch_size: 4x less work for patch 2 at the same width,
    # still a full-resolution output through pixel shuffle. 1 on GPUs, 2 on CPUs.
    patch_size: int = 1


@dataclass
class DiscriminatorConfig:
    """The segmentation UNet on concat(x, x0_hat): channels per level, one downsampling between levels."""

    channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    patch_size: int = 1  # as DenoiserConfig.patch_size; logits come back at full resolution


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    # What the UNet predicts. "epsilon" (DDPM's choice) amplifies an undertrained network's
    # error by sqrt((1 - abar_t) / abar_t) in the x0 estimate, so after minutes of training its
    # reconstructions and generated content are grainy; "sample" (x0) and "v_prediction"
    # give smooth estimates early on. Reconstruction and DAGM use whichever is chosen.
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    # Reconstruction for DDM: the one-step x0 estimate from each of these timesteps, averaged;
    # recon_ddim_steps > 0 runs that many DDIM steps from each timestep instead.
    recon_timesteps: tuple[int, ...] = (250,)
    recon_ddim_steps: int = 0
    # Fixed noise for reconstruction, so a frame always gets the same score.
    noise_seed: int = 1234
    # Denoiser training timesteps. Only [train_t_min, train_t_max] matters downstream
    # (reconstruction at ~250, DAGM generation below t_max), so a short budget is not spent
    # learning to denoise pure noise.
    train_t_min: int = 1
    train_t_max: int = 1000


@dataclass
class ScoreConfig:
    # "discriminator": D's pixel probabilities (HDM). "reconstruction": |x - x0_hat| alone
    # (the recon-only ablation; the map is the error scaled into [0, 1]).
    mode: Literal["discriminator", "reconstruction"] = "discriminator"
    # Mean of the top 0.1% of the smoothed map: near the maximum, so small defects count,
    # yet not a single pixel (magnetic-tile runs: 0.1% >= 0.3% >= 1% in image AUROC).
    top_k_fraction: float = 0.001
    # Gaussian smoothing of the map, in pixels at 256 px; scaled with the image size.
    smoothing_sigma: float = 4.0


@dataclass
class DAGMConfig:
    # "diffusion": crude source refined by the shared denoiser (HDM). "paste": the crude
    # Perlin cut-and-paste alone (the paste-dagm ablation).
    mode: Literal["diffusion", "paste"] = "diffusion"
    anomaly_fraction: float = 0.5          # share of each training batch that gets an anomaly
    # Perlin masks: noise periods of 2**lo .. 2**hi cells per image side; coverage of the
    # image (or of the foreground) drawn uniformly from the range.
    perlin_scale_range: tuple[int, int] = (0, 5)
    coverage_range: tuple[float, float] = (0.01, 0.25)
    # Share of masks gathered around one random spot (most real defects are local) rather
    # than spread over the image.
    local_mask_prob: float = 0.5
    foreground: Literal["auto", "on", "off"] = "auto"
    # Crude sources, drawn with these weights: shuffled patches of another training image,
    # colour/intensity jitter of the image itself, Perlin-coloured noise. The best mix is the
    # category's: shuffle alone scored +0.04 image AUROC on magnetic tile but -0.07 (pixel
    # AUROC -0.15) on generated wood, whose stains only jitter and noise imitate; without
    # the jitter alone the cut-and-paste ablation kept the tile's gain and lost little on
    # wood, but full HDM did not gain (docs/ablation_log.md).
    source_weights: tuple[float, float, float] = (0.5, 0.3, 0.2)
    # Sources of the crude content the denoiser refines (DAGM's own anomalies); None: the
    # same as source_weights. The crude anomalies keep source_weights either way, so the
    # cut-and-paste ablation is unchanged by this field. Shuffle only, with the crude
    # anomalies' jitter dropped, was level with cut-and-paste over five pairs and cost wood's
    # scratches against the preset (docs/ablation_log.md).
    diffusion_source_weights: tuple[float, float, float] | None = None
    # Opacity: x_anom = M * ((1 - beta) * x_gen + beta * x0) + (1 - M) * x0, beta ~ U(range).
    beta_range: tuple[float, float] = (0.0, 0.6)
    # Share of anomalies refined by the denoiser; the rest stay crude, so the generated set
    # spans crude and realistic anomalies (a mix of generation strengths).
    diffusion_fraction: float = 0.5
    # Where the diffusion-made anomalies go: "swap" takes crude anomalies' slots (the batch
    # keeps its size); "extra" adds them to the batch D sees, so the crude anomalies and
    # normals are exactly the cut-and-paste ablation's and DAGM can only add to them.
    placement: Literal["swap", "extra"] = "swap"
    t_range: tuple[int, int] = (300, 700)  # forward-noise level t_g of the crude composite
    reverse_steps: int = 4                 # reverse steps from t_g back to 0
    tau: float = 0.5                       # variance inflation (1 + tau) of each reverse step
    # > 0: keep x0's fine texture under generated content, taking only the change blurred
    # with this sigma (pixels at 128 px); 0 takes the generated content as it is.
    keep_texture_sigma: float = 0.0
    # Diffusion generation costs reverse_steps denoiser passes per sample, so refined
    # anomalies live in a bank refreshed with the current denoiser: each step generates
    # bank_refresh_count new ones and draws the rest from the bank. Every sample is reused
    # about bank_size / bank_refresh_count steps while generation keeps tracking the denoiser.
    bank_size: int = 64
    bank_refresh_count: int = 4
    bank_refresh_every: int = 1            # steps between refreshes: > 1 trades freshness for steps


@dataclass
class POMConfig:
    enabled: bool = True
    # P_change = d^2 / (d^2 + change_scale^2), d = locally averaged |x_anom - x0| (channel mean).
    change_scale: float = 0.06
    # Reject a candidate whose refined target keeps less than this share of its mask, or
    # whose mean change inside the mask is below min_mean_change: invisible anomalies are label noise.
    min_changed_fraction: float = 0.25
    min_mean_change: float = 0.03
    # The bar for diffusion-made anomalies, None for the same as crude ones. A denoiser
    # trained on normal images repairs much of what it is given, so its anomalies are
    # fainter (median mean change ~0.04 against ~0.18 for cut-and-paste on magnetic
    # tile); the faint ones it passes look normal to the denoiser as well, so D learns
    # to flag normal variation from them.
    diffusion_min_mean_change: float | None = None
    # Judge a diffusion-made change against the denoiser's own reconstruction error of the
    # normal image at that pixel (P_change = d^2 / (d^2 + change_scale^2 + floor^2)): where
    # the material varies more than the denoiser can reproduce (wood grain), a faint change
    # is no anomaly to the DDM and gets a low target; on a plain surface it keeps its target.
    # Off by default: no gain that held over two seeds (docs/ablation_log.md).
    diffusion_noise_floor: bool = False
    # Reject a diffusion-made candidate unless DDM's reconstruction changes it inside the mask
    # at least this many times as much as outside (None: no such check). The denoiser repairs
    # real defects (1.85x on magnetic tile) and cut-and-paste (1.67x), but leaves most of its
    # own content alone (0.96x): such samples teach D to flag appearance, not what DDM sees.
    diffusion_min_repair_ratio: float | None = None
    max_tries: int = 3
    difficulty_gamma: float = 1.0          # weight = 1 + gamma * (1 - p_detected)
    # gamma for diffusion-made anomalies, None for the same. The denoiser repairs little of
    # its own anomalies, so D must learn them from appearance alone; early in training it
    # misses them, and weighting them up teaches it to flag the material's own shading.
    diffusion_difficulty_gamma: float | None = None
    # Calibration on held-out normal images.
    target_far: float = 0.01
    pixel_target_far: float = 0.001
    holdout_fraction: float = 0.1
    holdout_min: int = 8
    holdout_max: int = 64


@dataclass
class LossConfig:
    focal_gamma: float = 2.0
    focal_alpha: float = 0.75
    lambda_noise: float = 1.0
    lambda_focal: float = 1.0
    lambda_l1: float = 1.0


@dataclass
class TrainConfig:
    batch_size: int = 16
    # Normals per step for the denoiser's loss in the joint phase (0 = the whole batch); the
    # denoiser's backward pass is the most expensive part of a step on a CPU.
    denoiser_batch_size: int = 0
    lr_denoiser: float = 2e-4
    lr_discriminator: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500                # denoiser alone, before joint training
    max_steps: int = 20000
    max_minutes: float | None = None
    seed: int = 0
    ablation: Ablation = "none"
    hflip: bool = False                    # flips are wrong for oriented objects; opt-in
    num_threads: int = 0                   # torch intra-op threads; 0 = all cores
    checkpoint_every_steps: int = 500
    log_every_steps: int = 25


@dataclass
class HDMConfig:
    image_size: int = 256
    # bf16 autocast for training and inference where the hardware is fast at it (see hdm.precision).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    dagm: DAGMConfig = field(default_factory=DAGMConfig)
    pom: POMConfig = field(default_factory=POMConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    # -- presets -----------------------------------------------------------------
    @classmethod
    def cpu(cls, image_size: int = 128) -> HDMConfig:
        """Sized for minutes on a 2-core CPU, where accuracy per minute is what counts.

        Both networks see 2x2 pixel blocks as channels (patch_size 2), so their top level
        runs at half resolution; a 128 px step takes about 0.3-0.6 s on 2 cores. A denoiser
        trained for minutes predicts noise poorly, and epsilon prediction turns that into
        grainy x0 estimates, so it predicts x0 ("sample") instead. DAGM keeps the product's
        fine texture under generated content and makes a quarter of the anomalies: in
        magnetic-tile runs of this budget more diffusion-made anomalies (or grainy ones)
        lowered image AUROC. It makes a new one every fourth step, not every step: the
        generation's cost in training steps mattered more than the bank's freshness
        (image AUROC 0.787 and 0.797 against 0.738 and 0.730 on two seeds; README). POM does
        not weigh up the diffusion-made anomalies D misses (+0.02 and +0.03 image AUROC on
        two seeds), and keeps only those DDM's reconstruction reveals (repair ratio 1.4):
        a denoiser trained for minutes leaves most of its own content alone, so D could
        only learn those by appearance. With the check, DAGM refines the crude composite
        lightly (one x0 estimate from t_g in 30..80; at one step the variance inflation has
        nothing to act on) and makes four candidates every fourth step, of which about one
        in eight passes. Its anomalies are added to the batch D sees rather than swapped in
        for crude ones (+0.03 image AUROC on magnetic tile and on wood, paired, seed 0;
        docs/ablation_log.md).
        """
        return cls(
            image_size=image_size,
            denoiser=DenoiserConfig(block_out_channels=(16, 32, 64, 128), norm_num_groups=8, attention_head_dim=32, patch_size=2),
            discriminator=DiscriminatorConfig(channels=(32, 64, 128, 128), patch_size=2),
            diffusion=DiffusionConfig(prediction_type="sample", recon_timesteps=(250,), train_t_max=500),
            dagm=DAGMConfig(t_range=(30, 80), reverse_steps=1, tau=0.5, keep_texture_sigma=2.0, diffusion_fraction=0.25,
                            bank_size=48, bank_refresh_count=4, bank_refresh_every=4, placement="extra"),
            pom=POMConfig(diffusion_difficulty_gamma=0.0, diffusion_min_repair_ratio=1.4),
            train=TrainConfig(batch_size=8, warmup_steps=150, lr_denoiser=5e-4, lr_discriminator=1e-3, max_steps=4000),
        )

    @classmethod
    def small(cls, image_size: int = 32) -> HDMConfig:
        """Tiny networks for tests and demos on generated data."""
        return cls(
            image_size=image_size,
            precision="fp32",  # bf16 casts cost more than they save on networks this small
            denoiser=DenoiserConfig(block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=16),
            discriminator=DiscriminatorConfig(channels=(8, 16, 32)),
            diffusion=DiffusionConfig(prediction_type="sample", train_t_max=500),
            dagm=DAGMConfig(t_range=(100, 400), reverse_steps=2, keep_texture_sigma=2.0, diffusion_fraction=0.25,
                            bank_size=8, bank_refresh_count=1),
            pom=POMConfig(holdout_min=4),
            train=TrainConfig(batch_size=8, warmup_steps=20, lr_denoiser=1e-3, lr_discriminator=2e-3,
                              checkpoint_every_steps=100, log_every_steps=10),
        )

    @classmethod
    def for_device(cls, device: str, image_size: int) -> HDMConfig:
        return cls.cpu(image_size) if device == "cpu" else cls(image_size=image_size)

    # -- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HDMConfig:
        return from_mapping(cls, data, "config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def with_overrides(self, overrides: dict[str, Any]) -> HDMConfig:
        """A copy with nested keys replaced, e.g. {"train": {"batch_size": 4}}; unknown keys are errors."""
        return HDMConfig.from_dict(_deep_merge(self.to_dict(), overrides))

    def with_ablation(self, ablation: str) -> HDMConfig:
        """The same config with one module switched off, as the ablation study needs."""
        if ablation not in ABLATIONS:
            raise ConfigError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
        changes: dict[str, Any] = {"train": {"ablation": ablation}}
        if ablation == "paste-dagm":
            changes["dagm"] = {"mode": "paste"}
        elif ablation == "no-pom":
            changes["pom"] = {"enabled": False}
        elif ablation == "recon-only":
            changes["score"] = {"mode": "reconstruction"}
        return self.with_overrides(changes)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> HDMConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def validate(cfg: HDMConfig) -> None:
    """Reject values that would fail later with an obscure error."""
    size = cfg.image_size
    for name, levels, patch in (
        ("denoiser", len(cfg.denoiser.block_out_channels), cfg.denoiser.patch_size),
        ("discriminator", len(cfg.discriminator.channels), cfg.discriminator.patch_size),
    ):
        factor = patch * 2 ** (levels - 1)
        if patch < 1 or size < 16 or size % factor:
            raise ConfigError(f"image_size {size} must be >= 16 and divisible by {factor} for the {name}")
    for name, channels in (("denoiser", cfg.denoiser.block_out_channels),):
        bad = [c for c in channels if c % cfg.denoiser.norm_num_groups]
        if bad:
            raise ConfigError(f"{name} channels {bad} not divisible by norm_num_groups {cfg.denoiser.norm_num_groups}")
    t_max = cfg.diffusion.num_train_timesteps
    lo, hi = cfg.dagm.t_range
    if not 0 < lo <= hi < t_max:
        raise ConfigError(f"dagm.t_range {cfg.dagm.t_range} must lie inside (0, {t_max})")
    if any(not 0 < t < t_max for t in cfg.diffusion.recon_timesteps):
        raise ConfigError(f"diffusion.recon_timesteps {cfg.diffusion.recon_timesteps} must lie inside (0, {t_max})")
    if not 1 <= cfg.diffusion.train_t_min < cfg.diffusion.train_t_max <= t_max:
        raise ConfigError("diffusion.train_t_min/train_t_max must satisfy 1 <= min < max <= num_train_timesteps")
    lo_c, hi_c = cfg.dagm.coverage_range
    if not 0 < lo_c <= hi_c < 1:
        raise ConfigError(f"dagm.coverage_range {cfg.dagm.coverage_range} must lie inside (0, 1)")
    if cfg.train.ablation not in ABLATIONS:
        raise ConfigError(f"train.ablation {cfg.train.ablation!r} not one of {ABLATIONS}")
    if not 0 < cfg.score.top_k_fraction <= 1:
        raise ConfigError("score.top_k_fraction must be in (0, 1]")
    if not 0 < cfg.pom.target_far < 1 or not 0 < cfg.pom.pixel_target_far < 1:
        raise ConfigError("pom.target_far and pom.pixel_target_far must be in (0, 1)")
    for name in ("source_weights", "diffusion_source_weights"):
        weights = getattr(cfg.dagm, name)
        if weights is not None and (len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0):
            raise ConfigError(f"dagm.{name} {list(weights)} must be three non-negative weights (shuffle, jitter, noise), not all 0")
    if not 0 <= cfg.dagm.diffusion_fraction <= 1:
        raise ConfigError("dagm.diffusion_fraction must be in [0, 1]")
    if cfg.dagm.bank_refresh_every < 1 or cfg.dagm.bank_refresh_count < 1:
        raise ConfigError("dagm.bank_refresh_every and dagm.bank_refresh_count must be at least 1")
    if cfg.pom.diffusion_min_repair_ratio is not None and cfg.pom.diffusion_min_repair_ratio <= 0:
        raise ConfigError("pom.diffusion_min_repair_ratio must be positive (or null for no check)")
    if cfg.train.batch_size < 2:
        raise ConfigError("train.batch_size must be at least 2")


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
