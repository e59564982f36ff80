"""The GPU acceptance bench table: `distillery bench` on the full-size SD 2.1-base architecture with random
weights (no download) for gaussian-sds, prolificdreamer, luciddreamer and real3d at their final resolutions,
in fp16 or bf16; one row per preset with ms per iteration and per view, peak GPU memory over the steps, the
target and, where a preset misses it, the phase that dominates its step.

    python scripts/gpu_bench.py [--dtype fp16|bf16] [--steps 30] [--warmup 5] [--json-out FILE]
    python scripts/gpu_bench.py --dry-run     # the same code on tiny random models on the CPU (no CUDA)

scripts/gpu_check.sh runs it after the `gpu` tests; docs/PERFORMANCE.md explains the targets.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Row:
    """One preset of the table and its target."""

    preset: str
    what: str  # the method and representation, for the table
    per_view: bool  # the time target counts per view (else per iteration)
    target_ms: float | None
    target_gb: float | None


ROWS = [
    Row("gaussian-sds", "SDS, 3D Gaussians", True, 15.0, 8.0),
    Row("prolificdreamer", "VSD (LoRA particle model), 3D Gaussians", False, 28.0, 14.0),
    Row("luciddreamer", "ISM, 3D Gaussians, 4 views", False, 100.0, None),
    Row("real3d", "SDS + adversarial, DMTet mesh", False, None, None),
]


def bench_config(preset: str, arch: str, dtype: str | None, steps: int, dry_run: bool):
    """The preset at its final resolution with random `arch` weights (every diffusers prior and particle model),
    `steps` steps in all. The dry run shrinks it with the test suite's tiny-run settings instead."""
    from backend import presets
    from backend.cli import _with_random_prior
    from backend.config import apply_overrides
    from backend.engine.tiny import tiny_run_overrides

    cfg = _with_random_prior(presets.get(preset), arch)
    if dry_run:
        return apply_overrides(cfg, tiny_run_overrides(cfg, steps=steps, resolution=32))
    sets: dict[str, object] = {"device": "cuda"}
    for i, st in enumerate(cfg.stages):
        k = f"stages.{i}."
        sets[k + "camera.resolution"] = max(st.camera.resolution, st.camera.resolution_final)
        sets[k + "camera.resolution_final"] = 0
        if dtype:
            sets[k + "prior.dtype"] = dtype
        if st.adversarial.weight != 0.0:
            # Real3D's discriminator bank (1000 generated images) is built once before the first step; a small
            # bank keeps the run inside its time budget and leaves the per-step cost unchanged.
            sets.update({k + "adversarial.bank_size": 8, k + "adversarial.bank_steps": 10,
                         k + "adversarial.bank_batch": 8})
    cfg = apply_overrides(cfg, sets)
    return cfg.with_total_steps(steps)


def table_row(row: Row, cfg, report: dict) -> dict:
    """The figures of one preset and its verdict against the target."""
    med = report["median_ms"]
    views = cfg.stages[-1].camera.views
    ms = med.get("step")
    per_view = ms / views if ms is not None else None
    measured = per_view if row.per_view else ms
    phases = {k: v for k, v in med.items() if k != "step"}
    dominant = max(phases, key=phases.get) if phases else "-"
    gb = report["peak_vram_gb"]
    misses = []
    if row.target_ms is not None and measured is not None and measured > row.target_ms:
        misses.append("time")
    if row.target_gb is not None and gb is not None and gb > row.target_gb:
        misses.append("memory")
    if row.target_ms is None and row.target_gb is None:
        verdict = "no target"
    elif misses:
        verdict = f"misses ({', '.join(misses)}): {dominant} dominates ({phases[dominant]:.1f} ms)"
    else:
        verdict = "meets"
    target = []
    if row.target_ms is not None:
        target.append(f"<= {row.target_ms:g} ms/{'view' if row.per_view else 'iter'}")
    if row.target_gb is not None:
        target.append(f"<= {row.target_gb:g} GB")
    return {"preset": row.preset, "what": row.what, "resolution": cfg.stages[-1].camera.resolution, "views": views,
            "dtype": cfg.stages[-1].prior.dtype, "ms_per_iteration": ms, "ms_per_view": per_view,
            "peak_vram_gb": gb, "phases_ms": phases, "dominant_phase": dominant,
            "target": ", ".join(target) or "-", "verdict": verdict}


def format_table(rows: list[dict], title: str) -> str:
    head = ("| preset | what | px | views | dtype | ms/iteration | ms/view | peak VRAM | target | verdict |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"### {title}", "", head]
    for r in rows:
        gb = f"{r['peak_vram_gb']:.2f} GB" if r["peak_vram_gb"] is not None else "-"
        it = f"{r['ms_per_iteration']:.1f}" if r["ms_per_iteration"] is not None else "-"
        pv = f"{r['ms_per_view']:.1f}" if r["ms_per_view"] is not None else "-"
        lines.append(f"| {r['preset']} | {r['what']} | {r['resolution']} | {r['views']} | {r['dtype']} | {it} | {pv} "
                     f"| {gb} | {r['target']} | {r['verdict']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny random models on the CPU: checks the table code")
    p.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="precision of the priors (GPU run)")
    p.add_argument("--steps", type=int, default=None, help="steps per preset (default 30; dry run 3)")
    p.add_argument("--warmup", type=int, default=None, help="steps left out of the medians (default 5; dry run 1)")
    p.add_argument("--presets", default=",".join(r.preset for r in ROWS), help="comma-separated subset")
    p.add_argument("--json-out", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)

    import torch

    from backend.cli import run_bench

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (use --dry-run to check the table code on the CPU)", file=sys.stderr)
        return 2
    steps = args.steps or (3 if args.dry_run else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.dry_run else 5)
    arch = "tiny-sd" if args.dry_run else "sd21-base"
    wanted = [r for r in ROWS if r.preset in args.presets.split(",")]
    rows = []
    for row in wanted:
        cfg = bench_config(row.preset, arch, None if args.dry_run else args.dtype, steps, args.dry_run)
        print(f"gpu_bench: {row.preset} ({steps} steps, {warmup} warm-up) ...", file=sys.stderr, flush=True)
        report = run_bench(cfg, warmup)
        rows.append(table_row(row, cfg, report))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else "CPU"
    title = (f"{'DRY RUN (tiny random models on the CPU; not comparable to the targets): ' if args.dry_run else ''}"
             f"{arch} random weights, {device}, torch {torch.__version__}, {steps} steps, medians after {warmup}")
    print(format_table(rows, title))
    if args.json_out:
        args.json_out.write_text(json.dumps({"title": title, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
