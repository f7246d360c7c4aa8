#!/usr/bin/env bash
# The GPU check, one command (aimed at under 5 minutes on one GPU):
#   1. the GPU tests (pytest -m gpu): the GPU experiment compiled through both phases in the
#      precision auto picks, with checkpoints, a resume from last.ckpt and a test; the
#      training batches drawn on the GPU equal to the CPU's; fp32 metrics under bf16; DDP
#      when there are two GPUs;
#   2. the speed benchmark: the loader alone (both data paths), the model alone on resident
#      data and the whole pipeline (experiment=cifar10_gpu, batch 256), then the pipeline's
#      fixed cost per step on a tiny model (batch 32);
#   3. one summary block to paste into docs/results.md (tests passed, images/s per variant,
#      the fixed cost per step, peak memory).
# Files go to $OUT (default outputs/gpu_check); the exit status is pytest's. PYTHON: the
# interpreter (default: .venv/bin/python where it exists, else python).
#   bash scripts/gpu_check.sh DIR        # DIR: train.npz and test.npz (CIFAR-10 as arrays)
# Without a CUDA device it says so in one line and exits with status 1.
set -uo pipefail
DIR=${1:?usage: bash scripts/gpu_check.sh DIR (train.npz and test.npz)}
DIR=$(cd "$DIR" 2>/dev/null && pwd) || { echo "gpu_check: no folder $1" >&2; exit 1; }
OUT=${OUT:-outputs/gpu_check}  # relative to the checkout
cd "$(dirname "$0")/.."
# the project's virtual environment (make venv-dev: pytest included) when there is one
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
if ! "$PYTHON" -c "import pytest, torch" 2>/dev/null; then
  echo "gpu_check: $PYTHON cannot import torch and pytest; run make venv-dev first, or set PYTHON" >&2
  exit 1
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is false); run it on a machine with an NVIDIA GPU" >&2
  exit 1
fi
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0), 'torch', torch.__version__)"

"$PYTHON" -m pytest -m gpu -q -p no:cacheprovider --junitxml "$OUT/tests.xml" 2>&1 | tee "$OUT/tests.txt"
tests=${PIPESTATUS[0]}
# the default model at the GPU experiment's batch, every variant (compile included)
"$PYTHON" scripts/benchmark.py --output "$OUT/default" speed --device cuda --data-dir "$DIR" \
  --steps 30 --warmup 10 experiment=cifar10_gpu model.compile=false data.num_workers=0
# the fixed cost per step on a tiny model, batch 32
"$PYTHON" scripts/benchmark.py --output "$OUT/overhead" speed --device cuda --data-dir "$DIR" \
  --overhead --steps 100 --warmup 10 data.batch_size=32 data.num_workers=0

echo
echo "---- summary for docs/results.md (also in $OUT/summary.md) ----"
"$PYTHON" -c "import sys; from pathlib import Path; from autoencoder.benchmarks.gpu_check import check_summary; print(check_summary(Path(sys.argv[1])), end='')" "$OUT" | tee "$OUT/summary.md"
exit "$tests"
