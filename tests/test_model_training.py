"""Training: learns on tiny synthetic products, stops on budget, resumes exactly, pairs its ablations, refuses to overwrite."""

from __future__ import annotations

import json

import pytest
import torch

from hdm.checkpoint import load_checkpoint
from hdm.config import HDMConfig
from hdm.data.synthetic import write_dataset
from hdm.evaluation import evaluate_run
from hdm.training import TrainHooks, TrainingError, train

QUIET = TrainHooks(progress=False)


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "plates", size=32, seed=0, n_train=48, n_test_good=24, n_test_defect=24)


def _cfg(steps: int, **train) -> HDMConfig:
    return HDMConfig.small(32).with_overrides({"train": {"max_steps": steps, "num_threads": 1, **train}})


@pytest.mark.slow
def test_short_training_beats_chance(products, tmp_path):
    result = train(_cfg(600), products, tmp_path / "run", device="cpu", hooks=QUIET)
    metrics = evaluate_run(tmp_path / "run", products, device="cpu", progress=False)
    assert result.steps == 600
    assert metrics["image_auroc"] > 0.7
    assert metrics["pixel_auroc"] > 0.8
    # The calibration is fitted on held-out normals, so the threshold flags few normal test images.
    assert result.calibration.method == "far" and len(result.calibration.null_scores) >= 4
    assert metrics["false_alarm_rate"] <= 0.25


def test_resume_continues_from_the_saved_step_exactly(products, tmp_path):
    # Cut-and-paste mode draws everything from the restored RNGs, so a resumed run must equal an uninterrupted one.
    cfg = _cfg(8, warmup_steps=3, checkpoint_every_steps=4, log_every_steps=1).with_ablation("paste-dagm")
    straight = train(cfg, products, tmp_path / "straight", device="cpu", hooks=QUIET)

    def crash_after_first_checkpoint(record, checkpoint_dir):
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, products, tmp_path / "cut", device="cpu", hooks=TrainHooks(progress=False, report=crash_after_first_checkpoint))
    assert load_checkpoint(tmp_path / "cut").meta["steps"] == 4
    with pytest.raises(TrainingError, match="already holds a training run"):
        train(cfg, products, tmp_path / "cut", device="cpu", hooks=QUIET)
    resumed = train(cfg, products, tmp_path / "cut", device="cpu", resume=True, hooks=QUIET)
    assert resumed.steps == straight.steps == 8
    a = load_checkpoint(tmp_path / "straight").model.state_dict()
    b = load_checkpoint(tmp_path / "cut").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps_logged = [json.loads(line)["step"] for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert steps_logged[-1] == 8


def test_resume_with_another_config_is_refused(products, tmp_path):
    train(_cfg(2), products, tmp_path / "run", device="cpu", hooks=QUIET)
    other = _cfg(4).with_overrides({"loss": {"focal_gamma": 1.0}})
    with pytest.raises(TrainingError, match="different configuration"):
        train(other, products, tmp_path / "run", device="cpu", resume=True, hooks=QUIET)


def test_time_budget_stops_training_and_still_calibrates(products, tmp_path):
    result = train(_cfg(100000, max_minutes=0.05), products, tmp_path / "run", device="cpu", hooks=QUIET)
    assert 0 < result.steps < 1000
    assert result.seconds < 4.5  # the 3 s budget, plus at most the step that crossed it
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.meta["complete"] is True and ckpt.meta["steps"] == result.steps
    assert ckpt.calibration.method == "far"


def test_bad_data_is_a_training_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError):
        train(_cfg(2), tmp_path / "empty", tmp_path / "run", device="cpu", hooks=QUIET)


def test_full_hdm_and_its_paste_ablation_train_the_same_denoiser(products, tmp_path):
    # DAGM's bank draws from random streams of its own, so the normals and the noise the
    # denoiser trains on are the same in both variants: the ablation changes D's anomalies only.
    cfg = _cfg(12, warmup_steps=3)
    train(cfg, products, tmp_path / "full", device="cpu", hooks=QUIET)
    train(cfg.with_ablation("paste-dagm"), products, tmp_path / "paste", device="cpu", hooks=QUIET)
    full, paste = (load_checkpoint(tmp_path / name).model for name in ("full", "paste"))
    pairs = list(zip(full.denoiser.state_dict().values(), paste.denoiser.state_dict().values(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not all(torch.equal(a, b) for a, b in zip(full.discriminator.state_dict().values(), paste.discriminator.state_dict().values(), strict=True))
