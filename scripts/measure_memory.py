"""Peak host memory of real jobs against the memory budget's estimate (docs/PERFORMANCE.md, "Memory budget").

Each case runs `run_job` in a fresh child process (one at a time, niced) for a few steps with every output on
(previews, snapshots, checkpoint, turntable, evaluation), then reports the child's peak RSS (getrusage
ru_maxrss). The child runs under an address-space limit, so a case that would exhaust the machine fails alone.
The estimate comes from backend.engine.memory for the same settings.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/measure_memory.py [--json out.jsonl] [--only NAME]
    .venv/bin/python scripts/measure_memory.py --table out.jsonl   # the markdown table, current estimate
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE_TIMEOUT_S = 900
CHILD_LIMIT_BYTES = 8 << 30  # RLIMIT_AS of each child: a runaway case fails instead of swapping the machine

QUICK = ["gaussian-sds-quick", "dreamfusion-quick", "magic3d-quick", "real3d-quick", "luciddreamer-quick",
         "jsd-quick", "stabledreamer-quick", "prolificdreamer-quick"]

# (name, preset, steps, overrides): each quick preset, then the extreme settings that once exhausted a 24 GB
# machine (they must now be refused by the estimate or fit through chunked output renders).
CASES: list[tuple[str, str, int, dict]] = [
    *[(p, p, 4, {}) for p in QUICK],
    ("gaussian-sds-quick, outputs 16 x 1024 px", "gaussian-sds-quick", 1,
     {"output.preview_views": 16, "output.preview_resolution": 1024, "output.turntable_frames": 0,
      "output.evaluate": False}),
    ("gaussian-sds-quick, 200k Gaussians", "gaussian-sds-quick", 1,
     {"representation.init_count": 200_000, "representation.max_count": 200_000, "output.turntable_frames": 0,
      "output.evaluate": False}),
    ("gaussian-sds-quick, 8 views x 256 px", "gaussian-sds-quick", 2,
     {"camera.views": 8, "camera.resolution": 256, "output.turntable_frames": 0, "output.evaluate": False}),
]

CHILD = textwrap.dedent('''
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from backend import presets
    from backend.config import apply_overrides
    from backend.engine.loop import run_job
    preset, steps, sets, out = json.loads(sys.argv[1])
    cfg = presets.get(preset)
    cfg = cfg.with_total_steps(max(steps, len(cfg.stages)))
    every = max(1, cfg.total_steps // 2)
    cfg = apply_overrides(cfg, {{"output.preview_every": every, "output.snapshot_every": every,
                                 "output.checkpoint_every": every, "device": "cpu", **sets}})
    t0 = time.perf_counter()
    try:
        run_job(cfg, out, resume=False, check_memory=False)
        status = "ok"
    except MemoryError:
        status = "MemoryError"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"status": status, "peak_bytes": peak, "seconds": round(time.perf_counter() - t0, 1)}}))
''')


def estimate_for(preset: str, steps: int, sets: dict) -> dict:
    from backend import presets
    from backend.config import apply_overrides
    from backend.engine.memory import estimate

    cfg = presets.get(preset)
    cfg = cfg.with_total_steps(max(steps, len(cfg.stages)))
    cfg = apply_overrides(cfg, {"device": "cpu", **sets})
    est = estimate(cfg)
    return {"estimate_bytes": est.host_bytes, "terms": est.terms}


def run_case(preset: str, steps: int, sets: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        code = CHILD.format(limit=CHILD_LIMIT_BYTES)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run([sys.executable, "-c", code, json.dumps([preset, steps, sets, tmp])], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"status": f"not finished in {CASE_TIMEOUT_S} s", "peak_bytes": None}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"status": f"exit {proc.returncode}: {tail[:120]}", "peak_bytes": None}
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per case")
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument("--table", type=Path, default=None, help="print a markdown table of the measured rows in this "
                    "JSON-lines file against the current estimate (no new runs)")
    args = ap.parse_args()
    if args.table:
        print("| case | steps | estimate (GiB) | measured peak RSS (GiB) | estimate / measured |")
        print("|---|---|---|---|---|")
        for line in args.table.read_text().splitlines():
            row = json.loads(line)
            if not row.get("peak_bytes"):
                continue
            est = estimate_for(row["preset"], row["steps"], row["overrides"])["estimate_bytes"]
            print(f"| {row['case']} | {row['steps']} | {est / 2**30:.2f} | {row['peak_bytes'] / 2**30:.2f} | "
                  f"{est / row['peak_bytes']:.2f} |")
        return 0
    print(f"{'case':48s} {'estimate':>9s} {'measured':>9s} {'ratio':>6s}  status")
    for name, preset, steps, sets in CASES:
        if args.only and args.only not in name:
            continue
        est = estimate_for(preset, steps, sets)
        t0 = time.time()
        got = run_case(preset, steps, sets)
        row = {"case": name, "preset": preset, "steps": steps, "overrides": sets, **est, **got,
               "wall_s": round(time.time() - t0, 1)}
        peak = got.get("peak_bytes")
        ratio = f"{est['estimate_bytes'] / peak:6.2f}" if peak else "     -"
        shown = f"{peak / 2**30:8.2f}G" if peak else "        -"
        print(f"{name:48s} {est['estimate_bytes'] / 2**30:8.2f}G {shown} {ratio}  {got['status']}", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
