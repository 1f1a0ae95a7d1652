"""`hdm train/eval/predict`: one-line errors with exit code 2, JSON output, overlays."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hdm.calibration import fit_calibration
from hdm.checkpoint import save_checkpoint
from hdm.config import HDMConfig
from hdm.data.synthetic import write_dataset
from hdm.models import HDMModel
from services.cli import main

EVAL_KEYS = {"image_auroc", "pixel_auroc", "aupro", "pixel_ap", "f1_max", "threshold", "images", "seconds"}


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "plates", size=32, seed=1, n_train=12, n_test_good=6, n_test_defect=8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = HDMConfig.small(32)
    cal = fit_calibration(np.linspace(0.4, 0.6, 20), np.linspace(0, 1, 100))
    return save_checkpoint(tmp_path_factory.mktemp("run"), HDMModel(cfg), cfg, cal, meta={"version": "t1"})


def _one_line_error(capsys, argv, match):
    code = None
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors exit from inside the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert match in err


def test_bad_paths_and_options_give_one_line_and_exit_2(capsys, tmp_path, products, run_dir):
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "not a directory")
    _one_line_error(capsys, ["train", "--data", str(products), "--out", str(tmp_path / "r"), "--image-size", "30"], "divisible")
    _one_line_error(capsys, ["train", "--data", str(products), "--out", str(tmp_path / "r"), "--ablation", "bogus"], "invalid choice")
    _one_line_error(capsys, ["train", "--data", str(products), "--out", str(tmp_path / "r"), "--max-steps", "-3"], "must be positive")
    _one_line_error(capsys, ["train", "--data", str(products), "--out", str(tmp_path / "r"), "--max-steps", "ten"], "not an integer: ten")
    _one_line_error(capsys, ["train", "--data", str(products), "--out", str(tmp_path / "r"), "--max-minutes", "1e"], "not a number: 1e")
    _one_line_error(capsys, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")], "train/good")
    _one_line_error(capsys, ["eval", "--model", str(tmp_path), "--data", str(products)], "not an HDM checkpoint")
    _one_line_error(capsys, ["eval", "--model", str(run_dir), "--data", str(products / "train" / "good")], "evaluation needs")
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _one_line_error(capsys, ["predict", "--model", str(run_dir), str(bad_image), "--out", str(tmp_path / "p")], "bad.png")


def test_eval_json_prints_one_object_with_the_metrics(capsys, products, run_dir):
    assert main(["eval", "--model", str(run_dir), "--data", str(products), "--device", "cpu", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    assert EVAL_KEYS <= set(result)
    assert result["images"] == 14
    assert 0 <= result["image_auroc"] <= 1 and 0 <= result["pixel_auroc"] <= 1
    assert result["threshold"] == pytest.approx(0.6)


def test_predict_writes_overlays_and_json_lines(capsys, tmp_path, products, run_dir):
    images = sorted((products / "test" / "hole").glob("*.png"))[:2]
    assert main(["predict", "--model", str(run_dir), *map(str, images), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    for line in lines:
        assert line["verdict"] in ("anomalous", "normal") and 0 <= line["probability"] <= 1
        assert line["model_version"] == "t1"
        overlay = np.asarray(Image.open(line["overlay"]))
        assert overlay.shape == (32, 32, 3)
    assert len((tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()) == 2


def test_train_then_eval_through_the_installed_command(tmp_path, products):
    overrides = tmp_path / "tiny.json"
    overrides.write_text(json.dumps({"denoiser": {"block_out_channels": [16, 32], "norm_num_groups": 8, "patch_size": 1},
                                     "discriminator": {"channels": [8, 16, 32], "patch_size": 1},
                                     "train": {"warmup_steps": 2}}))
    hdm = [sys.executable, "-m", "services.cli"]
    train = subprocess.run([*hdm, "train", "--data", str(products), "--out", str(tmp_path / "run"), "--image-size", "32",
                            "--max-steps", "4", "--device", "cpu", "--config", str(overrides), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert train.returncode == 0, train.stderr
    summary = json.loads(train.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 4 and summary["image_size"] == 32
    again = subprocess.run([*hdm, "train", "--data", str(products), "--out", str(tmp_path / "run"), "--max-steps", "4"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds a training run" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_synth_writes_a_category_the_reader_accepts_and_refuses_a_used_folder(capsys, tmp_path):
    from hdm.data.mvtec import MVTecCategory

    out = tmp_path / "wood"
    assert main(["synth", "--out", str(out), "--material", "wood", "--image-size", "32", "--seed", "3",
                 "--train", "5", "--test-good", "2", "--test-defect", "8"]) == 0
    category = MVTecCategory(out)
    assert len(category.train_paths) == 5 and len(category.test_samples) == 10
    masks = sorted(p.relative_to(out).as_posix() for p in (out / "ground_truth").rglob("*_mask.png"))
    assert masks == [f"ground_truth/{kind}/{i:03d}_mask.png" for kind in ("hole", "missing", "scratch", "stain") for i in (0, 1)]
    capsys.readouterr()
    _one_line_error(capsys, ["synth", "--out", str(out)], "exists and is not empty")
    _one_line_error(capsys, ["synth", "--out", str(out / "train" / "good" / "000.png")], "not a directory")
    _one_line_error(capsys, ["synth", "--out", str(tmp_path / "x"), "--material", "glass"], "invalid choice")
