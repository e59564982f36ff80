#!/usr/bin/env bash
# Create or update .venv-blender: Python 3.11 with the bpy wheel (Blender 5.0.1 as a module, about 1 GB),
# for the tests in tests/blender and for build.py's validator. Idempotent (reinstalls only when
# scripts/blender-requirements.txt changes). Used by test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-blender
if [ ! -x "$VENV/bin/python" ]; then
    PY=""
    for cand in "${PYTHON311:-}" python3.11 python3; do
        [ -n "$cand" ] || continue
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
            PY=$cand; break
        fi
    done
    if [ -z "$PY" ]; then
        echo "error: the bpy wheel needs Python 3.11 (Blender 4.2-5.0's Python); set PYTHON311=/path/to/python3.11" >&2
        exit 1
    fi
    echo "creating $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.distillery-stamp"
want=$(sha256sum scripts/blender-requirements.txt | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing the bpy wheel into $VENV (first run: about a minute, 1 GB)"
    "$VENV/bin/python" -m pip install -q -r scripts/blender-requirements.txt
    echo "$want" > "$stamp"
fi
