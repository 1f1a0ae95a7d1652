#!/usr/bin/env bash
# GPU check of the model library, for a CUDA host with torch and diffusers installed:
# inference speed of the production-size model, a short 256 px training run on a real
# category, its evaluation, and CPU/GPU agreement of one checkpoint.
#   bash bench/gpu_check.sh DATA_DIR OUT_DIR [TRAIN_MINUTES]
# DEVICE=cpu SPEED_BATCHES="1" dry-runs the same steps on a CPU host.
set -euo pipefail
data=$1 out=$2 minutes=${3:-4}
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)" | tee -a "$out/gpu.txt"
python3 -m bench.model_speed --device "$device" --preset production --sizes 128 256 --batches ${SPEED_BATCHES:-1 16 64} --seconds 5 \
  --out "$out/model_speed_gpu.json"
python3 -m hdm train --data "$data" --out "$out/run" --image-size 256 --max-minutes "$minutes" --seed 0 --device "$device" --json \
  > "$out/train.json"
python3 -m hdm eval --model "$out/run" --data "$data" --device "$device" --json > "$out/eval_gpu.json"
python3 - "$out" "$data" "$device" <<'PY'
import json, sys
import numpy as np
import torch
from hdm.data.mvtec import MVTecCategory
from hdm.data.images import load_image
from hdm.inference import Detector
out, data, device = sys.argv[1:4]
paths = [s.path for s in MVTecCategory(data).test_samples[:32]]
images = np.stack([load_image(p, 256) for p in paths])
gpu = Detector.load(f"{out}/run", device=device).predict(images)
cpu = Detector.load(f"{out}/run", device="cpu").predict(images)
diff = max(abs(a.score - b.score) for a, b in zip(gpu, cpu, strict=True))
same = sum(a.anomalous == b.anomalous for a, b in zip(gpu, cpu, strict=True))
report = {"images": len(paths), "max_score_difference": diff, "same_verdict": same}
print(json.dumps(report))
json.dump(report, open(f"{out}/cpu_gpu_agreement.json", "w"))
PY
echo "eval on GPU: $(cat "$out/eval_gpu.json")"
