"""Opaque page tokens and stream cursors: URL-safe base64 of a small JSON document.

Clients must treat both as opaque strings. They are validated on the way in, so
garbage (or a token made for a different filter) is a clear INVALID_ARGUMENT
instead of a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

_VERSION = 1
# Initial metadata of StreamResults: the stream's starting cursor, so a client
# that disconnects before its first result can still resume without a gap.
CURSOR_METADATA = "hdm-cursor"


class TokenError(ValueError):
    """A page token or cursor this service did not issue."""


@dataclass(frozen=True)
class PageKey:
    """The last row of a page: results are ordered by (captured_at, frame_id)."""

    captured_at_us: int
    frame_id: str


def filter_fingerprint(parts: tuple[Any, ...]) -> str:
    """A short digest of a filter, so a page token only continues the query it came from."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode_page_token(key: PageKey, fingerprint: str) -> str:
    return _encode({"v": _VERSION, "k": "page", "t": key.captured_at_us, "f": key.frame_id, "q": fingerprint})


def decode_page_token(token: str, fingerprint: str) -> PageKey:
    doc = _decode(token, "page")
    if not isinstance(doc.get("t"), int) or not isinstance(doc.get("f"), str):
        raise TokenError("malformed page_token")
    if doc.get("q") != fingerprint:
        raise TokenError("page_token belongs to a query with a different filter")
    return PageKey(doc["t"], doc["f"])


def encode_cursor(seq: int) -> str:
    return _encode({"v": _VERSION, "k": "cursor", "s": seq})


def decode_cursor(cursor: str) -> int:
    doc = _decode(cursor, "cursor")
    seq = doc.get("s")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise TokenError("malformed cursor")
    return seq


def _encode(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, kind: str) -> dict[str, Any]:
    what = "page_token" if kind == "page" else "cursor"
    if len(token) > 1024:
        raise TokenError(f"{what} is too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise TokenError(f"{what} is not one this service issued") from None
    if not isinstance(doc, dict) or doc.get("v") != _VERSION or doc.get("k") != kind:
        raise TokenError(f"{what} is not one this service issued")
    return doc
