#!/usr/bin/env bash
# The accelerator check of issue 20 (target 5): one call, at most ~8 minutes, writes
# $OUT/gpu_suite.json (device, JAX version, commit, and the four timed steps of
# benchmarks/gpu_suite.py). On the lent device machine: run from the repository root with a
# CIFAR-10 copy carried in the git-ignored device_data/ (optional; the slice is skipped without).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
DATA=""
[ -d device_data/cifar10 ] && DATA="device_data"
if ! python -c "import divjax" 2>/dev/null; then
  python -m pip install --quiet -e ".[data]"
fi
timeout 470 python benchmarks/gpu_suite.py --out "$OUT" --data-dir "$DATA" "$@"
