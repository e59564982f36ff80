"""The mode-collapse (Janus) experiment: SDS, VSD and ESD on the reference prior with view conditioning `none`.

With `none` the prior cannot tell front from back, so a method that collapses onto the prior's modes tends to
paint the object's front on several sides; view accuracy (docs/REFERENCE_PRIOR.md) measures that. Every run
uses the same quick preset settings except the update rule, the same seeds and the same step budget.

    .venv/bin/python scripts/mode_collapse.py --objects mug duck house --seeds 0 1 2 --steps 150 \
        --json docs/results_particle.jsonl > table.md

Runs append to --json as they finish, and runs already there are skipped (the experiment can be resumed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from backend import presets
from backend.config import apply_overrides
from backend.engine.loop import run_job

METHODS = {
    "sds": ("gaussian-sds-quick", []),
    "vsd": ("prolificdreamer-quick", []),
    "esd": ("esd-quick", ["method.guidance_scale_lora=0.5"]),
}


def run_one(method: str, obj: str, seed: int, steps: int, sets: list[str]) -> dict:
    preset, extra = METHODS[method]
    cfg = apply_overrides(presets.get(preset), [
        f"prompt=a {obj}", f"seed={seed}", "prior.view_conditioning=none", "output.preview_every=0",
        "output.snapshot_every=0", "output.checkpoint_every=0", "output.turntable_frames=0", *extra, *sets])
    cfg = cfg.with_total_steps(steps)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_job(cfg, Path(tmp), resume=False)
    return {"method": method, "object": obj, "seed": seed, "steps": steps, "seconds": round(time.time() - t0, 1),
            "count": result["count"], **{k: result["metrics"][k] for k in ("psnr", "mask_iou", "view_accuracy")}}


def table(rows: list[dict], methods: list[str], objects: list[str]) -> str:
    out = ["| object | " + " | ".join(f"{m.upper()}: view acc. / PSNR / IoU" for m in methods) + " |",
           "|---|" + "---|" * len(methods)]

    def cell(rs: list[dict]) -> str:
        if not rs:
            return "-"
        acc = [r["view_accuracy"] for r in rs]
        return (f"{statistics.mean(acc):.2f} ({', '.join(f'{a:.2f}' for a in acc)}) / "
                f"{statistics.mean(r['psnr'] for r in rs):.1f} / {statistics.mean(r['mask_iou'] for r in rs):.3f}")

    for obj in objects:
        out.append(f"| {obj} | " + " | ".join(cell([r for r in rows if r["object"] == obj and r["method"] == m])
                                             for m in methods) + " |")
    out.append("| **all** | " + " | ".join(cell([r for r in rows if r["method"] == m]) for m in methods) + " |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--objects", nargs="*", default=["mug", "duck", "house"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400, help="steps per run (the quick presets use 1200)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, default=None, help="append every run here (JSON lines); resume from it")
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="run only every N-th run of the list, starting at K (parallel processes sharing --json)")
    args = p.parse_args()
    try:
        shard, shards = (int(v) for v in args.shard.split("/"))
        assert 0 <= shard < shards
    except (ValueError, AssertionError):
        p.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
    rows: list[dict] = []
    if args.json and args.json.exists():
        rows = [json.loads(line) for line in args.json.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["steps"] == args.steps]
    todo = [(obj, seed, method) for obj in args.objects for seed in args.seeds for method in args.methods]
    for index, (obj, seed, method) in enumerate(todo):
        done = any(r["method"] == method and r["object"] == obj and r["seed"] == seed for r in rows)
        if done or index % shards != shard:
            continue
        row = run_one(method, obj, seed, args.steps, args.sets)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    rows = [r for r in rows if r["method"] in args.methods and r["object"] in args.objects and r["seed"] in args.seeds]
    print(table(rows, args.methods, args.objects))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
