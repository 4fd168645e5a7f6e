#!/usr/bin/env bash
# One prepared check for a machine with a GPU (≤ 8 min): prints every figure the docs project and writes
# OUT/gpu_check.json and OUT/gpu_check.md. `--probe`: versions and the device only. `--tiny`: the same code
# on a CPU with tiny networks (CI runs it). Details: tools/bench/gpu_check.py.
#   bash tools/gpu_check.sh --probe
#   bash tools/gpu_check.sh --out runs/gpu_check --budget-s 450
#   bash tools/gpu_check.sh --tiny --out /tmp/gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null; then nvidia-smi -L || true; fi
exec python tools/bench/gpu_check.py "$@"
