"""Compare SDS, ISM, JSD and StableDreamer on the reference prior: same step budget, seeds and cameras, scores
along the way (so convergence speed is visible), a markdown table and a PNG plot.

    for seed in 0 1; do   # two processes, one per seed
        OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_inversion.py run --steps 300 --every 50 --seeds $seed \\
            --set camera.views=2 --set representation.init_count=1000 --set representation.max_count=4000 \\
            --jsonl docs/results_inversion.jsonl &
    done; wait
    .venv/bin/python scripts/compare_inversion.py report --jsonl docs/results_inversion.jsonl \\
        --plot docs/results_inversion.png > table.md

`run` runs each method's quick preset rescaled to --steps (every stage keeps its proportions), with random solid
backgrounds half of the time for every method (so only the update rule and its own regularisers differ), and
evaluates the snapshot written every --every steps against the reference prior (PSNR, mask IoU, view
accuracy); "seconds" is the optimisation time so far (setup included, evaluations excluded). Each
evaluation is appended to the JSON-lines file as it happens, so an interrupted run keeps what it measured.
`report` prints the table (mean over seeds at each checkpoint) and draws the curves with Pillow.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

METHODS = {
    "SDS": "gaussian-sds-quick",
    "ISM": "luciddreamer-quick",
    "JSD": "jsd-quick",
    "StableDreamer": "stabledreamer-quick",
}
# Extra overrides of a row beyond its preset: ISM on the unsmoothed reference prior, to show why the preset
# smooths it (docs/RESULTS_INVERSION.md).
METHODS["ISM, tau 0"] = "luciddreamer-quick"
EXTRA = {"ISM, tau 0": ["prior.data_noise=0"]}
COLOURS = {"SDS": (90, 90, 90), "ISM": (31, 119, 180), "JSD": (214, 39, 40), "StableDreamer": (44, 160, 44),
           "ISM, tau 0": (150, 190, 230)}
METRICS = (("psnr", "PSNR (dB)"), ("mask_iou", "mask IoU"), ("view_accuracy", "view accuracy"))


def evaluate_ply(path: Path, prompt: str) -> dict[str, float]:
    import torch

    from backend.io.ply import read_gaussian_ply
    from backend.priors.reference.evaluate import evaluate
    from backend.renderers.gaussians_torch import TorchGaussianRenderer
    from backend.representations.gaussians import Gaussians

    cloud = Gaussians.from_ply_arrays(read_gaussian_ply(path))
    renderer = TorchGaussianRenderer()

    def render_fn(cams: Any, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = renderer.render(cloud, cams, background)
        return out.rgb, out.alpha

    m = evaluate(render_fn, prompt)
    return {k: float(m[k]) for k in ("psnr", "mask_iou", "view_accuracy")}


def run(args: argparse.Namespace) -> int:
    from backend import presets
    from backend.config import apply_overrides
    from backend.engine.loop import run_job

    for seed in args.seeds:
        for label in args.methods:
            preset = METHODS[label]
            cfg = apply_overrides(presets.get(preset), [
                f"prompt={args.prompt}", f"seed={seed}", "random_background_prob=0.5",
                f"output.snapshot_every={args.every}", "output.preview_every=0", "output.checkpoint_every=0",
                "output.turntable_frames=0", "output.evaluate=false", *args.sets, *EXTRA.get(label, [])])
            cfg = cfg.with_total_steps(args.steps)
            # Seconds of optimisation: wall time since the job started, less the evaluations run so far.
            clock = {"start": time.time(), "eval": 0.0}
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)

                def emit(ev: dict[str, Any], out: Path = out, label: str = label, seed: int = seed,
                         preset: str = preset, clock: dict = clock) -> None:
                    if ev["type"] != "snapshot":
                        return
                    t_eval = time.time()
                    seconds = t_eval - clock["start"] - clock["eval"]
                    metrics = evaluate_ply(out / ev["artifact"], args.prompt)
                    clock["eval"] += time.time() - t_eval
                    row = {"method": label, "preset": preset, "seed": seed, "step": ev["step"],
                           "prompt": args.prompt, "seconds": round(seconds, 1), "count": ev["count"], **metrics}
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")

                run_job(cfg, out, emit=emit, resume=False)
    return 0


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """method -> step -> metric -> mean over seeds (also "n" seeds and "seconds")."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for label in METHODS:
        rs = [r for r in rows if r["method"] == label]
        for step in sorted({r["step"] for r in rs}):
            at = [r for r in rs if r["step"] == step]
            out.setdefault(label, {})[step] = {
                **{k: statistics.mean(r[k] for r in at) for k, _ in METRICS},
                "n": len(at), "seconds": statistics.mean(r["seconds"] for r in at),
            }
    return out


def plot(data: dict[str, dict[int, dict[str, float]]], path: Path) -> None:
    from PIL import Image, ImageDraw

    W, H, pad_l, pad_b, pad_t = 330, 240, 46, 34, 26
    img = Image.new("RGB", (W * len(METRICS), H + 24), "white")
    d = ImageDraw.Draw(img)
    steps = [s for c in data.values() for s in c]
    smax = max(steps) if steps else 1
    for i, (key, title) in enumerate(METRICS):
        x0 = i * W
        vals = [p[key] for c in data.values() for p in c.values()]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if key != "psnr":
            lo, hi = min(lo, 0.5), 1.0
        lo, hi = lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9)

        def xy(step: float, v: float, x0: int = x0, lo: float = lo, hi: float = hi) -> tuple[float, float]:
            return (x0 + pad_l + (W - pad_l - 10) * step / smax,
                    pad_t + (H - pad_t - pad_b) * (1 - (v - lo) / (hi - lo)))

        d.rectangle([x0 + pad_l, pad_t, x0 + W - 10, H - pad_b], outline=(0, 0, 0))
        d.text((x0 + pad_l, 6), title, fill=(0, 0, 0))
        for frac in (0.0, 0.5, 1.0):
            v = lo + frac * (hi - lo)
            _, y = xy(0, v)
            d.text((x0 + 4, y - 6), f"{v:.2f}" if key != "psnr" else f"{v:.1f}", fill=(80, 80, 80))
            step = frac * smax
            x, _ = xy(step, lo)
            d.text((x - 10, H - pad_b + 4), f"{step:.0f}", fill=(80, 80, 80))
        d.text((x0 + W // 2 - 10, H - 14), "step", fill=(80, 80, 80))
        for label, c in data.items():
            pts = [xy(s, p[key]) for s, p in sorted(c.items())]
            if len(pts) > 1:
                d.line(pts, fill=COLOURS[label], width=2)
            for x, y in pts:
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=COLOURS[label])
    lx = 10
    for label, colour in COLOURS.items():
        d.rectangle([lx, H + 6, lx + 14, H + 16], fill=colour)
        d.text((lx + 18, H + 5), label, fill=(0, 0, 0))
        lx += 18 + 9 * len(label) + 20
    img.save(path, optimize=True)


def report(args: argparse.Namespace) -> int:
    rows = load(args.jsonl)
    data = curves(rows)
    steps = sorted({s for c in data.values() for s in c})
    seeds = sorted({r["seed"] for r in rows})
    print(f"Prompt {rows[0]['prompt']!r}, seeds {seeds}; mean over seeds of PSNR (dB) / mask IoU / view accuracy.\n")
    print("| method | " + " | ".join(f"step {s}" for s in steps) + " | s/step |")
    print("|---|" + "---|" * (len(steps) + 1))
    for label, c in data.items():
        cells = []
        for s in steps:
            p = c.get(s)
            cells.append("-" if p is None else f"{p['psnr']:.1f} / {p['mask_iou']:.2f} / {p['view_accuracy']:.2f}")
        last = max(c)
        rate = c[last]["seconds"] / last
        print(f"| {label} | " + " | ".join(cells) + f" | {rate:.2f} |")
    print("\nPer seed at the last checkpoint:\n")
    print("| method | seed | PSNR | mask IoU | view accuracy | Gaussians | seconds |")
    print("|---|---|---|---|---|---|---|")
    for label in data:
        for seed in seeds:
            rs = [r for r in rows if r["method"] == label and r["seed"] == seed]
            if rs:
                r = max(rs, key=lambda r: r["step"])
                print(f"| {label} | {seed} | {r['psnr']:.2f} | {r['mask_iou']:.3f} | {r['view_accuracy']:.2f} | "
                      f"{r['count']} | {r['seconds']:.0f} |")
    if args.plot:
        plot(data, args.plot)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--every", type=int, default=50)
    r.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    r.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    r.add_argument("--prompt", default="a blue mug")
    r.add_argument("--jsonl", type=Path, required=True)
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra overrides applied to every method alike (e.g. camera.views=2)")
    g = sub.add_parser("report")
    g.add_argument("--jsonl", type=Path, required=True)
    g.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    return run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    raise SystemExit(main())
