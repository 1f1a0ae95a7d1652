"""The MVTec AD reader on small hand-made folders: the usual layout, its variants, and wrong layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hdm.data.mvtec import DatasetError, MVTecCategory, TestDataset

SIZE = 16


def _image(path: Path, value: int = 128, size: tuple[int, int] = (32, 24), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * 3).save(path)


def _mask(path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (32, 24)) -> None:
    """A 0/255 mask, `box` = (left, top, right, bottom) in pixels of `size` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size[::-1], np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)


@pytest.fixture
def category(tmp_path) -> Path:
    """train/good (3), test/good (2), test/scratch (2 with _mask masks), test/dent (1, same-name mask, JPEG)."""
    root = tmp_path / "widget"
    for i in range(3):
        _image(root / "train" / "good" / f"{i:03d}.png")
    for i in range(2):
        _image(root / "test" / "good" / f"{i:03d}.png")
        _image(root / "test" / "scratch" / f"{i:03d}.png", 200)
        _mask(root / "ground_truth" / "scratch" / f"{i:03d}_mask.png", (0, 0, 16, 12))
    _image(root / "test" / "dent" / "a.JPG", 50, mode="RGB")
    _mask(root / "ground_truth" / "dent" / "a.png", (16, 12, 32, 24))
    return root


def test_standard_layout_with_both_mask_names(category):
    cat = MVTecCategory(category)
    assert cat.name == "widget" and len(cat.train_paths) == 3
    assert [(s.defect, s.label, s.mask_path.name if s.mask_path else None) for s in cat.test_samples] == [
        ("good", 0, None),
        ("good", 0, None),
        ("dent", 1, "a.png"),
        ("scratch", 1, "000_mask.png"),
        ("scratch", 1, "001_mask.png"),
    ]
    assert cat.defect_types == ["dent", "scratch"]


def test_masks_are_resized_with_their_images(category):
    data = TestDataset(MVTecCategory(category).test_samples, SIZE)
    image, mask, label = data[3]  # scratch: top-left quarter
    expected = torch.zeros(1, SIZE, SIZE)
    expected[:, : SIZE // 2, : SIZE // 2] = 1
    assert label == 1 and torch.equal(mask, expected)
    assert image.shape == (3, SIZE, SIZE) and torch.allclose(image, torch.full_like(image, 200 / 127.5 - 1))
    _, dent_mask, _ = data[2]  # dent: bottom-right quarter
    assert torch.equal(dent_mask, expected.flip(1, 2))
    _, good_mask, good_label = data[0]
    assert good_label == 0 and good_mask.sum() == 0


def test_half_resolution_mask_is_accepted_but_another_aspect_ratio_is_not(category):
    _mask(category / "ground_truth" / "dent" / "a.png", (8, 6, 16, 12), size=(16, 12))
    data = TestDataset(MVTecCategory(category).test_samples, SIZE)
    expected = torch.zeros(1, SIZE, SIZE)
    expected[:, SIZE // 2 :, SIZE // 2 :] = 1
    assert torch.equal(data[2][1], expected)
    _mask(category / "ground_truth" / "dent" / "a.png", (0, 0, 8, 8), size=(24, 32))
    with pytest.raises(DatasetError, match="mask is 24x32 but its image a.JPG is 32x24"):
        data[2]


def test_other_files_are_ignored(category):
    (category / "train" / "good" / ".DS_Store").write_bytes(b"\0")
    (category / "train" / "good" / "notes.txt").write_text("x")
    (category / "test" / "empty").mkdir()
    (category / "license.txt").write_text("x")
    cat = MVTecCategory(category)
    assert len(cat.train_paths) == 3 and len(cat.test_samples) == 5


def test_normal_only_folders(tmp_path):
    flat = tmp_path / "flat"
    for i in range(4):
        _image(flat / f"{i}.bmp")
    cat = MVTecCategory(flat)
    assert [p.name for p in cat.train_paths] == ["0.bmp", "1.bmp", "2.bmp", "3.bmp"] and cat.test_samples == []
    train_only = tmp_path / "train_only"
    _image(train_only / "train" / "good" / "x.png")
    cat = MVTecCategory(train_only)
    assert len(cat.train_paths) == 1 and cat.test_samples == []


def _error(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        MVTecCategory(root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_ground_truth_folder(category):
    for f in (category / "ground_truth").rglob("*.png"):
        f.unlink()
    for d in sorted((category / "ground_truth").rglob("*"), reverse=True):
        d.rmdir()
    (category / "ground_truth").rmdir()
    assert _error(category).endswith("ground_truth: missing (needed for the masks of test/{dent, scratch})")


def test_missing_defect_mask_folder(category):
    for f in (category / "ground_truth" / "scratch").iterdir():
        f.unlink()
    (category / "ground_truth" / "scratch").rmdir()
    assert "ground_truth/scratch: missing" in _error(category)


def test_missing_masks_are_named_and_counted(category):
    (category / "ground_truth" / "scratch" / "000_mask.png").unlink()
    assert "no mask 000_mask.png (or 000.png) for scratch/000.png" in _error(category)
    (category / "ground_truth" / "scratch" / "001_mask.png").unlink()
    assert "for scratch/000.png and 1 more" in _error(category)


def test_wrong_folders(tmp_path, category):
    assert "no such directory" in _error(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert "no train/good folder and no images" in _error(tmp_path / "empty")
    assert "it holds categories (widget): pass one" in _error(tmp_path)
    for f in (category / "train" / "good").iterdir():
        f.unlink()
    assert "train/good: missing or holds no images" in _error(category)
