"""What FrameIngress and Scorer pass each other through a deployment handle.

Pixels travel as the decoded uint8 array (Ray moves numpy buffers without
copying them through pickle), never as float tensors: a 256 px frame is 192 KiB
as uint8 and four times that as float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ScoreRequest:
    frame_id: str
    model_id: str            # "<product>/<version>": also the handle's multiplexed_model_id
    image: np.ndarray        # uint8 (H, W, 3)
    trace: dict[str, str]    # W3C trace context of the frame's ingest span
    sent_at: float           # wall clock (s) when the ingress handed it over


@dataclass
class ScoreResult:
    frame_id: str
    model_version: str
    score: float
    probability: float
    anomalous: bool
    threshold: float
    pixel_threshold: float
    anomalous_area: float
    heatmap_png: bytes
    overlay_png: bytes
    batch_size: int
    replica: str
    batch_started_at: float  # wall clock (s)
    score_ms: float          # the batch's forward pass and calibration, shared by the batch
    post_ms: float           # this frame's heatmap encoding
