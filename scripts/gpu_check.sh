#!/usr/bin/env bash
# GPU acceptance in one command, for a CUDA machine without network access (docs/PERFORMANCE.md):
#   1. the `gpu` tests: gsplat and nvdiffrast parity with the pure-torch renderers, full-size SD 2.1-base;
#   2. scripts/gpu_bench.py: `distillery bench` on the full-size SD 2.1-base architecture with random weights
#      (no download) for gaussian-sds, prolificdreamer, luciddreamer and real3d, one table of ms/iteration and
#      peak GPU memory per preset against the targets.
# Sized to finish inside 10 minutes on an H100/H200-class GPU.
#
#   scripts/gpu_check.sh [--dtype fp16|bf16] [--json-out FILE]    # on the GPU machine
#   scripts/gpu_check.sh --dry-run                                # anywhere: the table code on tiny CPU models
#
# PYTHON selects the interpreter (default: .venv/bin/python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if [ "${1:-}" = "--dry-run" ]; then
    shift
    exec "$PY" scripts/gpu_bench.py --dry-run "$@"
fi

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device (scripts/gpu_check.sh --dry-run checks the table code on a CPU)" >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"

echo "== gpu tests" >&2
timeout 300 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/gpu
tests=$?

echo "== bench table" >&2
timeout 420 "$PY" scripts/gpu_bench.py "$@"
bench=$?

echo "gpu_check: gpu tests exit $tests, bench exit $bench" >&2
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
