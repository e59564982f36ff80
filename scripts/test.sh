#!/usr/bin/env bash
# The test suite (CPU). Extra arguments go to pytest, e.g. `./scripts/test.sh -k cameras`.
# GPU tests are marked `gpu` and skipped by default; run them on a CUDA machine with `-m gpu`.
#
# Two environments, like the product: .venv (the backend, numpy 2, torch) runs everything but tests/blender;
# .venv-blender (the bpy wheel, Blender 5.0.1 on Python 3.11, numpy 1.26) runs tests/blender against the real
# Blender API. With no arguments both suites run; arguments naming tests/blender run only that suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
./scripts/bootstrap_blender.sh
./scripts/bootstrap_chromium.sh
.venv/bin/ruff check .

blender_suite() {
    # confcutdir keeps tests/conftest.py (which imports torch) out of the Blender interpreter.
    DISTILLERY_BACKEND_PYTHON="$PWD/.venv/bin/python" \
        .venv-blender/bin/python -m pytest -q --confcutdir=tests/blender "$@"
}

if [ $# -eq 0 ]; then
    .venv/bin/python -m pytest -q
    blender_suite tests/blender
elif [[ " $* " == *" tests/blender"* ]]; then
    blender_suite "$@"
else
    exec .venv/bin/python -m pytest -q "$@"
fi
