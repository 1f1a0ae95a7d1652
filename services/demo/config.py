"""What `hdm demo` runs; the defaults finish within minutes on a 2-core CPU."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DemoConfig:
    out: str = "demo-out"
    data: str | None = None          # an MVTec AD category; None = generated products
    model: str | None = None         # an existing run dir (hdm train --out); None = train one
    product: str | None = None       # default: the category folder's name, or "synthetic"
    image_size: int = 64
    train_minutes: float = 4.0
    train_steps: int | None = None   # a step budget instead of minutes (tests)
    train_images: int = 200          # generated normals to train on
    lines: int = 2
    frames: int = 60                 # per line
    fps: float = 5.0                 # per line
    defect_rate: float = 0.25
    corrupt_frames: int = 2          # deliberately broken frames, to show the dead-letter path
    seed: int = 0
    ray_cpus: int | None = None      # default: all cores, at least 2
    result_timeout_s: float = 300.0

    @property
    def product_name(self) -> str:
        from pathlib import Path

        if self.product:
            return self.product
        return Path(self.data).resolve().name if self.data else "synthetic"
