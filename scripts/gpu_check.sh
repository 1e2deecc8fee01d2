#!/usr/bin/env bash
# GPU check, for a machine with a CUDA device: the CUDA-marked tests (CPU/GPU agreement of every
# solver and model, a run on trainer=gpu), then the MovieLens-20M-size benchmark
# (scripts/bench_gpu.py), whose table goes to experiments/gpu/README.md. Meant to finish in a
# few minutes on one modern GPU, start-up included.
#   bash scripts/gpu_check.sh [OUT_DIR]     (default experiments/gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/gpu}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the checkout's mfzoo, installed or not
python - <<'PY'
import torch
assert torch.cuda.is_available(), f"no CUDA device visible to torch {torch.__version__}"
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
PY
python -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda.py tests/test_training.py
python scripts/bench_gpu.py --out "$out/README.md"
