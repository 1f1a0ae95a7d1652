"""Checkpoints without pickle: model.safetensors + config.json + calibration.json in one directory.

The run's metadata (version, steps, data, timings) travels inside model.safetensors' header,
so the three files are the whole model. Training state for resuming (optimizers, RNGs, step)
lives apart, in train_state/, and is written the same way: tensors in safetensors, the rest JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hdm.calibration import Calibration, CalibrationError
from hdm.config import ConfigError, HDMConfig
from hdm.models import HDMModel

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.json"
TRAIN_STATE_DIR = "train_state"
FORMAT = "hdm-inspect/1"
_META_KEY = "hdm_meta"


class CheckpointError(ValueError):
    """A directory that is not a usable HDM checkpoint; the message says why."""


@dataclass
class Checkpoint:
    model: HDMModel
    config: HDMConfig
    calibration: Calibration
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    run_dir: str | Path,
    model: HDMModel,
    cfg: HDMConfig,
    calibration: Calibration | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the three files (each atomically, so a crash never leaves a half-written one)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {_META_KEY: json.dumps({"format": FORMAT, **(meta or {})}, sort_keys=True, default=str)}
    _atomic_write(run_dir / MODEL_FILE, lambda p: save_file(tensors, p, metadata=header))
    _atomic_write(run_dir / CONFIG_FILE, lambda p: cfg.save(p))
    _atomic_write(run_dir / CALIBRATION_FILE, lambda p: (calibration or Calibration.default()).save(p))
    return run_dir


def load_checkpoint(run_dir: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory into an eval-mode model; never unpickles anything."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"not a directory: {run_dir}")
    missing = [n for n in (MODEL_FILE, CONFIG_FILE, CALIBRATION_FILE) if not (run_dir / n).is_file()]
    if missing:
        raise CheckpointError(f"{run_dir} is not an HDM checkpoint (missing {', '.join(missing)})")
    try:
        cfg = HDMConfig.load(run_dir / CONFIG_FILE)
        calibration = Calibration.load(run_dir / CALIBRATION_FILE)
    except (ConfigError, CalibrationError) as exc:
        raise CheckpointError(f"{run_dir}: {exc}") from None
    tensors, meta = _read_weights(run_dir / MODEL_FILE)
    model = HDMModel(cfg)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{run_dir / MODEL_FILE} does not match config.json: {first}") from None
    model.to(device).eval()
    return Checkpoint(model=model, config=cfg, calibration=calibration, meta=meta)


def content_hash(run_dir: str | Path) -> str:
    """A short hash of the weights: a stable version for a checkpoint that names none."""
    digest = hashlib.sha256()
    with open(Path(run_dir) / MODEL_FILE, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
        meta = json.loads(header.get(_META_KEY, "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable weights ({exc})") from None
    return tensors, meta


def _atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


# -- training state (resume) -------------------------------------------------------


def save_train_state(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Save nested state (dicts, lists, scalars, tensors), e.g. optimizer state_dicts and RNG states."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors, "s")
    folder = Path(run_dir) / TRAIN_STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / "tensors.safetensors", lambda p: save_file(tensors, p))
    _atomic_write(folder / "state.json", lambda p: Path(p).write_text(json.dumps(skeleton)))


def load_train_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The state save_train_state wrote, or None when the run has none."""
    folder = Path(run_dir) / TRAIN_STATE_DIR
    if not (folder / "state.json").is_file():
        return None
    try:
        tensors = load_file(str(folder / "tensors.safetensors"))
        skeleton = json.loads((folder / "state.json").read_text())
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: unreadable training state ({exc})") from None
    return _unflatten(skeleton, tensors)


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        # Pairs keep non-string keys (optimizer state is keyed by int).
        return {"__dict__": [[k, _flatten(v, tensors, f"{key}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in the training state")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
    return obj
