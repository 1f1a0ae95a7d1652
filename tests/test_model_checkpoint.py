"""Checkpoints: exact round trip, no pickle anywhere, clear errors for bad directories."""

from __future__ import annotations

import json

import pytest
import torch

from hdm.calibration import Calibration
from hdm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from hdm.config import HDMConfig
from hdm.models import HDMModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = HDMConfig.small(32)
    model = HDMModel(cfg).eval()
    # Non-trivial BatchNorm statistics, so buffers are part of what must round-trip.
    model.discriminator.train()
    with torch.no_grad():
        model.discriminator(torch.randn(4, 6, 32, 32) * 3 + 1)
    model.eval()
    cal = Calibration(image_threshold=0.3, pixel_threshold=0.4, method="far", null_scores=(0.1, 0.2, 0.3))
    run = save_checkpoint(tmp_path_factory.mktemp("run"), model, cfg, cal, meta={"version": "v7", "steps": 3})
    return run, model, cfg, cal


def test_round_trip_gives_identical_outputs(saved):
    run, model, cfg, cal = saved
    ckpt = load_checkpoint(run)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        a, b = model(x), ckpt.model(x)
    assert torch.equal(a.pred_score, b.pred_score)
    assert torch.equal(a.anomaly_map, b.anomaly_map)
    assert ckpt.config == cfg
    assert ckpt.calibration == cal
    assert ckpt.meta["version"] == "v7" and ckpt.meta["steps"] == 3
    assert not ckpt.model.training


def test_checkpoint_holds_no_pickle(saved):
    run = saved[0]
    names = sorted(p.name for p in run.iterdir())
    assert names == ["calibration.json", "config.json", "model.safetensors"]
    for name in ("calibration.json", "config.json"):
        json.loads((run / name).read_text())
    raw = (run / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    json.loads(raw[8 : 8 + header_len])  # safetensors: a JSON header, then raw tensor bytes
    assert b"\x80\x04\x95" not in raw[:64] and b"torch._utils" not in raw


def test_bad_directories_raise_checkpoint_error(tmp_path, saved):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)
    run = saved[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("calibration.json", "model.safetensors"):
        (bad / name).write_bytes((run / name).read_bytes())
    other = HDMConfig.small(32).with_overrides({"discriminator": {"channels": [4, 8, 16]}})
    other.save(bad / "config.json")
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load_checkpoint(bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(bad)


def test_train_state_round_trip_keeps_optimizer_and_rng(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    save_train_state(tmp_path, {"step": 11, "opt": opt.state_dict(), "rng": gen.get_state(), "none": None})
    state = load_train_state(tmp_path)
    assert state["step"] == 11 and state["none"] is None
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    opt2.load_state_dict(state["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    gen2 = torch.Generator()
    gen2.set_state(state["rng"])
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=gen2))
    assert load_train_state(tmp_path / "missing") is None
