"""The MVTec AD reader on the real Magnetic Tile data (skipped where it is absent)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from hdm.data.mvtec import MVTecCategory, TestDataset, TrainDataset

SIZE = 64


@pytest.fixture(scope="module")
def tile(magnetic_tile) -> MVTecCategory:
    return MVTecCategory(magnetic_tile)


@pytest.mark.realdata
def test_magnetic_tile_counts_and_labels(tile):
    assert tile.name == "magnetic_tile"
    assert len(tile.train_paths) == 800
    assert all(p.parent.name == "good" and p.parent.parent.name == "train" for p in tile.train_paths)
    counts = Counter(s.defect for s in tile.test_samples)
    assert counts == {"good": 152, "blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    assert tile.defect_types == ["blowhole", "break", "crack", "fray", "uneven"]
    for s in tile.test_samples:
        assert s.label == (s.defect != "good")
        assert s.path.parent.name == s.defect
        if s.label:
            assert s.mask_path == s.path.parents[2] / "ground_truth" / s.defect / f"{s.path.stem}_mask.png"
        else:
            assert s.mask_path is None


@pytest.mark.realdata
def test_magnetic_tile_masks_align_with_their_images(tile):
    """Defect pixels differ from the tile's typical grey far more under the mask than under the mask
    turned upside down: a misplaced, transposed or mismatched mask loses that contrast."""
    data = TestDataset(tile.test_samples, SIZE)
    inside, flipped = [], []
    for i, sample in enumerate(tile.test_samples):
        if sample.defect not in ("blowhole", "break", "crack"):
            continue
        image, mask, label = data[i]
        assert label == 1 and mask.shape == (1, SIZE, SIZE)
        with Image.open(sample.path) as im, Image.open(sample.mask_path) as m:
            assert im.size == m.size
        grey, m = image[0].numpy(), mask[0].numpy() > 0
        if not m.any():  # a pit smaller than one pixel at this size
            continue
        deviation = np.abs(grey - np.median(grey))
        inside.append(deviation[m].mean())
        flipped.append(deviation[m[::-1, ::-1]].mean())
    assert np.mean(inside) > 1.3 * np.mean(flipped)
    assert np.mean(np.array(inside) > np.array(flipped)) > 0.6


@pytest.mark.realdata
def test_magnetic_tile_tensors(tile):
    """Grey JPEGs of varying size become (3, S, S) tensors in [-1, 1] with equal channels."""
    train = TrainDataset(tile.train_paths[:8], SIZE)
    x = torch.stack([train[i] for i in range(len(train))])
    assert x.shape == (8, 3, SIZE, SIZE) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    preloaded = TrainDataset(tile.train_paths[:8], SIZE, preload=True)
    assert torch.equal(torch.stack([preloaded[i] for i in range(8)]), x)
    good = next(i for i, s in enumerate(tile.test_samples) if s.label == 0)
    image, mask, label = TestDataset(tile.test_samples, SIZE)[good]
    assert label == 0 and mask.sum() == 0 and image.shape == (3, SIZE, SIZE)
