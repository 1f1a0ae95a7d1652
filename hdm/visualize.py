"""Pictures of anomaly maps: 8-bit heatmap PNGs for storage, colour overlays for people."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image
from scipy import ndimage

from hdm.data.images import as_rgb

# Turbo (Google, 2019; Apache-2.0), from its published polynomial fit: perceptually ordered,
# readable by people with common colour-vision deficiencies, unlike jet.
_TURBO_COEFFICIENTS = np.array(
    [
        # 1, x, x^2, x^3, x^4, x^5 for red, green, blue
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def _turbo_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    powers = x[:, None] ** np.arange(6)
    return np.clip(np.rint(powers @ _TURBO_COEFFICIENTS.T * 255), 0, 255).astype(np.uint8)


TURBO = _turbo_lut()  # (256, 3) uint8; read-only by convention
TURBO.setflags(write=False)
CONTOUR_COLOUR = (255, 255, 255)


def heatmap_png(prob_map: ArrayLike) -> bytes:
    """A probability map (H, W) in [0, 1] as an 8-bit greyscale PNG: value = round(255 * p)."""
    return png_bytes(heatmap_levels(prob_map))


def heatmap_levels(prob_map: ArrayLike) -> np.ndarray:
    """uint8 (H, W) levels of a probability map: 0 for p = 0, 255 for p = 1 (clipped to [0, 1])."""
    p = _probabilities(prob_map)
    return np.rint(p * 255).astype(np.uint8)


def read_heatmap(data: bytes) -> np.ndarray:
    """The inverse of heatmap_png: float32 (H, W) in [0, 1], within 1/510 of the original map."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "L":
            raise ValueError(f"a heatmap PNG is 8-bit greyscale (mode L), got mode {image.mode}")
        return np.asarray(image, dtype=np.float32) / 255.0


def overlay(
    image: np.ndarray, prob_map: ArrayLike, threshold: float | None = None, max_alpha: float = 0.6
) -> np.ndarray:
    """The image with the map in turbo colours, blended in proportion to the probability
    (p = 0 leaves a pixel as it was, p = 1 blends `max_alpha` of colour), and a 1-pixel white
    contour around the pixels with p >= threshold. A map of another size is resized to the image.
    """
    image = as_rgb(image)
    p = _fit(_probabilities(prob_map), image.shape[:2])
    colour = TURBO[np.rint(p * 255).astype(np.intp)].astype(np.float32)
    alpha = (max_alpha * p)[..., None]
    out = np.rint(image * (1.0 - alpha) + colour * alpha).astype(np.uint8)
    if threshold is not None:
        out[_contour(p >= threshold)] = CONTOUR_COLOUR
    return out


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 3) or (H, W, 4) as PNG bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"png_bytes needs uint8 (H, W), (H, W, 3) or (H, W, 4), got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write `array` as a PNG file (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(array))
    return path


def _probabilities(prob_map: ArrayLike) -> np.ndarray:
    p = np.asarray(prob_map, dtype=np.float32)
    if p.ndim == 3 and p.shape[0] == 1:  # (1, H, W), as models return maps
        p = p[0]
    if p.ndim != 2:
        raise ValueError(f"expected a probability map of shape (H, W), got {p.shape}")
    if np.isnan(p).any():
        raise ValueError("the probability map contains NaN")
    return np.clip(p, 0.0, 1.0)


def _fit(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if p.shape == shape:
        return p
    resized = Image.fromarray(p, mode="F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def _contour(region: np.ndarray) -> np.ndarray:
    """The pixels of `region` with a 4-neighbour outside it (the image border does not count)."""
    return region & ~ndimage.binary_erosion(region, border_value=1)
