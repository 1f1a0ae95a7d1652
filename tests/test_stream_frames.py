"""Frame decoding and validation: every kind of bad frame gets its DeadLetter reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from protos.hdm.v1 import frames_pb2
from services.scoring.frames import FrameLimits, FrameRejected, decode_frame

R = frames_pb2.DeadLetter
LIMITS = FrameLimits(max_frame_bytes=64 * 1024, max_pixels=128 * 128)


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def frame(image: np.ndarray | None = None, encoding: str = "png", **overrides) -> frames_pb2.FrameMessage:
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8) if image is None else image
    data = image.tobytes() if encoding == "raw" else encoded(image, encoding.upper())
    fields = dict(
        frame_id="f-1", line_id="line-1", camera_id="cam-1", product="tile",
        encoding=frames_pb2.ImageEncoding.Value(f"IMAGE_ENCODING_{encoding.upper()}"),
        width=image.shape[1], height=image.shape[0], channels=image.shape[2] if image.ndim == 3 else 1, data=data,
    )
    fields.update(overrides)
    return frames_pb2.FrameMessage(**fields)


def decode(message_or_bytes, known=("tile",)):
    value = message_or_bytes if isinstance(message_or_bytes, bytes) else message_or_bytes.SerializeToString()
    return decode_frame(value, LIMITS, lambda product: product in known)


def rejected(message_or_bytes, **kwargs) -> FrameRejected:
    with pytest.raises(FrameRejected) as info:
        decode(message_or_bytes, **kwargs)
    return info.value


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_a_good_frame_decodes_to_its_exact_pixels(encoding):
    image = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    decoded = decode(frame(image, encoding))
    assert decoded.image.dtype == np.uint8 and decoded.image.shape == (24, 32, 3)
    np.testing.assert_array_equal(decoded.image, image)
    assert decoded.message.frame_id == "f-1" and decoded.message.data == b"", "pixels travel once, as the array"


def test_grey_raw_and_jpeg_frames_become_rgb():
    grey = np.full((16, 16), 90, dtype=np.uint8)
    assert decode(frame(grey, "raw", channels=1)).image.shape == (16, 16, 3)
    assert decode(frame(np.full((16, 16, 3), 90, np.uint8), "jpeg")).image.shape == (16, 16, 3)


def test_garbage_is_unparsable():
    assert rejected(b"\xff\xfe garbage that is no protobuf").reason == R.REASON_UNPARSABLE
    assert rejected(b"").reason == R.REASON_UNPARSABLE


def test_truncated_png_is_a_corrupt_image():
    message = frame()
    message.data = message.data[: len(message.data) * 2 // 3]
    error = rejected(message)
    assert error.reason == R.REASON_CORRUPT_IMAGE and "truncated" in error.detail.lower()


def test_bytes_that_are_not_the_declared_encoding_are_corrupt():
    message = frame(encoding="jpeg")
    message.encoding = frames_pb2.IMAGE_ENCODING_PNG
    assert rejected(message).reason == R.REASON_CORRUPT_IMAGE


def test_oversized_record_and_oversized_declared_frame():
    big = frame(np.random.default_rng(2).integers(0, 256, (200, 200, 3), dtype=np.uint8), "raw")
    assert rejected(big).reason == R.REASON_OVERSIZED, "record over max_frame_bytes"
    huge_claim = frame(width=100_000, height=100_000)
    error = rejected(huge_claim)
    assert error.reason == R.REASON_OVERSIZED and "pixels" in error.detail


def test_unknown_product_missing_fields_and_size_mismatch():
    assert rejected(frame(product="gearbox")).reason == R.REASON_UNKNOWN_PRODUCT
    assert rejected(frame(frame_id="")).reason == R.REASON_MISSING_FIELD
    assert rejected(frame(width=0)).reason == R.REASON_MISSING_FIELD
    assert rejected(frame(width=31)).reason == R.REASON_SIZE_MISMATCH
    raw = frame(encoding="raw")
    raw.data = raw.data[:-5]
    assert rejected(raw).reason == R.REASON_SIZE_MISMATCH


def test_unspecified_encoding_is_unsupported():
    message = frame()
    message.encoding = frames_pb2.IMAGE_ENCODING_UNSPECIFIED
    assert rejected(message).reason == R.REASON_UNSUPPORTED_ENCODING
