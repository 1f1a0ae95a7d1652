"""Decode, resize and convert images and masks: the one place where pixels enter HDM.

Training (files on disk) and the stream (frame bytes) share `decode_image` and
`resize_rgb`, so a model sees the same pixels in both. torch is imported only by
`to_tensor`/`from_tensor`, so the stream ingress can decode frames without it.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
STREAM_FORMATS = ("PNG", "JPEG")
# Well above any inspection camera (a 4096 x 3000 sensor has 12 M pixels), well below
# what would exhaust memory when decoded.
DEFAULT_MAX_PIXELS = 40_000_000

_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole chunk: length 0, type, constant CRC
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


class ImageError(ValueError):
    """An image that cannot be read: corrupt, truncated, too large or of an unknown format."""


def decode_image(
    data: bytes | bytearray | memoryview,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] | None = STREAM_FORMATS,
) -> np.ndarray:
    """Decode encoded image bytes (PNG or JPEG by default) to uint8 (H, W, 3).

    Raises ImageError for empty, corrupt or truncated data, for a format outside
    `formats` (None accepts anything Pillow reads) and for more than `max_pixels`
    pixels, which is checked from the header before any pixel is decoded.
    """
    data = bytes(data)
    if not data:
        raise ImageError("empty image data")
    with _open(data, formats, max_pixels) as image:
        return _to_rgb(image)


def load_image(path: str | Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file of any size and mode as uint8 (size, size, 3); grey replicated to 3 channels."""
    with _open_file(path, max_pixels) as image:
        return resize_rgb(_to_rgb(image), size)


def load_images(paths: Iterable[str | Path], size: int, progress: bool = False) -> np.ndarray:
    """Read many image files into one uint8 array (N, size, size, 3), e.g. to keep a training set in memory."""
    paths = list(paths)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc="loading images", unit="img", disable=not progress)):
        out[i] = load_image(path, size)
    return out


def load_mask(path: str | Path, size: int) -> np.ndarray:
    """Read a ground-truth mask as float32 (size, size) in {0, 1}.

    Masks are binarised at full resolution, then resized by area (bilinear with
    antialiasing) and thresholded at 0.5, so a pixel is a defect pixel when at
    least half of the source area it covers is.
    """
    with _open_file(path, DEFAULT_MAX_PIXELS) as image:
        grey = np.asarray(image.convert("L"))
    # MVTec masks are 0/255; label images that store 0/1 are accepted too.
    binary = grey > (0 if grey.max() <= 1 else 127)
    return resize_mask(binary, size)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a binary (H, W) mask to float32 (size, size) in {0, 1} (area threshold at 0.5)."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape == (size, size):
        return (mask >= 0.5).astype(np.float32)
    resized = Image.fromarray(mask, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(resized) >= 0.5).astype(np.float32)


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (H, W, 3) to (size, size, 3), antialiased bilinear; aspect ratio is not kept (MVTec protocol)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def as_rgb(image: np.ndarray) -> np.ndarray:
    """View a uint8 (H, W), (H, W, 1) or (H, W, 3) array as (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ImageError(f"expected an image of shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def to_tensor(images: np.ndarray | Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 images, (B, H, W, 3) or a list of (H, W[, 3]) arrays of any sizes, to float (B, 3, size, size)
    in [-1, 1]."""
    import torch

    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ImageError(f"expected a batch (B, H, W, 3), got an array of shape {images.shape}")
    if len(images) == 0:
        raise ImageError("expected at least one image")
    batch = np.stack([resize_rgb(as_rgb(image), size) for image in images])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def from_tensor(x: torch.Tensor) -> np.ndarray:
    """The inverse of to_tensor: float (B, 3, S, S) in [-1, 1] to uint8 (B, S, S, 3)."""
    import torch

    scaled = (x.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _open_file(path: str | Path, max_pixels: int) -> Image.Image:
    """Like _open, for a file of any format; errors name the file."""
    try:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read: {exc.strerror or exc}") from exc
        return _open(data, None, max_pixels)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc


def _open(data: bytes, formats: Sequence[str] | None, max_pixels: int) -> Image.Image:
    """Open and fully decode `data`; truncation is detected whatever ImageFile.LOAD_TRUNCATED_IMAGES says."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(formats) if formats else None)
    except UnidentifiedImageError as exc:
        accepted = ", ".join(formats) if formats else "formats Pillow reads"
        raise ImageError(f"unrecognised image data (accepted: {accepted})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image is over the pixel limit: {exc}") from exc
    except _PIL_ERRORS as exc:
        raise ImageError(f"corrupt image header: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    _check_complete(data, image.format)
    try:
        image.load()  # Image.open only parses the header; decoding is what finds corrupt data
    except _PIL_ERRORS as exc:
        image.close()
        raise ImageError(f"corrupt or truncated {image.format} image: {exc}") from exc
    return image


def _check_complete(data: bytes, fmt: str | None) -> None:
    """Reject PNG without its IEND chunk and JPEG whose last scan has no end marker.

    Pillow pads truncated data silently when LOAD_TRUNCATED_IMAGES is set (by any
    library in the process), and even without it accepts a PNG cut after its last
    IDAT chunk; a frame cut short in transit must not be scored.
    """
    if fmt == "PNG" and data.rfind(_PNG_IEND) < 0:
        raise ImageError("truncated PNG image: no IEND chunk")
    if fmt == "JPEG" and data.rfind(_JPEG_EOI) < data.rfind(_JPEG_SOS):
        raise ImageError("truncated JPEG image: no end-of-image marker after the last scan")


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to uint8 (H, W, 3). EXIF orientation is ignored: masks refer to the stored pixels."""
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image, dtype=np.float32) / 257.0
        return as_rgb(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    if image.mode in ("L", "LA"):
        return as_rgb(np.asarray(image.convert("L")))
    return np.asarray(image.convert("RGB"))
