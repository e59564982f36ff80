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
# (front/back prior ratio exp(2 * 2) ~ 55, front/side exp(2) ~ 7).
TESTBED_SETS = ["prior.unconditional=marginal", "prior.front_bias=2"]
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
    ), ("hf_energy_ratio", "psnr_128", "steps_to_iou_0.8", "mask_iou")),
    Claim("jsd", "JSD gives more diverse and more stable results than SDS.", (
        Arm("sds", "gaussian-sds-quick"),
        Arm("jsd", "jsd-quick"),
    ), ("diversity", "loss_tail_std", "multi_face_rate", "mask_iou"), sets=(NO_VIEW,)),
    Claim("stabledreamer", "StableDreamer's annealed L2 form improves on SDS.", (
        Arm("sds", "gaussian-sds-quick"),
        Arm("stabledreamer", "stabledreamer-quick"),
    ), ("psnr_128", "hf_energy_ratio", "multi_face_rate", "mask_iou")),
    Claim("real3d", "Real3D's discriminator improves its result.", (
        Arm("with-discriminator", "real3d-quick"),
        Arm("without-discriminator", "real3d-quick", ("adversarial.weight=0",)),
    ), ("mask_iou", "aligned_view_accuracy", "multi_face_rate", "psnr")),
]}

ROW_METRICS = ("psnr", "mask_iou", "view_accuracy", "aligned_view_accuracy", "alignment_azimuth",
               "multi_face_rate", "psnr_128", "hf_energy_128", "hf_energy_ratio")


def run_dir(out: Path, claim: str, arm: str, obj: str, seed: int, steps: int | None) -> Path:
    tag = "full" if steps is None else f"{steps}steps"
    return out / claim / tag / arm / f"{obj}-s{seed}"


def arm_sets(claim: Claim, arm: Arm, obj: str, seed: int) -> list[str]:
    return [f"prompt=a {obj}", f"seed={seed}", *TESTBED_SETS, *claim.sets, *arm.sets]


def generate_command(claim: Claim, arm: Arm, obj: str, seed: int, steps: int | None, out: Path) -> str:
    """The plain `distillery generate` line of one run (what `distillery batch` will issue)."""
    sets = [s for s in arm_sets(claim, arm, obj, seed) if not s.startswith(("prompt=", "seed="))]
    parts = [".venv/bin/distillery", "generate", f"a {obj}", "--preset", arm.preset, "--seed", str(seed)]
    if steps is not None:
        parts += ["--steps", str(steps)]
    for s in sets + RUN_SETS:
        parts += ["--set", s]
    parts += ["--out", str(run_dir(out, claim.name, arm.name, obj, seed, steps).relative_to(ROOT))
              if run_dir(out, claim.name, arm.name, obj, seed, steps).is_relative_to(ROOT) else
              str(run_dir(out, claim.name, arm.name, obj, seed, steps))]
    return shlex.join(parts)


def row_command(claim: Claim, arm: Arm, obj: str, seed: int, steps: int | None) -> str:
    parts = ["nice", "-n", "10", ".venv/bin/python", "scripts/claims.py", "run", "--claim", claim.name,
             "--arms", arm.name, "--objects", obj, "--seeds", str(seed)]
    if steps is not None:
        parts += ["--steps", str(steps)]
    return shlex.join(parts)


def build_config(claim: Claim, arm: Arm, obj: str, seed: int, steps: int | None) -> Any:
    from backend import presets
    from backend.config import apply_overrides

    cfg = apply_overrides(presets.get(arm.preset), [*arm_sets(claim, arm, obj, seed), *RUN_SETS])
    return cfg if steps is None else cfg.with_total_steps(steps)


def generate(claim: Claim, arm: Arm, obj: str, seed: int, steps: int | None, out: Path) -> dict:
    """Run (or resume) one job; returns its result.json. A finished run is not run again."""
    from backend.engine.loop import run_job

    d = run_dir(out, claim.name, arm.name, obj, seed, steps)
    result_path = d / "result.json"
    if result_path.exists() and (d / "asset.ply").exists():
        return json.loads(result_path.read_text())
    cfg = build_config(claim, arm, obj, seed, steps)
    t0 = time.time()
    result = run_job(cfg, d, resume=True)
    result["claims_seconds"] = round(time.time() - t0, 1)
    result_path.write_text(json.dumps(result, indent=1, default=str))
    (d / "curve.json").write_text(json.dumps(_curve(d)))
    return result


def _curve(d: Path) -> list:
    """[step, loss] pairs from the run's event log, when the engine wrote one (empty otherwise)."""
    events = d / "events.jsonl"
    if not events.exists():
        return []
    out = []
    for line in events.read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "progress" and "loss" in e:
            out.append([e.get("step"), e["loss"]])
    return out


def evaluate_run(claim: Claim, arm: Arm, obj: str, seed: int, steps: int | None, out: Path) -> dict:
    from backend.cli import asset_render_fn
    from backend.priors.reference.evaluate import evaluate

    d = run_dir(out, claim.name, arm.name, obj, seed, steps)
    result = json.loads((d / "result.json").read_text())
    m = evaluate(asset_render_fn(d / "asset.ply"), f"a {obj}", detail=True)
    row = {"claim": claim.name, "arm": arm.name, "object": obj, "seed": seed, "preset": arm.preset,
           "steps": result.get("steps", steps), "sets": [*TESTBED_SETS, *claim.sets, *arm.sets],
           "seconds": result.get("claims_seconds"), "count": result.get("count"),
           **{k: m[k] for k in ROW_METRICS if k in m},
           "run_dir": str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d),
           "command": row_command(claim, arm, obj, seed, steps),
           "generate_command": generate_command(claim, arm, obj, seed, steps, out)}
    return row


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def todo_list(claim: Claim, arms: list[str], objects: list[str], seeds: list[int]) -> list[tuple[Arm, str, int]]:
    by_name = {a.name: a for a in claim.arms}
    return [(by_name[a], obj, seed) for obj in objects for seed in seeds for a in arms]


def cmd_run(args: argparse.Namespace) -> int:
    claim = CLAIMS[args.claim]
    rows = load_rows(args.json)
    todo = todo_list(claim, args.arms or [a.name for a in claim.arms], args.objects or list(claim.objects),
                     args.seeds if args.seeds is not None else list(claim.seeds))
    for index, (arm, obj, seed) in enumerate(todo):
        if index % args.shards != args.shard:
            continue
        done = any(r["claim"] == claim.name and r["arm"] == arm.name and r["object"] == obj and r["seed"] == seed
                   and r.get("budget") == _budget(args.steps) for r in rows)
        if done:
            continue
        print(f"[{claim.name}] {arm.name} a {obj} seed {seed}", file=sys.stderr, flush=True)
        generate(claim, arm, obj, seed, args.steps, args.out)
        if args.generate_only:
            continue
        row = {**evaluate_run(claim, arm, obj, seed, args.steps, args.out), "budget": _budget(args.steps)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


def _budget(steps: int | None) -> str:
    return "full" if steps is None else f"{steps} steps"


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
    raise NotImplementedError(args.cmd)


if __name__ == "__main__":
    raise SystemExit(main())
