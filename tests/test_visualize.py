"""Heatmap PNGs and overlays in hdm.visualize."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hdm.visualize import TURBO, heatmap_png, overlay, png_bytes, read_heatmap, save_png

WHITE = np.array([255, 255, 255], np.uint8)


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_heatmap_png_is_8_bit_grey_with_255_for_certainty():
    p = np.linspace(0, 1, 7 * 9, dtype=np.float32).reshape(7, 9)
    image = _decode(heatmap_png(p))
    assert image.format == "PNG" and image.mode == "L" and image.size == (9, 7)
    levels = np.asarray(image)
    assert levels[0, 0] == 0 and levels[-1, -1] == 255
    assert np.array_equal(levels, np.rint(p * 255).astype(np.uint8))


def test_heatmap_round_trips_within_half_a_level():
    p = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    back = read_heatmap(heatmap_png(p))
    assert back.dtype == np.float32 and back.shape == (32, 48)
    assert np.abs(back - p).max() <= 0.5 / 255 + 1e-6


def test_heatmap_clips_accepts_a_channel_axis_and_rejects_nan():
    p = np.array([[-0.2, 0.5, 1.3]])
    assert np.asarray(_decode(heatmap_png(p[None]))).tolist() == [[0, 128, 255]]
    with pytest.raises(ValueError, match="NaN"):
        heatmap_png(np.array([[0.1, np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        heatmap_png(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="mode L"):
        read_heatmap(png_bytes(np.zeros((4, 4, 3), np.uint8)))


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(20, 200, (40, 50, 3), dtype=np.uint8)  # no white pixels


def test_overlay_blends_in_proportion_to_probability(image):
    assert np.array_equal(overlay(image, np.zeros((40, 50))), image)
    full = overlay(image, np.ones((40, 50)), max_alpha=0.6)
    assert np.abs(full.astype(float) - (0.4 * image + 0.6 * TURBO[255])).max() <= 0.5 + 1e-9
    change = [np.abs(overlay(image, np.full((40, 50), p)).astype(int) - image).mean() for p in (0.1, 0.4, 0.8)]
    assert change[0] < change[1] < change[2]


def test_overlay_contour_outlines_the_thresholded_region(image):
    p = np.zeros((40, 50))
    p[10:20, 15:30] = 0.9
    p[12:18, 18:26] = 1.0
    outlined = overlay(image, p, threshold=0.5)
    white = (outlined == WHITE).all(axis=2)
    ring = np.zeros_like(white)
    ring[10:20, 15:30] = True
    ring[11:19, 16:29] = False
    assert np.array_equal(white, ring)
    assert not (overlay(image, p) == WHITE).all(axis=2).any()  # no threshold, no contour
    assert not (overlay(image, p, threshold=1.01) == WHITE).all(axis=2).any()


def test_overlay_resizes_the_map_to_the_image(image):
    small = np.zeros((20, 25))
    small[5:10, 5:10] = 1.0
    out = overlay(image, small, threshold=0.5)
    assert out.shape == image.shape
    white = (out == WHITE).all(axis=2)
    rows, cols = np.nonzero(white)
    assert 9 <= rows.min() <= 11 and 18 <= rows.max() <= 20 and 9 <= cols.min() <= 11 and 18 <= cols.max() <= 20
    grey = overlay(image[..., 0], small)  # grey images are accepted
    assert grey.shape == image.shape


def test_turbo_lut_is_smooth_and_runs_from_dark_blue_through_green_to_dark_red():
    assert TURBO.shape == (256, 3) and TURBO.dtype == np.uint8
    assert np.abs(np.diff(TURBO.astype(int), axis=0)).max() <= 16
    low, mid, high = TURBO[0], TURBO[128], TURBO[255]
    assert low.sum() < 100 and TURBO[16][2] > 2 * TURBO[16][0]  # dark, then blue
    assert mid[1] == mid.max() > 200
    assert high[0] == high.max() and high.sum() < 200
    with pytest.raises(ValueError):
        TURBO[0, 0] = 1


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 3), (6, 7, 4)])
def test_png_bytes_and_save_png_round_trip(shape, tmp_path):
    array = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(np.asarray(_decode(png_bytes(array))), array)
    path = save_png(array, tmp_path / "a" / "b.png")
    assert np.array_equal(np.asarray(Image.open(path)), array)


def test_png_bytes_rejects_what_is_not_an_8_bit_image():
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4, 2), np.uint8))
