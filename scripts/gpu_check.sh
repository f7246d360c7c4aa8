#!/usr/bin/env bash
# The GPU check: throughput of the loader alone (both data paths), the model alone on
# resident data and the whole pipeline, in fp32 and bf16, and the pipeline's fixed cost per
# step, on one CUDA GPU; a few minutes. Tables and JSON go to $OUT (default outputs/gpu_check).
#   bash scripts/gpu_check.sh DIR        # DIR: train.npz and test.npz (CIFAR-10 as arrays)
set -euo pipefail
DIR=${1:?usage: bash scripts/gpu_check.sh DIR (train.npz and test.npz)}
OUT=${OUT:-outputs/gpu_check}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
# the default model at the GPU experiment's batch, every variant (compile included)
"$PYTHON" scripts/benchmark.py --output "$OUT/default" speed --device cuda --data-dir "$DIR" \
  --steps 50 --warmup 10 experiment=cifar10_gpu model.compile=false data.num_workers=0
# the fixed cost per step on a tiny model, batch 32
"$PYTHON" scripts/benchmark.py --output "$OUT/overhead" speed --device cuda --data-dir "$DIR" \
  --overhead --steps 200 --warmup 20 data.batch_size=32 data.num_workers=0
echo "tables: $OUT/default/speed.md $OUT/overhead/overhead.md"
