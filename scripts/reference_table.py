"""Run a preset on every object of the reference library and print a markdown table of the evaluation.

    .venv/bin/python scripts/reference_table.py --modes prompt none --seeds 0 > table.md

Each run is `distillery generate` with the preset's defaults (plus --set overrides); `none` view
conditioning shows the Janus effect (the prior then ignores where the camera is).
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
from backend.priors.reference.library import OBJECTS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=presets.DEFAULT_PRESET)
    p.add_argument("--objects", nargs="*", default=list(OBJECTS))
    p.add_argument("--modes", nargs="*", default=["prompt", "none"], choices=["prompt", "camera", "none"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, default=None, help="also write every run's metrics here (JSON lines)")
    args = p.parse_args()
    rows = []
    for obj in args.objects:
        for mode in args.modes:
            for seed in args.seeds:
                cfg = apply_overrides(presets.get(args.preset), [
                    f"prompt=a {obj}", f"seed={seed}", f"prior.view_conditioning={mode}", "output.preview_every=0",
                    "output.snapshot_every=0", "output.checkpoint_every=0", "output.turntable_frames=0", *args.sets])
                t0 = time.time()
                with tempfile.TemporaryDirectory() as tmp:
                    result = run_job(cfg, Path(tmp), resume=False)
                row = {"object": obj, "mode": mode, "seed": seed, "seconds": round(time.time() - t0, 1),
                       "count": result["count"], **result["metrics"]}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print(f"| object | {' | '.join(f'{m}: PSNR / IoU / view acc.' for m in args.modes)} |")
    print("|---|" + "---|" * len(args.modes))
    for obj in args.objects:
        cells = []
        for mode in args.modes:
            rs = [r for r in rows if r["object"] == obj and r["mode"] == mode]
            med = {k: statistics.median(r[k] for r in rs) for k in ("psnr", "mask_iou", "view_accuracy")}
            cells.append(f"{med['psnr']:.1f} / {med['mask_iou']:.3f} / {med['view_accuracy']:.2f}")
        print(f"| {obj} | {' | '.join(cells)} |")
    for mode in args.modes:
        rs = [r for r in rows if r["mode"] == mode]
        print(f"\n{mode}: median PSNR {statistics.median(r['psnr'] for r in rs):.1f} dB, mask IoU "
              f"{statistics.median(r['mask_iou'] for r in rs):.3f}, view accuracy "
              f"{statistics.median(r['view_accuracy'] for r in rs):.2f} over {len(rs)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
