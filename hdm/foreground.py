"""Foreground estimates for object categories, so DAGM puts anomalies on the object, not the backdrop.

MVTec objects lie on a plain background: the border of the image shows it. A pixel is
foreground when it differs from the border's median colour; holes are filled and the
result is dilated a little. Textures (and anything without a plain border) get no
restriction: `auto` mode decides per dataset.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BORDER = 0.05            # border band width, as a share of the size
DIFFERENCE = 0.15        # colour distance from the background (in [-1, 1] units) that counts as object
PLAIN_BORDER_STD = 0.08  # a border this uniform is a backdrop, not texture
AREA_RANGE = (0.05, 0.9) # foreground shares outside this are not a usable object mask


def _border(image: np.ndarray) -> np.ndarray:
    """Border pixels of (3, S, S) as (N, 3)."""
    s = image.shape[-1]
    b = max(1, round(BORDER * s))
    ring = np.ones((s, s), dtype=bool)
    ring[b:-b, b:-b] = False
    return image[:, ring].T


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Boolean (S, S) object mask of one (3, S, S) float image in [-1, 1]."""
    background = np.median(_border(image), axis=0)
    distance = np.abs(image - background[:, None, None]).mean(axis=0)
    distance = ndimage.gaussian_filter(distance, sigma=max(1.0, image.shape[-1] / 128))
    mask = ndimage.binary_fill_holes(distance > DIFFERENCE)
    return ndimage.binary_dilation(mask, iterations=max(1, image.shape[-1] // 64))


def has_plain_background(images: np.ndarray) -> bool:
    """Whether a set of (N, 3, S, S) images shows objects on a plain backdrop."""
    stds = [_border(img).std(axis=0).mean() for img in images]
    if float(np.median(stds)) > PLAIN_BORDER_STD:
        return False
    shares = [foreground_mask(img).mean() for img in images]
    return AREA_RANGE[0] <= float(np.median(shares)) <= AREA_RANGE[1]


def foreground_masks(images: np.ndarray, mode: str) -> np.ndarray | None:
    """Per-image masks (N, S, S) for mode "on", or for "auto" when the data looks like objects; else None.

    An image whose own mask is implausibly small or large gets the whole image.
    """
    if mode == "off" or (mode == "auto" and not has_plain_background(images[:32])):
        return None
    masks = np.stack([foreground_mask(img) for img in images])
    shares = masks.mean(axis=(1, 2))
    masks[(shares < AREA_RANGE[0]) | (shares > AREA_RANGE[1] + 0.09)] = True
    return masks
