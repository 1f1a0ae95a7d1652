"""Decode and validate one frame record; a bad one is rejected with a DeadLetter reason.

Checks run cheapest first (size, parse, fields, product, declared size) so a
flood of junk costs little; pixels are decoded last, by the hdm library's
decoder, which also catches truncated PNG/JPEG data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from google.protobuf.message import DecodeError

from hdm.data.images import ImageError, as_rgb, decode_image
from protos.hdm.v1 import frames_pb2

Reason = frames_pb2.DeadLetter.Reason
_FORMATS = {frames_pb2.IMAGE_ENCODING_PNG: ("PNG",), frames_pb2.IMAGE_ENCODING_JPEG: ("JPEG",)}


class FrameRejected(Exception):
    """A frame that cannot be scored; `reason` is a DeadLetter.Reason value."""

    def __init__(self, reason: int, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    @property
    def reason_name(self) -> str:
        return frames_pb2.DeadLetter.Reason.Name(self.reason)


@dataclass(frozen=True)
class FrameLimits:
    max_frame_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class DecodedFrame:
    message: frames_pb2.FrameMessage  # with `data` cleared: the pixels travel as `image`
    image: np.ndarray                 # uint8 (H, W, 3)


def decode_frame(value: bytes | None, limits: FrameLimits, known_product: Callable[[str], bool]) -> DecodedFrame:
    """The frame and its pixels, or FrameRejected saying why not."""
    if not value:
        raise FrameRejected(Reason.REASON_UNPARSABLE, "empty record")
    if len(value) > limits.max_frame_bytes:
        raise FrameRejected(Reason.REASON_OVERSIZED, f"record of {len(value)} bytes is over the limit of {limits.max_frame_bytes}")
    message = _parse(value)
    missing = [name for name in ("frame_id", "line_id", "product") if not getattr(message, name)]
    if missing:
        raise FrameRejected(Reason.REASON_MISSING_FIELD, f"empty field(s): {', '.join(missing)}")
    if not known_product(message.product):
        raise FrameRejected(Reason.REASON_UNKNOWN_PRODUCT, f"no model in the registry for product {message.product!r}")
    if not message.width or not message.height:
        raise FrameRejected(Reason.REASON_MISSING_FIELD, "width and height must be set")
    pixels = message.width * message.height
    if pixels > limits.max_pixels:
        raise FrameRejected(Reason.REASON_OVERSIZED, f"{message.width}x{message.height} frame is over the limit of {limits.max_pixels} pixels")
    image = _pixels(message, limits)
    if image.shape[:2] != (message.height, message.width):
        raise FrameRejected(
            Reason.REASON_SIZE_MISMATCH,
            f"declared {message.width}x{message.height}, decoded {image.shape[1]}x{image.shape[0]}",
        )
    message.ClearField("data")
    return DecodedFrame(message, image)


def _parse(value: bytes) -> frames_pb2.FrameMessage:
    message = frames_pb2.FrameMessage()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise FrameRejected(Reason.REASON_UNPARSABLE, f"not a FrameMessage: {exc}") from None
    return message


def _pixels(message: frames_pb2.FrameMessage, limits: FrameLimits) -> np.ndarray:
    if message.encoding == frames_pb2.IMAGE_ENCODING_RAW:
        return _raw_pixels(message)
    formats = _FORMATS.get(message.encoding)
    if formats is None:
        raise FrameRejected(Reason.REASON_UNSUPPORTED_ENCODING, f"encoding {message.encoding} is not PNG, JPEG or RAW")
    try:
        return decode_image(message.data, max_pixels=limits.max_pixels, formats=formats)
    except ImageError as exc:
        raise FrameRejected(Reason.REASON_CORRUPT_IMAGE, str(exc)) from None


def _raw_pixels(message: frames_pb2.FrameMessage) -> np.ndarray:
    channels = message.channels or 3
    if channels not in (1, 3):
        raise FrameRejected(Reason.REASON_UNSUPPORTED_ENCODING, f"RAW frames have 1 or 3 channels, not {channels}")
    expected = message.width * message.height * channels
    if len(message.data) != expected:
        raise FrameRejected(
            Reason.REASON_SIZE_MISMATCH,
            f"RAW {message.width}x{message.height}x{channels} needs {expected} bytes, got {len(message.data)}",
        )
    pixels = np.frombuffer(message.data, dtype=np.uint8).reshape(message.height, message.width, channels)
    return as_rgb(pixels)
