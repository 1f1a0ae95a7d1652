"""In-process inference speed of the HDM detector (DDM: one-step reconstruction + discriminator).

    python -m bench.model_speed [--sizes 128 256] [--batches 1 16] [--seconds 10] [--preset cpu]

Images/s of `Detector.run` (model forward with the configured precision, bf16 autocast where
the CPU has AMX/AVX512-BF16) on random input with untrained weights of the chosen preset
(speed does not depend on the weights), per image size and batch size. Writes
bench/results/model_speed.json. Timings on a shared machine are only as quiet as it is: the
JSON records the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from hdm.calibration import Calibration
from hdm.config import HDMConfig
from hdm.inference import Detector
from hdm.models import HDMModel
from hdm.precision import resolve_device, use_bf16

RESULTS = Path(__file__).resolve().parent / "results" / "model_speed.json"


def measure(detector: Detector, batch: int, seconds: float) -> dict[str, float]:
    x = torch.rand(batch, 3, detector.image_size, detector.image_size) * 2 - 1
    detector.run(x)  # warm-up: allocator, oneDNN kernel selection
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 3:
        t = time.perf_counter()
        detector.run(x)
        latencies.append(time.perf_counter() - t)
    latencies.sort()
    return {
        "images_per_s": round(batch * len(latencies) / sum(latencies), 2),
        "batch_latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 2),
        "batches_timed": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per (size, batch)")
    parser.add_argument("--preset", choices=("cpu", "production"), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    load_start = os.getloadavg()
    for size in args.sizes:
        cfg = HDMConfig.cpu(size) if args.preset == "cpu" else HDMConfig(image_size=size)
        torch.manual_seed(0)
        detector = Detector(HDMModel(cfg), cfg, Calibration.default(), "bench", device)
        for batch in args.batches:
            row = {"image_size": size, "batch": batch, **measure(detector, batch, args.seconds)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "preset": args.preset,
        "device": str(device),
        "bf16_autocast": use_bf16(device, "auto"),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
