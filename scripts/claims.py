"""The claims testbed: each paper's claim as arms of one experiment on the text-like reference prior, run over
objects x seeds, evaluated with the rotation-invariant metrics, reported with 95% bootstrap intervals.

The testbed prior (TESTBED_SETS) behaves like a text-to-image prior: the unconditional branch is the library's
marginal over objects and views, and fronts are over-represented (prior.front_bias). Every arm of a claim uses
its preset at the preset's full step budget unless --steps says otherwise.

    # run (resumable: finished runs are rows in --json and are skipped; a killed run resumes from its
    # checkpoint under --out; --shard K/N splits the list between processes sharing the same files)
    .venv/bin/python scripts/claims.py run --claim janus --objects duck mug --seeds 0 1
    # tables, intervals and pictures from the rows (and the assets under --out, for diversity)
    .venv/bin/python scripts/claims.py report --claim janus
    # what `distillery batch` needs to run a claim: a PROMPTS file and one line per arm (preset, --set list)
    .venv/bin/python scripts/claims.py emit --claim janus --objects duck mug --seeds 0 1

Each row records the exact command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "docs" / "results_claims.jsonl"
DEFAULT_OUT = ROOT / "out" / "claims"

# The text-like reference prior every claim runs on: marginal unconditional branch, fronts over-represented
# strongly enough to act at mid noise (kappa 30; at kappa 2 SDS with view conditioning off still made one
# consistent, turned duck: the exact posterior ignores a weak bias below t ~ 900).
TESTBED_SETS = ["prior.unconditional=marginal", "prior.front_bias=30"]
# The runs keep their final asset (for diversity and pictures) and a checkpoint to resume from; nothing else.
RUN_SETS = ["output.preview_every=0", "output.snapshot_every=0", "output.checkpoint_every=200",
            "output.turntable_frames=0", "output.evaluate=false"]


@dataclass(frozen=True)
class Arm:
    name: str
    preset: str
    sets: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class Claim:
    name: str
    question: str
    arms: tuple[Arm, ...]
    metrics: tuple[str, ...]  # the figures the verdict rests on, first = primary
    objects: tuple[str, ...] = ("duck", "mug", "house")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sets: tuple[str, ...] = field(default_factory=tuple)  # on top of TESTBED_SETS, for every arm
    track_iou: bool = False  # evaluate a snapshot every 100 steps (steps to mask IoU 0.8)
    baseline: str = ""  # the arm the others are compared with (default: the first)


NO_VIEW = "prior.view_prompts=false"
CLAIMS: dict[str, Claim] = {c.name: c for c in [
    Claim("janus", "With front bias on and view conditioning off, SDS grows the multi-face artefact; view "
          "prompts, Perp-Neg and the positional embedding reduce it.", (
              Arm("no-view", "gaussian-sds-quick", (NO_VIEW,), "SDS, the text names no view"),
              Arm("view-prompts", "gaussian-sds-quick", ("prior.view_prompts=true",), "SDS with view prompts"),
              Arm("perp-neg", "gaussian-sds-quick", ("prior.perp_neg=true",), "SDS with Perp-Neg"),
              Arm("positional", "gaussian-sds-quick", ("prior.view_embedding=interpolated",),
                  "SDS with the positional (interpolated) view embedding"),
          ), ("multi_face_rate", "aligned_view_accuracy", "view_accuracy", "mask_iou")),
    Claim("particle", "VSD, ESD (s_L 0.5) and ASD reduce the multi-face rate and raise diversity over SDS.", (
        Arm("sds", "gaussian-sds-quick"),
        Arm("vsd", "prolificdreamer-quick"),
        Arm("esd", "esd-quick", ("method.guidance_scale_lora=0.5",)),
        Arm("asd", "asd-quick"),
    ), ("multi_face_rate", "diversity", "aligned_view_accuracy", "mask_iou"), sets=(NO_VIEW,)),
    Claim("ism", "ISM gives more detail than SDS and reaches mask IoU 0.8 in fewer steps, on the same prior.", (
        Arm("sds", "gaussian-sds-quick", ("prior.data_noise=1.0",)),
        Arm("ism", "luciddreamer-quick", ("prior.data_noise=1.0",)),
    ), ("hf_energy_ratio", "psnr_128", "steps_to_iou_0.8", "mask_iou"), track_iou=True),
    Claim("jsd", "JSD gives more diverse and more stable results than SDS.", (
        Arm("sds", "gaussian-sds-quick"),
        Arm("jsd", "jsd-quick"),
    ), ("diversity", "mask_iou_seed_std", "multi_face_rate", "mask_iou"), sets=(NO_VIEW,)),
    Claim("stabledreamer", "StableDreamer's annealed L2 form improves on SDS.", (
        Arm("sds", "gaussian-sds-quick"),
        Arm("stabledreamer", "stabledreamer-quick"),
    ), ("psnr_128", "hf_energy_ratio", "multi_face_rate", "mask_iou")),
    Claim("real3d", "Real3D's discriminator improves its result.", (
        Arm("with-discriminator", "real3d-quick"),
        Arm("without-discriminator", "real3d-quick", ("adversarial.weight=0",)),
    ), ("mask_iou", "aligned_view_accuracy", "multi_face_rate", "psnr"), baseline="without-discriminator"),
]}

ROW_METRICS = ("psnr", "mask_iou", "view_accuracy", "aligned_view_accuracy", "alignment_azimuth",
               "multi_face_rate", "psnr_128", "hf_energy_128", "hf_energy_ratio")


@dataclass(frozen=True)
class Budget:
    """What every run of one invocation shares: the step budget (None = the preset's) and extra settings."""

    steps: int | None = None
    extra: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        base = "full" if self.steps is None else f"{self.steps}steps"
        if not self.extra:
            return base
        return base + "-" + "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", s) for s in self.extra)


def run_dir(out: Path, claim: str, arm: str, obj: str, seed: int, budget: Budget) -> Path:
    return out / claim / budget.tag / arm / f"{obj}-s{seed}"


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def arm_sets(claim: Claim, arm: Arm, budget: Budget) -> list[str]:
    """The --set list of an arm (TESTBED_SETS, the claim's, the arm's, then the invocation's extra ones)."""
    return [*TESTBED_SETS, *claim.sets, *arm.sets, *budget.extra]


def run_sets(claim: Claim, budget: Budget) -> list[str]:
    """What a run keeps (RUN_SETS, snapshots for the IoU curve), then the invocation's extra settings again so
    that they win."""
    keep = [*RUN_SETS, "output.snapshot_every=100"] if claim.track_iou else RUN_SETS
    return [*keep, *budget.extra]


def generate_command(claim: Claim, arm: Arm, obj: str, seed: int, budget: Budget, out: Path) -> str:
    """The plain `distillery generate` line of one run (what `distillery batch` will issue)."""
    parts = [".venv/bin/distillery", "generate", f"a {obj}", "--preset", arm.preset, "--seed", str(seed)]
    if budget.steps is not None:
        parts += ["--steps", str(budget.steps)]
    for s in arm_sets(claim, arm, budget) + run_sets(claim, budget):
        parts += ["--set", s]
    parts += ["--out", _rel(run_dir(out, claim.name, arm.name, obj, seed, budget))]
    return shlex.join(parts)


def row_command(claim: Claim, arm: Arm, obj: str, seed: int, budget: Budget) -> str:
    parts = ["OMP_NUM_THREADS=1", "nice", "-n", "10", ".venv/bin/python", "scripts/claims.py", "run",
             "--claim", claim.name, "--arms", arm.name, "--objects", obj, "--seeds", str(seed)]
    if budget.steps is not None:
        parts += ["--steps", str(budget.steps)]
    for s in budget.extra:
        parts += ["--set", s]
    return shlex.join(parts)


def build_config(claim: Claim, arm: Arm, obj: str, seed: int, budget: Budget) -> Any:
    from backend import presets
    from backend.config import apply_overrides

    cfg = apply_overrides(presets.get(arm.preset), [f"prompt=a {obj}", f"seed={seed}",
                                                     *arm_sets(claim, arm, budget), *run_sets(claim, budget)])
    return cfg if budget.steps is None else cfg.with_total_steps(budget.steps)


def generate(claim: Claim, arm: Arm, obj: str, seed: int, budget: Budget, out: Path) -> dict:
    """Run (or resume from its checkpoint) one job; returns its result.json. A finished run is not run again.
    With claim.track_iou every snapshot's mask IoU is recorded in iou_curve.json as it is written."""
    from backend.engine.loop import run_job

    d = run_dir(out, claim.name, arm.name, obj, seed, budget)
    result_path = d / "result.json"
    if result_path.exists() and (d / "asset.ply").exists():
        return json.loads(result_path.read_text())
    cfg = build_config(claim, arm, obj, seed, budget)
    curve_path = d / "iou_curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.exists() else []

    def emit(event: dict) -> None:
        if event.get("type") == "snapshot" and claim.track_iou and event.get("kind") == "gaussians":
            from backend.cli import asset_render_fn
            from backend.priors.reference.evaluate import evaluate

            m = evaluate(asset_render_fn(d / event["artifact"]), f"a {obj}")
            curve[:] = [c for c in curve if c[0] < event["step"]]  # a resumed run repeats steps after its checkpoint
            curve.append([event["step"], m["mask_iou"]])
            curve_path.write_text(json.dumps(curve))

    t0 = time.time()
    result = run_job(cfg, d, emit=emit, resume=True)
    result["claims_seconds"] = round(time.time() - t0, 1)
    result_path.write_text(json.dumps(result, indent=1, default=str))
    return result


def evaluate_run(claim: Claim, arm: Arm, obj: str, seed: int, budget: Budget, out: Path) -> dict:
    from backend.cli import asset_render_fn
    from backend.priors.reference.evaluate import evaluate

    d = run_dir(out, claim.name, arm.name, obj, seed, budget)
    result = json.loads((d / "result.json").read_text())
    m = evaluate(asset_render_fn(d / "asset.ply"), f"a {obj}", detail=True)
    row = {"claim": claim.name, "arm": arm.name, "object": obj, "seed": seed, "preset": arm.preset,
           "budget": budget.tag, "steps": result.get("steps"), "sets": arm_sets(claim, arm, budget),
           "seconds": result.get("claims_seconds"), "count": result.get("count"),
           **{k: m[k] for k in ROW_METRICS if k in m}}
    if claim.track_iou:
        curve = json.loads((d / "iou_curve.json").read_text()) if (d / "iou_curve.json").exists() else []
        row["iou_curve"] = curve
        row["steps_to_iou_0.8"] = next((s for s, iou in curve if iou >= 0.8), None)
    row.update({"run_dir": _rel(d), "command": row_command(claim, arm, obj, seed, budget),
                "generate_command": generate_command(claim, arm, obj, seed, budget, out)})
    return row


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def todo_list(claim: Claim, arms: list[str], objects: list[str], seeds: list[int]) -> list[tuple[Arm, str, int]]:
    by_name = {a.name: a for a in claim.arms}
    return [(by_name[a], obj, seed) for obj in objects for seed in seeds for a in arms]


def _selection(args: argparse.Namespace, claim: Claim) -> tuple[list[str], list[str], list[int]]:
    return (args.arms or [a.name for a in claim.arms], args.objects or list(claim.objects),
            args.seeds if args.seeds is not None else list(claim.seeds))


def _is(r: dict, claim: Claim, budget: Budget) -> bool:
    return r.get("claim") == claim.name and r.get("budget") == budget.tag


def cmd_run(args: argparse.Namespace) -> int:
    claim, budget = CLAIMS[args.claim], Budget(args.steps, tuple(args.sets))
    rows = [r for r in load_rows(args.json) if _is(r, claim, budget)]
    for index, (arm, obj, seed) in enumerate(todo_list(claim, *_selection(args, claim))):
        if index % args.shards != args.shard:
            continue
        if any(r["arm"] == arm.name and r["object"] == obj and r["seed"] == seed for r in rows):
            continue
        print(f"[{claim.name}] {arm.name} a {obj} seed {seed}", file=sys.stderr, flush=True)
        generate(claim, arm, obj, seed, budget, args.out)
        if args.generate_only:
            continue
        row = evaluate_run(claim, arm, obj, seed, budget, args.out)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


# ------------------------------------------------------------------------------------------------ statistics


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval (resampling runs with replacement)."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n))
    return statistics.fmean(values), means[int(0.025 * n)], means[min(n - 1, int(0.975 * n))]


def bootstrap_diff(a: list[float], b: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean(b) - mean(a) and its 95% bootstrap interval (each arm resampled on its own)."""
    if not a or not b:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    diffs = sorted(statistics.fmean(rng.choices(b, k=len(b))) - statistics.fmean(rng.choices(a, k=len(a)))
                   for _ in range(n))
    return statistics.fmean(b) - statistics.fmean(a), diffs[int(0.025 * n)], diffs[min(n - 1, int(0.975 * n))]


LOWER_IS_BETTER = {"multi_face_rate", "steps_to_iou_0.8", "mask_iou_seed_std"}
MIN_RUNS_FOR_VERDICT = (5, 3)  # seeds, objects per arm


def group_figures(rows: list[dict], out: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Per (arm, object) over its seeds: diversity (from the assets on disk) and the seed std of mask IoU."""
    from backend.cli import asset_render_fn
    from backend.priors.reference.evaluate import aligned_renders, diversity

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["object"]), []).append(r)
    figures = {}
    for key, rs in groups.items():
        f: dict[str, float] = {}
        if len(rs) >= 2:
            f["mask_iou_seed_std"] = statistics.stdev(r["mask_iou"] for r in rs)
            paths = [ROOT / r["run_dir"] / "asset.ply" for r in rs]
            if all(p.exists() for p in paths):
                f["diversity"] = diversity([aligned_renders(asset_render_fn(p), r["alignment_azimuth"])
                                            for p, r in zip(paths, rs, strict=True)])
        figures[key] = f
    return figures


def verdict(claim: Claim, per_arm: dict[str, list[float]], n_seeds: int, n_objects: int, metric: str
            ) -> dict[str, str]:
    """Per non-baseline arm: supported / not supported / inconclusive, from the 95% bootstrap interval of the
    difference to the baseline on `metric` (the claimed direction: lower or higher is better)."""
    base = claim.baseline or claim.arms[0].name
    out = {}
    for arm, values in per_arm.items():
        if arm == base:
            continue
        d, lo, hi = bootstrap_diff(per_arm.get(base, []), values)
        better = (hi < 0) if metric in LOWER_IS_BETTER else (lo > 0)
        worse = (lo > 0) if metric in LOWER_IS_BETTER else (hi < 0)
        small = n_seeds < MIN_RUNS_FOR_VERDICT[0] or n_objects < MIN_RUNS_FOR_VERDICT[1]
        if d != d:  # nan: no data
            out[arm] = "not yet run"
        elif small:
            out[arm] = (f"inconclusive at this budget ({n_seeds} seed(s) x {n_objects} object(s), below "
                        f"{MIN_RUNS_FOR_VERDICT[0]} x {MIN_RUNS_FOR_VERDICT[1]}); difference {d:+.3f} [{lo:+.3f}, "
                        f"{hi:+.3f}]")
        else:
            word = "supported" if better else "not supported" if worse else "inconclusive at this budget"
            out[arm] = f"{word}: difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """Markdown to stdout: per arm, mean [95% bootstrap interval] of every figure over the selected runs, the
    group figures (diversity, seed std) and the verdict on the claim's primary figure; a contact sheet and an
    interval plot beside the --json file (claims_<claim>_sheet.png, claims_<claim>.png)."""
    claim, budget = CLAIMS[args.claim], Budget(args.steps, tuple(args.sets))
    arms, objects, seeds = _selection(args, claim)
    rows = [r for r in load_rows(args.json) if _is(r, claim, budget) and r["arm"] in arms
            and r["object"] in objects and r["seed"] in seeds]
    if not rows:
        print(f"claim {claim.name} ({budget.tag}): not yet run")
        return 0
    groups = group_figures(rows, args.out)
    metrics = list(dict.fromkeys([*claim.metrics, "multi_face_rate", "aligned_view_accuracy", "view_accuracy",
                                  "mask_iou", "psnr"]))
    present_arms = [a for a in arms if any(r["arm"] == a for r in rows)]

    def values(arm: str, m: str) -> list[float]:
        if m in ("diversity", "mask_iou_seed_std"):
            return [f[m] for (a, _), f in groups.items() if a == arm and m in f]
        return [r[m] for r in rows if r["arm"] == arm and r.get(m) is not None]

    n_seeds = len({r["seed"] for r in rows})
    n_objects = len({r["object"] for r in rows})
    print(f"Claim `{claim.name}` ({budget.tag}): {claim.question}\n")
    print(f"{len(rows)} runs: objects {sorted({r['object'] for r in rows})}, seeds "
          f"{sorted({r['seed'] for r in rows})}. Mean [95% bootstrap interval] over runs (diversity and seed "
          f"std: over objects).\n")
    print("| arm | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for a in present_arms:
        cells = []
        for m in metrics:
            v = values(a, m)
            if not v:
                cells.append("-")
                continue
            mean, lo, hi = bootstrap_ci(v)
            cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if len(v) > 1 else f"{mean:.3f}")
        print(f"| {a} | " + " | ".join(cells) + " |")
    primary = claim.metrics[0]
    print(f"\nVerdict on {primary} against `{claim.baseline or claim.arms[0].name}`:\n")
    for a, v in verdict(claim, {a: values(a, primary) for a in present_arms}, n_seeds, n_objects,
                        primary).items():
        print(f"- {a}: {v}")
    print("\nRows (run, figures, command):\n")
    print("| arm | object | seed | multi_face_rate | aligned_view_accuracy | view_accuracy | mask_iou | command |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (arms.index(r["arm"]), r["object"], r["seed"])):
        print(f"| {r['arm']} | {r['object']} | {r['seed']} | {r['multi_face_rate']:.3f} | "
              f"{r['aligned_view_accuracy']:.3f} | {r['view_accuracy']:.3f} | {r['mask_iou']:.3f} | "
              f"`{r['command']}` |")
    stem = args.json.parent / f"claims_{claim.name}"  # pictures beside the rows (docs/ by default)
    contact_sheet(rows, arms, stem.with_name(stem.name + "_sheet.png"))
    interval_plot({a: values(a, primary) for a in present_arms}, primary, stem.with_name(stem.name + ".png"))
    print(f"\n![renders](claims_{claim.name}_sheet.png) ![{primary}](claims_{claim.name}.png)")
    return 0


SHEET_AZIMUTHS = (0.0, 45.0, 90.0, 135.0, 180.0, -135.0, -90.0, -45.0)


def contact_sheet(rows: list[dict], arms: list[str], path: Path, size: int = 96) -> None:
    """The library object first (one line per object), then one line per run (arm, object, seed): the asset
    from 8 azimuths at elevation 15 (absolute cameras, as generated), with its multi-face rate."""
    import torch
    from PIL import Image, ImageDraw

    from backend.cli import asset_render_fn
    from backend.priors.reference.cache import reference_cameras
    from backend.priors.reference.evaluate import mesh_render_fn
    from backend.priors.reference.library import build

    rows = sorted(rows, key=lambda r: (arms.index(r["arm"]), r["object"], r["seed"]))
    objects = sorted({r["object"] for r in rows})
    lines = [(f"library {o}", "the object itself", mesh_render_fn(build(o))) for o in objects]
    lines += [(r["arm"], f"{r['object']} s{r['seed']}  multi-face {r['multi_face_rate']:.2f}",
               asset_render_fn(ROOT / r["run_dir"] / "asset.ply")) for r in rows]
    label_w, head_h = 190, 14
    sheet = Image.new("RGB", (label_w + size * len(SHEET_AZIMUTHS), head_h + size * len(lines)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, a in enumerate(SHEET_AZIMUTHS):
        draw.text((label_w + c * size + 4, 1), f"az {a:g}", fill=(90, 90, 90))
    cams = reference_cameras(torch.full((len(SHEET_AZIMUTHS),), 15.0), torch.tensor(SHEET_AZIMUTHS))
    cams = cams.resized(size, size)
    for i, (title, sub, render_fn) in enumerate(lines):
        with torch.no_grad():
            rgb, _ = render_fn(cams, torch.ones(len(cams), 3))
        strip = (torch.cat(list(rgb.clamp(0, 1)), dim=1).numpy() * 255).round().astype("uint8")
        sheet.paste(Image.fromarray(strip), (label_w, head_h + i * size))
        draw.text((4, head_h + i * size + size // 2 - 12), title, fill=(0, 0, 0))
        draw.text((4, head_h + i * size + size // 2 + 2), sub, fill=(60, 60, 60))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def interval_plot(per_arm: dict[str, list[float]], metric: str, path: Path) -> None:
    """Each run as a dot, the mean as a bar and its 95% bootstrap interval as a whisker, one column per arm."""
    from PIL import Image, ImageDraw

    vals = [v for vs in per_arm.values() for v in vs]
    if not vals:
        return
    lo_v, hi_v = min(0.0, *vals), max(1.0 if max(vals) <= 1 else max(vals), *vals)
    W, H, top, bottom, left = 120 * len(per_arm) + 60, 260, 20, 40, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)

    def y(v: float) -> float:
        return top + (H - top - bottom) * (1 - (v - lo_v) / max(hi_v - lo_v, 1e-9))

    for k in range(6):
        v = lo_v + (hi_v - lo_v) * k / 5
        d.line([(left, y(v)), (W - 10, y(v))], fill=(230, 230, 230))
        d.text((4, y(v) - 6), f"{v:.2f}", fill=(90, 90, 90))
    d.text((left, 2), metric, fill=(0, 0, 0))
    for i, (arm, vs) in enumerate(per_arm.items()):
        x = left + 60 + 120 * i
        d.text((x - 45, H - bottom + 8), arm[:18], fill=(0, 0, 0))
        if not vs:
            continue
        mean, lo, hi = bootstrap_ci(vs)
        d.rectangle([x - 25, y(mean), x + 25, y(lo_v)], fill=(170, 200, 235))
        d.line([(x, y(lo)), (x, y(hi))], fill=(20, 40, 120), width=2)
        for j, v in enumerate(vs):
            d.ellipse([x - 12 + 6 * (j % 5) - 2, y(v) - 2, x - 12 + 6 * (j % 5) + 2, y(v) + 2], fill=(200, 60, 40))
    img.save(path, optimize=True)


def cmd_emit(args: argparse.Namespace) -> int:
    """A PROMPTS file and one `distillery batch` line per arm (its --set list), for running a claim through
    `distillery batch` (whose results.jsonl then carries the evaluation figures per job)."""
    claim, budget = CLAIMS[args.claim], Budget(args.steps, tuple(args.sets))
    if budget.steps is not None:
        raise SystemExit("emit: distillery batch runs the presets' own step budgets; drop --steps")
    arms, objects, seeds = _selection(args, claim)
    folder = args.out / claim.name / budget.tag
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "PROMPTS").write_text("".join(f"a {o}\n" for o in objects))
    for a in [x for x in claim.arms if x.name in arms]:
        parts = [".venv/bin/distillery", "batch", _rel(folder / "PROMPTS"), "--presets", a.preset, "--seeds",
                 ",".join(str(s) for s in seeds), "--out", _rel(folder / "batch" / a.name)]
        # batch evaluates every job itself (results.jsonl), so the engine's evaluation stays on here
        for s in arm_sets(claim, a, budget) + [x for x in RUN_SETS if x != "output.evaluate=false"]:
            parts += ["--set", s]
        print(shlex.join(parts))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "report", "emit"):
        s = sub.add_parser(name)
        s.add_argument("--claim", required=True, choices=list(CLAIMS))
        s.add_argument("--arms", nargs="*", default=None)
        s.add_argument("--objects", nargs="*", default=None, help="library objects (default: the claim's)")
        s.add_argument("--seeds", nargs="*", type=int, default=None, help="seeds (default: the claim's)")
        s.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's budget)")
        s.add_argument("--json", type=Path, default=DEFAULT_JSON, help="rows (JSON lines), appended and resumed")
        s.add_argument("--out", type=Path, default=DEFAULT_OUT, help="run folders (assets, checkpoints)")
        s.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="one more setting for every arm (recorded in the rows; a separate set of runs)")
        if name == "run":
            s.add_argument("--shard", default="0/1", metavar="K/N", help="run every N-th run from the K-th")
            s.add_argument("--generate-only", action="store_true", help="run the jobs, write no rows")
    args = p.parse_args(argv)
    claim = CLAIMS[args.claim]
    bad = sorted(set(args.arms or []) - {a.name for a in claim.arms})
    if bad:
        p.error(f"--arms: {bad} not in claim {claim.name!r} (arms: {[a.name for a in claim.arms]})")
    args.out = args.out.resolve()
    if args.cmd == "run":
        try:
            args.shard, args.shards = (int(v) for v in args.shard.split("/"))
            assert 0 <= args.shard < args.shards
        except (ValueError, AssertionError):
            p.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
        return cmd_run(args)
    return cmd_report(args) if args.cmd == "report" else cmd_emit(args)


if __name__ == "__main__":
    raise SystemExit(main())
