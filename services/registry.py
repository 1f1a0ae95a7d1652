"""The model registry: immutable model versions under `models/<product>/<version>/`.

A version directory holds what `hdm.checkpoint` writes (`model.safetensors`,
`config.json`, `calibration.json`, plus any other JSON metadata of the run). Versions
are named `v1`, `v2`, ... so "latest" is the highest number, and they never change
once published: a version is staged beside its final place and renamed into it in
one atomic step, and a name that exists is never written again. New versions are
announced on `inspection.models` so scorers switch to them without a restart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from protos.hdm.v1 import models_pb2

REQUIRED_FILES = ("model.safetensors", "config.json", "calibration.json")
_PRODUCT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"^v([0-9]{1,9})$")
_STAGING_PREFIX = ".staging-"
_PUBLISH_ATTEMPTS = 20


class RegistryError(ValueError):
    """A registry request that cannot be met: unknown product or version, bad run dir, version taken."""


@dataclass(frozen=True)
class RegistryConfig:
    root: str = "models"


@dataclass(frozen=True)
class ModelVersion:
    product: str
    version: str
    path: Path

    @property
    def model_id(self) -> str:
        """The id a scorer loads it by (Ray Serve's multiplexed model id)."""
        return f"{self.product}/{self.version}"

    @property
    def number(self) -> int:
        return version_number(self.version)


def version_number(version: str) -> int:
    match = _VERSION_RE.match(version)
    if not match:
        raise RegistryError(f"bad model version {version!r}: versions are named v1, v2, ...")
    return int(match.group(1))


def parse_model_id(model_id: str) -> tuple[str, str]:
    product, sep, version = model_id.rpartition("/")
    if not sep:
        raise RegistryError(f"bad model id {model_id!r}: expected <product>/<version>")
    check_product(product)
    version_number(version)
    return product, version


def check_product(product: str) -> str:
    if not _PRODUCT_RE.match(product or ""):
        raise RegistryError(f"bad product name {product!r}: letters, digits, '.', '_' and '-' only (at most 64)")
    return product


class ModelRegistry:
    """Model versions on a filesystem (a local folder or a volume shared by the cluster)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def products(self) -> list[str]:
        """Products with at least one published version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _PRODUCT_RE.match(p.name) and self.versions(p.name))

    def versions(self, product: str) -> list[str]:
        """Published versions of a product, oldest first."""
        folder = self.root / check_product(product)
        if not folder.is_dir():
            return []
        names = [p.name for p in folder.iterdir() if _VERSION_RE.match(p.name) and p.is_dir()]
        return sorted(names, key=version_number)

    def latest(self, product: str) -> ModelVersion | None:
        versions = self.versions(product)
        return self.get(product, versions[-1]) if versions else None

    def get(self, product: str, version: str) -> ModelVersion:
        version_number(version)
        path = self.root / check_product(product) / version
        if not path.is_dir():
            raise RegistryError(f"no model version {product}/{version} in {self.root}")
        return ModelVersion(product, version, path)

    def resolve(self, model_id: str) -> ModelVersion:
        return self.get(*parse_model_id(model_id))

    def publish(self, product: str, run_dir: str | Path, version: str | None = None) -> ModelVersion:
        """Copy a checkpoint directory in as a new version (the next number unless `version` is given)."""
        check_product(product)
        if version is not None:
            version_number(version)
        files = _checkpoint_files(Path(run_dir))
        folder = self.root / product
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for src in files:
                _copy_durably(src, staging / src.name)
            _fsync_dir(staging)
            return self._rename_into_place(product, staging, version)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _rename_into_place(self, product: str, staging: Path, version: str | None) -> ModelVersion:
        for _ in range(_PUBLISH_ATTEMPTS):
            name = version or f"v{self._next_number(product)}"
            target = self.root / product / name
            if not target.exists():
                try:
                    os.rename(staging, target)  # atomic; fails if another publisher filled the name first
                except OSError:
                    pass
                else:
                    _fsync_dir(target.parent)
                    return ModelVersion(product, name, target)
            if version is not None:
                raise RegistryError(f"model version {product}/{name} already exists; versions are immutable")
        raise RegistryError(f"could not publish {product}: version names kept being taken by other publishers")

    def _next_number(self, product: str) -> int:
        versions = self.versions(product)
        return version_number(versions[-1]) + 1 if versions else 1


def announcement(model: ModelVersion, metrics: Mapping[str, float] | None = None) -> models_pb2.ModelAnnouncement:
    message = models_pb2.ModelAnnouncement(product=model.product, version=model.version, uri=str(model.path.resolve()))
    message.created_at.GetCurrentTime()
    for key, value in (metrics or {}).items():
        message.metrics[key] = float(value)
    return message


def announce(producer: Any, topic: str, model: ModelVersion, metrics: Mapping[str, float] | None = None, timeout_s: float = 30.0) -> None:
    """Publish the announcement (key = product) and wait until the broker has it."""
    value = announcement(model, metrics).SerializeToString()
    producer.send(topic, key=model.product.encode(), value=value).get(timeout=timeout_s)


def parse_announcement(value: bytes) -> models_pb2.ModelAnnouncement:
    message = models_pb2.ModelAnnouncement()
    message.ParseFromString(value)
    check_product(message.product)
    version_number(message.version)
    return message


def _checkpoint_files(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        raise RegistryError(f"not a checkpoint directory: {run_dir}")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise RegistryError(f"{run_dir} is not a checkpoint: missing {', '.join(missing)}")
    extra_json = sorted(p for p in run_dir.glob("*.json") if p.is_file() and p.name not in REQUIRED_FILES)
    for path in [run_dir / name for name in REQUIRED_FILES if name.endswith(".json")] + extra_json:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}") from None
    _check_safetensors(run_dir / "model.safetensors")
    return [run_dir / name for name in REQUIRED_FILES] + extra_json


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise RegistryError(f"{path} is not a readable safetensors file: {exc}") from None


def _copy_durably(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())
    dst.chmod(0o444)  # a published version is read-only


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
