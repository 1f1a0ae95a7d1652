"""The model registry: publish, latest, immutability, announcements."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from services.registry import (
    ModelRegistry,
    RegistryError,
    announcement,
    parse_announcement,
    parse_model_id,
)


def make_run_dir(path: Path, marker: float = 1.0, extra_meta: bool = False) -> Path:
    path.mkdir(parents=True)
    save_file({"weight": np.full((2, 2), marker, dtype=np.float32)}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"image_size": 32}))
    (path / "calibration.json").write_text(json.dumps({"threshold": marker}))
    (path / "optimizer.safetensors").write_bytes(b"training state, not part of a model version")
    if extra_meta:
        (path / "meta.json").write_text(json.dumps({"steps": 10}))
    return path


def test_publish_numbers_versions_and_latest_follows(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.products() == [] and registry.latest("tile") is None

    first = registry.publish("tile", make_run_dir(tmp_path / "run1", 1.0, extra_meta=True))
    second = registry.publish("tile", make_run_dir(tmp_path / "run2", 2.0))

    assert (first.version, second.version) == ("v1", "v2")
    assert registry.latest("tile") == second
    assert registry.versions("tile") == ["v1", "v2"]
    assert registry.products() == ["tile"]
    assert sorted(p.name for p in first.path.iterdir()) == ["calibration.json", "config.json", "meta.json", "model.safetensors"]
    assert json.loads((second.path / "calibration.json").read_text()) == {"threshold": 2.0}
    assert registry.resolve(second.model_id) == second
    assert parse_model_id("tile/v2") == ("tile", "v2")


def test_latest_orders_numerically_not_lexically(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    run = make_run_dir(tmp_path / "run")
    registry.publish("tile", run, version="v9")
    registry.publish("tile", run)
    assert registry.latest("tile").version == "v10"


def test_versions_are_immutable(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    published = registry.publish("tile", make_run_dir(tmp_path / "run1", 1.0), version="v1")
    before = (published.path / "model.safetensors").read_bytes()

    with pytest.raises(RegistryError, match="immutable"):
        registry.publish("tile", make_run_dir(tmp_path / "run2", 2.0), version="v1")

    assert (published.path / "model.safetensors").read_bytes() == before
    assert not [p for p in (tmp_path / "models" / "tile").iterdir() if p.name.startswith(".")], "staging left behind"


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    runs = [make_run_dir(tmp_path / f"run{i}", float(i)) for i in range(6)]
    published = []
    threads = [threading.Thread(target=lambda r=r: published.append(registry.publish("tile", r))) for r in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(m.number for m in published) == [1, 2, 3, 4, 5, 6]
    thresholds = {json.loads((m.path / "calibration.json").read_text())["threshold"] for m in published}
    assert thresholds == {float(i) for i in range(6)}, "each version holds exactly one run's files"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "calibration.json").unlink(), "missing calibration.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 16), "not a readable safetensors"),
    ],
)
def test_a_damaged_checkpoint_is_refused_and_nothing_is_published(tmp_path, damage, message):
    run = make_run_dir(tmp_path / "run")
    damage(run)
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(RegistryError, match=message):
        registry.publish("tile", run)
    assert registry.versions("tile") == []


def test_bad_names_are_refused(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    run = make_run_dir(tmp_path / "run")
    with pytest.raises(RegistryError, match="product"):
        registry.publish("../escape", run)
    with pytest.raises(RegistryError, match="version"):
        registry.publish("tile", run, version="latest")
    with pytest.raises(RegistryError, match="no model version"):
        registry.get("tile", "v1")


def test_announcement_round_trips(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    model = registry.publish("tile", make_run_dir(tmp_path / "run"))
    message = parse_announcement(announcement(model, {"image_auroc": 0.93}).SerializeToString())
    assert (message.product, message.version) == ("tile", "v1")
    assert Path(message.uri) == model.path.resolve()
    assert message.metrics["image_auroc"] == pytest.approx(0.93)
    assert message.created_at.seconds > 0
