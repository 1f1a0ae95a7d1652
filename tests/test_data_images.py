"""Decoding, resizing and tensor conversion in hdm.data.images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from hdm.data.images import (
    ImageError,
    decode_image,
    from_tensor,
    load_image,
    load_mask,
    resize_rgb,
    to_tensor,
)


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(48, 64, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 255
    return smooth.astype(np.uint8)


def test_png_decodes_exactly_and_jpeg_closely(rgb):
    assert np.array_equal(decode_image(_encode(rgb, "PNG")), rgb)
    jpeg = decode_image(_encode(rgb, "JPEG", quality=95))
    assert jpeg.shape == rgb.shape and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - rgb).mean() < 5


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1"])
def test_any_mode_becomes_rgb(rgb, mode):
    image = Image.fromarray(rgb).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    out = decode_image(buffer.getvalue())
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    if mode in ("L", "LA", "1"):
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    if mode == "L":
        assert np.array_equal(out[..., 0], np.asarray(image))


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 8).reshape(8, 64).astype(np.uint16)
    out = decode_image(_encode(ramp, "PNG"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)  # monotone: not saturated at 255 early
    assert 120 <= out[..., 0].mean() <= 135


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True})])
@pytest.mark.parametrize("pad_truncated", [False, True])
def test_every_truncation_raises_even_when_pillow_would_pad(fmt, options, pad_truncated, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pad_truncated)
    small = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    data = _encode(small, fmt, **options)
    assert decode_image(data).shape == (12, 16, 3)
    accepted = []
    for cut in range(1, len(data)):
        try:
            decode_image(data[:cut])
            accepted.append(cut)
        except ImageError as exc:
            assert "truncated" in str(exc) or "corrupt" in str(exc) or "unrecognised" in str(exc)
    assert accepted == []


def test_corrupt_data_raises(rgb):
    png = bytearray(_encode(rgb, "PNG"))
    idat = png.find(b"IDAT")
    png[idat + 20 : idat + 40] = bytes(20)  # damaged pixel data: the chunk CRC no longer matches
    with pytest.raises(ImageError):
        decode_image(bytes(png))
    with pytest.raises(ImageError, match="unrecognised"):
        decode_image(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


def test_stream_accepts_png_and_jpeg_only_but_files_any_format(rgb, tmp_path):
    bmp = _encode(rgb, "BMP")
    with pytest.raises(ImageError, match="PNG, JPEG"):
        decode_image(bmp)
    assert np.array_equal(decode_image(bmp, formats=None), rgb)
    for suffix in (".bmp", ".tif"):
        path = tmp_path / f"x{suffix}"
        Image.fromarray(rgb).save(path)
        assert np.array_equal(load_image(path, 64), resize_rgb(rgb, 64))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels and whose data holds almost none."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_pixel_limit_is_checked_before_decoding(rgb):
    with pytest.raises(ImageError, match="over the limit of 1000"):
        decode_image(_encode(rgb, "PNG"), max_pixels=1000)
    # Headers that claim 64 M and 10^10 pixels: refused from the header, before any decoding.
    with pytest.raises(ImageError, match="8000x8000 = 64000000 pixels, over the limit"):
        decode_image(_png_claiming(8000, 8000))
    with pytest.raises(ImageError, match="over the pixel limit"):
        decode_image(_png_claiming(100_000, 100_000))
    # Within the limit, the same lie is found when decoding.
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(_png_claiming(100, 100))


def test_load_image_resizes_any_size_and_matches_the_stream_path(rgb, tmp_path):
    path = tmp_path / "part.jpg"
    path.write_bytes(_encode(rgb, "JPEG", quality=90))
    image = load_image(path, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # Training (files) and the stream (frame bytes) must give the model the same pixels.
    assert np.array_equal(image, resize_rgb(decode_image(path.read_bytes()), 32))
    grey = tmp_path / "grey.png"
    Image.fromarray(rgb[..., 0]).save(grey)
    assert np.array_equal(load_image(grey, 48)[..., 2], load_image(grey, 48)[..., 0])


def test_file_errors_name_the_file(rgb, tmp_path):
    with pytest.raises(ImageError, match="nope.png: cannot read"):
        load_image(tmp_path / "nope.png", 32)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(_encode(rgb, "JPEG")[:-40])
    with pytest.raises(ImageError, match="cut.jpg: .*truncated"):
        load_image(cut, 32)
    with pytest.raises(ImageError, match="cut.jpg"):
        load_mask(cut, 32)


def test_mask_is_binary_and_resized_by_area(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255  # left half
    mask[40:42, 50:52] = 255  # a 2x2 block: one pixel at half size
    mask[10, 60] = 255  # a single pixel: a quarter of a pixel at half size, dropped
    Image.fromarray(mask).save(tmp_path / "m.png")
    half = load_mask(tmp_path / "m.png", 32)
    assert half.dtype == np.float32 and set(np.unique(half)) == {0.0, 1.0}
    assert half[:, :16].all() and half[:, 16:].sum() == 1 and half[20, 25] == 1
    Image.fromarray((mask > 0).astype(np.uint8)).save(tmp_path / "m01.png")  # 0/1 label image
    assert np.array_equal(load_mask(tmp_path / "m01.png", 32), half)
    assert np.array_equal(load_mask(tmp_path / "m.png", 64), (mask > 0).astype(np.float32))


def test_to_tensor_scales_to_minus_one_one_and_from_tensor_inverts(rgb):
    batch = np.stack([rgb[:32, :32], 255 - rgb[:32, :32]])
    x = to_tensor(batch, 32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(to_tensor(np.zeros((1, 4, 4, 3), np.uint8), 4), -torch.ones(1, 3, 4, 4))
    assert torch.equal(to_tensor(np.full((1, 4, 4, 3), 255, np.uint8), 4), torch.ones(1, 3, 4, 4))
    assert np.array_equal(from_tensor(x), batch)


def test_to_tensor_takes_lists_of_any_sizes_and_grey(rgb):
    x = to_tensor([rgb, rgb[:20, :30, 0], rgb[:16, :16]], 24)
    assert x.shape == (3, 3, 24, 24)
    assert torch.equal(x[1, 0], x[1, 2])
    with pytest.raises(ImageError, match="uint8"):
        to_tensor([rgb.astype(np.float32)], 24)
    with pytest.raises(ImageError, match="batch"):
        to_tensor(rgb, 24)
