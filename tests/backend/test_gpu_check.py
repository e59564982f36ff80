"""scripts/gpu_check.sh up to the CUDA calls: its --dry-run runs the bench table code on tiny random models on
the CPU, and the table names the phase that dominates a preset that misses its target."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "scripts" / "gpu_bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_prints_the_table_from_real_bench_runs(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--presets", "gaussian-sds",
                           "--steps", "2", "--warmup", "0", "--json-out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DRY RUN" in proc.stdout and "| gaussian-sds | SDS, 3D Gaussians | 32 |" in proc.stdout
    data = json.loads(out.read_text())
    row, = data["rows"]
    assert row["ms_per_iteration"] > 0 and row["ms_per_view"] == row["ms_per_iteration"] / row["views"]
    assert {"render", "prior", "backward"} <= set(row["phases_ms"]) and row["peak_vram_gb"] is None
    assert row["dominant_phase"] == max(row["phases_ms"], key=row["phases_ms"].get)


def test_verdicts_name_the_dominant_phase():
    gb = _gpu_bench()
    from backend import presets

    sds = next(r for r in gb.ROWS if r.preset == "gaussian-sds")
    cfg = presets.get("gaussian-sds")
    views = cfg.stages[-1].camera.views
    fast = {"median_ms": {"render": 2.0, "prior": 8.0, "backward": 3.0, "step": 13.0 * views}, "peak_vram_gb": 6.0}
    assert gb.table_row(sds, cfg, fast)["verdict"] == "meets"
    slow = {"median_ms": {"render": 2.0, "prior": 30.0, "backward": 3.0, "step": 40.0 * views}, "peak_vram_gb": 9.5}
    row = gb.table_row(sds, cfg, slow)
    assert row["verdict"] == "misses (time, memory): prior dominates (30.0 ms)"
    table = gb.format_table([row], "t")
    assert "| gaussian-sds |" in table and "9.50 GB" in table and "<= 15 ms/view, <= 8 GB" in table


def test_gpu_run_refuses_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():  # on the GPU machine the real run is scripts/gpu_check.sh itself
        return
    assert _gpu_bench().main(["--presets", "gaussian-sds"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
