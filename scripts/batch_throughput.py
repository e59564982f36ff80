"""Batch throughput with 1 and 2 workers, on the embedded runner and on a local Ray instance.

Runs the real CLI (`distillery batch`) on the same small set of quick jobs for each (runner, workers), each into a
fresh folder, and prints the wall time, jobs per hour, the median seconds per job (from results.jsonl) and the
1 -> 2 worker ratio, with the machine's 1-minute load average before and after each run (other work on a
shared machine takes CPU from the workers). The reference sets are rendered once beforehand so no run pays for them.

    nice -n 10 .venv/bin/python scripts/batch_throughput.py --out /tmp/throughput
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = ["a blue mug", "a red duck", "a green car", "a yellow fish"]
PRESET = "gaussian-sds-quick"
SETTINGS = ["stages.0.steps=30", "stages.0.camera.views=2", "stages.0.representation.init_count=500",
            "output.preview_every=0", "output.snapshot_every=0", "output.turntable_frames=8",
            "output.preview_resolution=64"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runners", default="local,ray")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = args.out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    from backend import presets, registry

    prior = registry.resolve(registry.PRIORS, "reference")(presets.get(PRESET).stages[0].prior, "cpu")
    for p in PROMPTS:
        prior.prepare(p, "")
    rows = []
    for runner in args.runners.split(","):
        for workers in [int(w) for w in args.workers.split(",")]:
            out = args.out / f"{runner}-{workers}"
            cmd = [sys.executable, "-m", "backend", "batch", str(prompts), "--presets", PRESET, "--out", str(out),
                   "--workers", str(workers), "--quiet"]
            if runner == "ray":
                cmd += ["--ray", "local", "--no-dashboard"]
            for s in SETTINGS:
                cmd += ["--set", s]
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            wall = time.perf_counter() - t0
            load1 = os.getloadavg()[0]
            results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
            secs = [r["seconds"] for r in results if r["status"] == "ok"]
            row = {"runner": runner, "workers": workers, "jobs": len(results), "ok": len(secs),
                   "wall_s": round(wall, 1), "jobs_per_hour": round(3600 * len(secs) / wall, 1),
                   "median_job_s": round(statistics.median(secs), 1),
                   "median_job_cpu_s": round(statistics.median([r["cpu_seconds"] for r in results
                                                                if r.get("cpu_seconds")]), 1),
                   "load_before_after": [round(load0, 1), round(load1, 1)]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for runner in args.runners.split(","):
        by = {r["workers"]: r for r in rows if r["runner"] == runner}
        if 1 in by and 2 in by:
            print(f"{runner}: throughput ratio 2 workers / 1 worker = {by[1]['wall_s'] / by[2]['wall_s']:.2f}")


if __name__ == "__main__":
    main()
