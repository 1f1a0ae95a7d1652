"""Which model version the ingress sends each product's frames to."""

from __future__ import annotations

from pathlib import Path

from test_registry import make_run_dir

from protos.hdm.v1 import models_pb2
from services.registry import ModelRegistry
from services.scoring.versions import ModelVersions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def published(tmp_path: Path, product: str, count: int) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    for i in range(count):
        registry.publish(product, make_run_dir(tmp_path / f"{product}-run{i}", float(i)))
    return registry


def announcement(product: str, version: str) -> models_pb2.ModelAnnouncement:
    return models_pb2.ModelAnnouncement(product=product, version=version)


def test_starts_from_the_registrys_latest_versions(tmp_path):
    versions = ModelVersions(published(tmp_path, "tile", 2), refresh_s=1.0)
    assert versions.lookup("tile").version == "v2"
    assert versions.snapshot() == {"tile": "v2"}


def test_a_newer_announced_version_takes_over_and_older_ones_are_ignored(tmp_path):
    registry = published(tmp_path, "tile", 1)
    versions = ModelVersions(registry, refresh_s=1.0)
    registry.publish("tile", make_run_dir(tmp_path / "run-new", 9.0))
    assert versions.lookup("tile").version == "v1", "a known product is not re-read: announcements move it"
    assert versions.announce(announcement("tile", "v2")) is True
    assert versions.lookup("tile").version == "v2"
    assert versions.announce(announcement("tile", "v1")) is False, "replayed old announcements change nothing"
    assert versions.lookup("tile").version == "v2"


def test_an_announced_version_missing_from_the_registry_is_ignored(tmp_path):
    versions = ModelVersions(published(tmp_path, "tile", 1), refresh_s=1.0)
    assert versions.announce(announcement("tile", "v7")) is False
    assert versions.announce(announcement("../etc", "v1")) is False
    assert versions.lookup("tile").version == "v1"


def test_an_unknown_product_is_looked_up_again_only_after_the_refresh_interval(tmp_path):
    registry = published(tmp_path, "tile", 1)
    clock = Clock()
    versions = ModelVersions(registry, refresh_s=2.0, clock=clock)
    assert versions.lookup("gear") is None
    registry.publish("gear", make_run_dir(tmp_path / "gear-run", 1.0))
    clock.now = 1.0
    assert versions.lookup("gear") is None, "throttled: a flood of unknown-product frames costs one listing per interval"
    clock.now = 2.5
    assert versions.lookup("gear").version == "v1"
    assert versions.lookup("bad name/") is None
