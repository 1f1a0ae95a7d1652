"""HDMConfig: JSON round trip, strict keys, ablation switches, early rejection of unworkable values."""

from __future__ import annotations

import json

import pytest

from hdm.config import ABLATIONS, ConfigError, HDMConfig


@pytest.mark.parametrize("cfg", [HDMConfig(), HDMConfig.cpu(128), HDMConfig.small(32)])
def test_json_round_trip(cfg):
    again = HDMConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert isinstance(again.denoiser.block_out_channels, tuple)


def test_unknown_and_mistyped_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown key.*bogus"):
        HDMConfig.from_dict({"train": {"bogus": 1}})
    with pytest.raises(ConfigError, match="train.batch_size: expected int"):
        HDMConfig.from_dict({"train": {"batch_size": "8"}})
    with pytest.raises(ConfigError, match="dagm.mode"):
        HDMConfig.from_dict({"dagm": {"mode": "magic"}})


def test_ablations_switch_exactly_one_module():
    base = HDMConfig.small(32)
    assert base.with_ablation("paste-dagm").dagm.mode == "paste"
    assert base.with_ablation("no-pom").pom.enabled is False
    assert base.with_ablation("recon-only").score.mode == "reconstruction"
    for name in ABLATIONS:
        changed = base.with_ablation(name)
        assert changed.train.ablation == name
        assert changed.denoiser == base.denoiser and changed.discriminator == base.discriminator
    with pytest.raises(ConfigError, match="unknown ablation"):
        base.with_ablation("no-dagm")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_size": 90}, "divisible"),
        ({"dagm": {"t_range": [800, 1200]}}, "t_range"),
        ({"dagm": {"coverage_range": [0.0, 0.5]}}, "coverage_range"),
        ({"dagm": {"source_weights": [0.0, 0.0, 0.0]}}, "source_weights"),
        ({"dagm": {"source_weights": [1.0, -0.5, 0.5]}}, "source_weights"),
        ({"dagm": {"diffusion_source_weights": [0.0, 0.0, 0.0]}}, "diffusion_source_weights"),
        ({"pom": {"target_far": 0.0}}, "target_far"),
        ({"pom": {"diffusion_min_repair_ratio": 0.0}}, "repair_ratio"),
        ({"train": {"batch_size": 1}}, "batch_size"),
    ],
)
def test_unworkable_values_fail_at_construction(overrides, message):
    with pytest.raises(ConfigError, match=message):
        HDMConfig.small(32).with_overrides(overrides)
