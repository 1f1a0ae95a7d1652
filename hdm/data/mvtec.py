"""The MVTec AD category layout, and torch datasets over it.

    CATEGORY/train/good/*.png                    normal training images
    CATEGORY/test/good/*.png                     normal test images (label 0)
    CATEGORY/test/<defect>/*.png                 defective test images (label 1)
    CATEGORY/ground_truth/<defect>/<name>_mask.png   their masks (<name>.png accepted too)

A normal-only folder (train/good alone, or images directly in the folder) is a
category without test samples. Any image format Pillow reads, any size, grey or colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hdm.data.images import IMAGE_SUFFIXES, load_image, load_images, load_mask, to_tensor

GOOD = "good"
MASK_SUFFIXES = ("_mask", "")


class DatasetError(ValueError):
    """A folder that is not an MVTec AD category; the message says what is missing."""


@dataclass(frozen=True)
class Sample:
    """One test image: label 1 for a defect, with the path of its mask; label 0 (and no mask) for good."""

    path: Path
    label: int
    defect: str
    mask_path: Path | None = None


class MVTecCategory:
    """The images of one category folder, found and checked at construction (files are read later)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such directory")
        self.name = self.root.name
        self.train_paths, self.test_samples = _scan(self.root)

    @property
    def defect_types(self) -> list[str]:
        """The defect folder names under test/, sorted (without 'good')."""
        return sorted({s.defect for s in self.test_samples if s.label == 1})

    def __repr__(self) -> str:
        anomalous = sum(s.label for s in self.test_samples)
        return (
            f"MVTecCategory({self.name!r}: {len(self.train_paths)} train, "
            f"{len(self.test_samples) - anomalous} test good, {anomalous} test defective)"
        )


class TrainDataset(Dataset):
    """Normal images as float tensors (3, S, S) in [-1, 1]; `preload` decodes them all once into memory."""

    def __init__(self, paths: Sequence[str | Path], size: int, preload: bool = False, progress: bool = False):
        self.paths = [Path(p) for p in paths]
        self.size = size
        self._cache = load_images(self.paths, size, progress) if preload else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self._cache[index] if self._cache is not None else load_image(self.paths[index], self.size)
        return to_tensor(image[None], self.size)[0]


class TestDataset(Dataset):
    """Test samples as (image (3, S, S) in [-1, 1], mask (1, S, S) float in {0, 1}, label int)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, samples: Sequence[Sample], size: int):
        self.samples = list(samples)
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        sample = self.samples[index]
        image = to_tensor(load_image(sample.path, self.size)[None], self.size)[0]
        if sample.mask_path is None:
            mask = np.zeros((self.size, self.size), dtype=np.float32)
        else:
            mask = load_mask(sample.mask_path, self.size)
            _check_same_shape(sample.path, sample.mask_path)
        return image, torch.from_numpy(mask)[None], sample.label


def _scan(root: Path) -> tuple[list[Path], list[Sample]]:
    train, test, ground_truth = root / "train", root / "test", root / "ground_truth"
    if not train.exists() and not test.exists():
        return _normal_only(root), []
    train_paths = _images(train / GOOD)
    if not train_paths:
        raise DatasetError(f"{train / GOOD}: missing or holds no images (expected normal training images)")
    if not test.is_dir():
        return train_paths, []
    samples: list[Sample] = [Sample(p, 0, GOOD) for p in _images(test / GOOD)]
    defects = sorted(d for d in test.iterdir() if d.is_dir() and d.name != GOOD and _images(d))
    if defects and not ground_truth.is_dir():
        names = ", ".join(d.name for d in defects)
        raise DatasetError(f"{ground_truth}: missing (needed for the masks of test/{{{names}}})")
    for defect_dir in defects:
        samples += _defect_samples(defect_dir, ground_truth / defect_dir.name)
    if not samples:
        raise DatasetError(f"{test}: holds no images in good/ or <defect>/ subfolders")
    return train_paths, samples


def _defect_samples(defect_dir: Path, mask_dir: Path) -> list[Sample]:
    if not mask_dir.is_dir():
        raise DatasetError(f"{mask_dir}: missing (needed for the masks of {defect_dir})")
    masks = {p.stem: p for p in _images(mask_dir)}
    samples, missing = [], []
    for path in _images(defect_dir):
        mask = next((masks[path.stem + s] for s in MASK_SUFFIXES if path.stem + s in masks), None)
        if mask is None:
            missing.append(path.name)
        samples.append(Sample(path, 1, defect_dir.name, mask))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        stem = Path(missing[0]).stem
        raise DatasetError(
            f"{mask_dir}: no mask {stem}_mask.png (or {stem}.png) for {defect_dir.name}/{missing[0]}{more}"
        )
    return samples


def _normal_only(root: Path) -> list[Path]:
    paths = _images(root)
    if paths:
        return paths
    nested = sorted(d.name for d in root.iterdir() if (d / "train" / GOOD).is_dir())
    listed = ", ".join(nested[:5]) + (", ..." if len(nested) > 5 else "")
    hint = f"; it holds categories ({listed}): pass one" if nested else ""
    raise DatasetError(f"{root}: no train/good folder and no images (expected an MVTec AD category){hint}")


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def _check_same_shape(image_path: Path, mask_path: Path) -> None:
    """Image and mask are squashed to S x S independently, so they align only with the same aspect ratio."""
    with Image.open(image_path) as image, Image.open(mask_path) as mask:
        (iw, ih), (mw, mh) = image.size, mask.size
        if abs(iw * mh - mw * ih) > 0.01 * iw * mh:
            raise DatasetError(
                f"{mask_path}: mask is {mw}x{mh} but its image {image_path.name} is {iw}x{ih} (another aspect ratio)"
            )
