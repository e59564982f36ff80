"""`distillery`: generate | batch | presets | evaluate | bench | serve | models.

Exit codes: 0 success, 1 the job failed (diverged, internal error), 2 bad input or a fault found before or
outside the job (unknown option, setting, preset or prompt; a job over the memory budget; an output folder that
is not writable or that another run is writing; no CUDA for --device cuda; a storage error; a hostile file for
`evaluate`), 130 interrupted. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backend import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input from the command line; printed without a traceback, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distillery", description="Text to 3D by score distillation.")
    p.add_argument("--version", action="version", version=f"distillery {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate a 3D asset from a prompt")
    g.add_argument("prompt", help='what to generate, e.g. "a blue mug"')
    _job_args(g)
    g.add_argument("--out", type=Path, default=None, help="output folder (default: out/<prompt>-<seed>)")
    g.add_argument("--no-resume", action="store_true", help="start over even if the folder has a checkpoint")
    g.add_argument("--wait", action="store_true", help="if another run is writing --out, wait for it to end "
                   "(default: exit 2 naming it)")
    g.add_argument("--memory-fraction", type=float, default=None, metavar="F",
                   help="refuse a job whose estimated peak memory exceeds this fraction of the memory available "
                        "now (default 0.8, or $DISTILLERY_MEMORY_FRACTION)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    _batch_args(sub)

    pr = sub.add_parser("presets", help="list presets, or every setting of one")
    pr.add_argument("name", nargs="?", help="show every setting of this preset")
    pr.add_argument("--json", action="store_true", help="machine-readable output")

    e = sub.add_parser("evaluate", help="score assets against the reference prior (and their diversity)")
    e.add_argument("asset", type=Path, nargs="+", help="3DGS PLY files, or mesh PLYs with vertex colours "
                   "(asset.ply of a NeRF or DMTet job); several assets of one prompt also get their diversity")
    e.add_argument("--prompt", required=True, help="the prompt it was generated from")
    e.add_argument("--json", action="store_true", help="print the figures as JSON: one asset gives one object "
                   "(psnr, mask_iou, view_accuracy, aligned_view_accuracy, alignment_azimuth, multi_face_rate, "
                   "psnr_128, hf_energy_128, hf_energy_ratio); several give {assets: [...], diversity}")
    e.add_argument("--max-memory", type=float, default=2.0, metavar="GIB",
                   help="memory the evaluation may use on top of the program itself (default 2 GiB): an asset "
                        "that needs more is refused with exit code 2")

    me = sub.add_parser("mesh", help="convert 3D Gaussians (a 3DGS PLY) into a textured mesh (GLB)")
    me.add_argument("asset", type=Path, help="a 3DGS PLY file, e.g. out/demo/asset.ply")
    me.add_argument("--out", type=Path, default=None, help="the GLB to write (default: the asset's name with .glb)")
    me.add_argument("--ply", type=Path, default=None, help="also write the mesh as a PLY with vertex colours")
    me.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a conversion setting: resolution, level, min_opacity, faces, texture_size, views, "
                         "view_resolution (see docs/MESH.md)")
    me.add_argument("--json", action="store_true", help="print the result as JSON")

    b = sub.add_parser("bench", help="time the steps of a preset (medians, per phase)")
    b.add_argument("--prompt", default=None, help="prompt (default: the preset's)")
    _job_args(b)
    b.set_defaults(steps=40)
    b.add_argument("--warmup", type=int, default=5, help="steps left out of the medians")
    b.add_argument("--random-prior", metavar="ARCH", default=None,
                   help="replace every diffusers prior (and particle model) by random weights of ARCH, e.g. "
                        "sd21-base: the full-size architecture's timing without a download")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    _serve_args(sub)

    m = sub.add_parser("models", help="list the diffusion models in the local cache and what each preset needs; "
                                      "`models download NAME` fetches one")
    m.add_argument("action", nargs="?", choices=("list", "download"), default="list")
    m.add_argument("name", nargs="?", help="short name (sd21-base, sd21, if-i-xl) or a Hugging Face model id")
    m.add_argument("--variant", choices=("fp16",), default=None, help="download only the fp16 weights (half size)")
    m.add_argument("--revision", default=None, help="commit or branch to download (default: the pinned commit of a "
                   "known model, else main; DISTILLERY_MODEL_REVISION overrides every pin)")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _serve_args(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the local generation server (HTTP API, docs/API.md)")
    s.add_argument("--port", type=int, default=0, help="port (default 0: a free port, written to "
                   "<data dir>/server.json)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; anything but "
                   "loopback needs --allow-remote)")
    s.add_argument("--data-dir", type=Path, default=None, help="jobs, events and artifacts (default "
                   "~/.local/share/distillery)")
    s.add_argument("--token-file", type=Path, default=None, help="where to write the access token (mode 0600; "
                   "default <data dir>/token)")
    s.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (needs --tls-cert "
                   "and --tls-key)")
    s.add_argument("--tls-cert", type=Path, default=None, help="TLS certificate (PEM) for --allow-remote")
    s.add_argument("--tls-key", type=Path, default=None, help="TLS private key (PEM) for --allow-remote")
    s.add_argument("--access-log", action="store_true", help="log every request (never logs the token)")
    s.add_argument("--memory-fraction", type=float, default=None, metavar="F",
                   help="refuse jobs whose estimated peak memory exceeds this fraction of the memory available "
                        "(default 0.8, or $DISTILLERY_MEMORY_FRACTION); the worker runs under this limit too")
    s.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                   help="close a connection that has not sent a whole request within S seconds (default 10)")


def _batch_args(sub: Any) -> None:
    b = sub.add_parser("batch", help="generate prompts x presets x seeds, on this machine or a Ray cluster "
                                     "(docs/SCALE.md)")
    b.add_argument("prompts", type=Path, metavar="PROMPTS", help="text file, one prompt a line (# comments)")
    b.add_argument("--presets", required=True, help="comma-separated preset names, e.g. gaussian-sds-quick,jsd-quick")
    b.add_argument("--seeds", default="0", help="comma-separated seeds or ranges, e.g. 0,1,2 or 0-3 (default 0)")
    b.add_argument("--out", type=Path, required=True, help="batch folder: a folder per job, results.jsonl, "
                   "index.html (on a cluster: a path every node sees, e.g. an NFS mount)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every job (repeatable)")
    b.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                   help="run on Ray: 'local' starts a local instance of --workers CPUs, 'auto' or an address "
                        "(ray://host:10001, host:6379) joins a cluster; without it: worker processes here")
    b.add_argument("--workers", type=int, default=None, help="worker processes here (default: the CPU cores, or "
                   "the GPUs for GPU presets); with --ray local: the instance's CPUs; with a cluster: GPU actors")
    b.add_argument("--no-dashboard", action="store_true", help="--ray local without the Ray dashboard")
    b.add_argument("--quiet", action="store_true", help="no progress bar")


def _job_args(p: argparse.ArgumentParser) -> None:
    from backend.presets import DEFAULT_PRESET

    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"preset name (default {DEFAULT_PRESET}); see "
                   "`distillery presets`")
    p.add_argument("--steps", type=int, default=None, help="total optimisation steps (stages keep proportions)")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--negative", default=None, help="negative prompt")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="compute device")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set method.guidance_scale=10 (repeatable)")


def _build_config(args: argparse.Namespace, prompt: str | None) -> Any:
    from backend import presets
    from backend.config import apply_overrides

    cfg = presets.get(args.preset)
    sets: dict[str, Any] = {}
    if prompt is not None:
        sets["prompt"] = prompt
    if args.seed is not None:
        sets["seed"] = args.seed
    if args.negative is not None:
        sets["negative_prompt"] = args.negative
    if args.device is not None:
        sets["device"] = args.device
    for item in args.overrides:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. method.guidance_scale=10")
        k, v = item.split("=", 1)
        sets[k.strip()] = v.strip()
    cfg = apply_overrides(cfg, sets)
    if args.steps is not None:
        if not 1 <= args.steps <= 100_000:
            raise UsageError(f"--steps {args.steps} is out of range (allowed: 1 .. 100000)")
        cfg = cfg.with_total_steps(args.steps)
    return cfg


def _check_device(cfg: Any) -> None:
    """`--device cuda` (or device=cuda) without a GPU is refused before anything runs."""
    if cfg.device == "cuda":
        from backend.core.devices import probe

        if not probe().cuda:
            raise UsageError("--device cuda: no CUDA device is available here (allowed: auto, cpu)")


def _check_output_dir(out: Path) -> None:
    """The output folder must be a folder we can create files in; checked before the job runs."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-", delete=True)  # noqa: SIM115
        probe.write(b"ok")
        probe.flush()
        probe.close()
    except OSError as exc:
        raise UsageError(f"--out {str(out)!r} is not writable ({exc.strerror or exc.__class__.__name__})") from None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "asset"


# ---------------------------------------------------------------------------------------------- commands


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.engine.loop import run_job
    from backend.engine.memory import FRACTION_ENV, check_budget, memory_fraction

    cfg = _build_config(args, args.prompt)
    out = args.out or Path("out") / f"{_slug(cfg.prompt)}-{cfg.seed}"
    _check_device(cfg)
    _check_output_dir(out)
    if args.memory_fraction is not None:
        os.environ[FRACTION_ENV] = str(memory_fraction(args.memory_fraction))  # run_job checks it again
    check_budget(cfg)
    print(f"distillery {__version__}: {cfg.prompt!r} with preset {cfg.preset}, {cfg.total_steps} steps, "
          f"seed {cfg.seed} -> {out}")
    bar = None if args.quiet else tqdm(total=cfg.total_steps, unit="step", dynamic_ncols=True)

    def emit(ev: dict[str, Any]) -> None:
        kind = ev["type"]
        if kind == "status":
            _say(bar, f"{ev['state']}: renderer {ev.get('renderer_note', ev.get('renderer'))}, "
                      f"device {ev.get('device')}, prior {ev.get('prior')}")
        elif kind == "progress" and bar is not None:
            bar.n = ev["global_step"]
            losses = " ".join(f"{k}={v:.3g}" for k, v in ev["losses"].items())
            bar.set_postfix_str(f"{ev['stage_name']} n={ev['count']} {losses}", refresh=False)
            bar.refresh()
        elif kind == "warning":
            _say(bar, f"warning: {ev['message']}")

    t0 = time.perf_counter()
    try:
        result = run_job(cfg, out, emit=emit, resume=not args.no_resume, wait_for_lock=args.wait)
    finally:
        if bar is not None:
            bar.close()
    if result.get("kind") == "mesh":
        size = f"a mesh of {result['count']} vertices and {result['faces']} faces"
    else:
        size = f"{result['count']} Gaussians"
    print(f"done in {time.perf_counter() - t0:.1f} s ({size})")
    for role, name in result["artifacts"].items():
        print(f"  {role:16s} {out / name}")
    if result["metrics"]:
        m = result["metrics"]
        print(f"  evaluation       PSNR {m['psnr']:.2f} dB, mask IoU {m['mask_iou']:.3f}, "
              f"view accuracy {m['view_accuracy']:.3f}")
    return EXIT_OK


def _say(bar: Any, text: str) -> None:
    if bar is not None:
        bar.write(text)
    else:
        print(text)


def cmd_batch(args: argparse.Namespace) -> int:
    from backend.batch.driver import BatchOptions, run_batch
    from backend.batch.plan import BatchInputError

    opts = BatchOptions(prompts_file=args.prompts, presets=[p.strip() for p in args.presets.split(",") if p.strip()],
                        seeds=args.seeds, out=args.out, overrides=args.overrides, ray=args.ray,
                        workers=args.workers, dashboard=not args.no_dashboard, quiet=args.quiet)
    try:
        s = run_batch(opts)
    except BatchInputError as exc:
        raise UsageError(str(exc)) from None
    print(f"{s.jobs} jobs: {s.ok} ok, {s.failed} failed ({s.skipped} done before this run); results {s.results}, "
          f"gallery {s.gallery}")
    if s.interrupted:
        print("interrupted; run the same command again to run the rest (finished jobs are skipped, started ones "
              "resume from their checkpoints)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if s.failed else EXIT_OK


def cmd_presets(args: argparse.Namespace) -> int:
    from backend import presets
    from backend.config import settings_of

    if args.name is None:
        rows = [{"name": p.name, "gpu": p.needs_gpu, "steps": presets.get(p.name).total_steps,
                 "summary": p.summary, "source": p.source, "notes": p.notes} for p in presets.PRESETS.values()]
        if args.json:
            print(json.dumps(rows, indent=1))
            return EXIT_OK
        print(f"{'preset':24s} {'gpu':4s} {'steps':>6s}  summary")
        for r in rows:
            print(f"{r['name']:24s} {'yes' if r['gpu'] else 'no':4s} {r['steps']:6d}  {r['summary']}")
        print(f"\ndefault: {presets.DEFAULT_PRESET}. `distillery presets NAME` lists every setting of one.")
        return EXIT_OK
    cfg = presets.get(args.name)
    infos = settings_of(cfg)
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=1))
        return EXIT_OK
    print(f"{args.name}: {presets.PRESETS[args.name].summary}")
    if presets.PRESETS[args.name].notes:
        print(f"note: {presets.PRESETS[args.name].notes}")
    print()
    for i in infos:
        value = json.dumps(i.default) if not isinstance(i.default, str) else i.default
        unit = f" {i.unit}" if i.unit else ""
        print(f"{i.key} = {value}{unit}\n    {i.help} [{i.allowed()}]")
    return EXIT_OK


EVALUATE_FIELDS = ("psnr", "mask_iou", "view_accuracy", "aligned_view_accuracy", "alignment_azimuth",
                   "multi_face_rate", "psnr_128", "hf_energy_128", "hf_energy_ratio")


def asset_render_fn(path: Path) -> Any:
    """A render_fn (backend.priors.reference.evaluate) for an asset file: a 3DGS PLY or a mesh PLY with vertex
    colours. Raises UsageError naming the file when it cannot be read."""
    import torch

    from backend.engine.outputs import chunked
    from backend.io.ply import PLYError, check_evaluable_gaussians, read_gaussian_ply, read_ply
    from backend.renderers.gaussians_torch import TorchGaussianRenderer
    from backend.representations.gaussians import Gaussians

    if not path.is_file():
        raise UsageError(f"asset {str(path)!r} does not exist")
    try:
        elements = read_ply(path)
        mesh = _mesh_from_ply(elements) if "face" in elements else None
        arrays = None if mesh is not None else read_gaussian_ply(path)
        if arrays is not None:
            check_evaluable_gaussians(arrays)
    except PLYError as exc:
        raise UsageError(f"asset {str(path)!r}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"asset {str(path)!r}: cannot be read ({exc.strerror})") from None
    if mesh is not None:
        from backend.engine.outputs import mesh_render_fn

        return chunked(mesh_render_fn(mesh))
    cloud = Gaussians.from_ply_arrays(arrays)
    renderer = TorchGaussianRenderer()

    def render_fn(cams: Any, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = renderer.render(cloud, cams, background)
        return out.rgb, out.alpha
    return chunked(render_fn)  # a few views per call: the memory of a draw is bounded


def cmd_evaluate(args: argparse.Namespace) -> int:
    from backend.engine.memory import is_allocation_failure, memory_cap
    from backend.priors.reference.evaluate import aligned_renders, diversity, evaluate, load_references
    from backend.priors.reference.prompts import parse_prompt

    if not 0.1 <= args.max_memory <= 1024:
        raise UsageError(f"--max-memory {args.max_memory:g} is out of range (allowed: 0.1 .. 1024 GiB)")
    load_references(*parse_prompt(args.prompt))  # the references are the program's, not the asset's, memory
    results, renders = [], []
    try:
        with memory_cap(int(args.max_memory * 2**30)):  # a hostile asset fails here, not the machine
            render_fns = [asset_render_fn(p) for p in args.asset]  # every file checked before any work
            for path, render_fn in zip(args.asset, render_fns, strict=True):
                m = evaluate(render_fn, args.prompt, detail=True)
                results.append({"asset": str(path), **{k: float(m[k]) for k in EVALUATE_FIELDS}})
                if len(args.asset) > 1:
                    renders.append(aligned_renders(render_fn, m["alignment_azimuth"]))
    except (MemoryError, RuntimeError) as exc:
        if not is_allocation_failure(exc):
            raise
        raise UsageError(f"drawing the asset needs more than --max-memory {args.max_memory:g} GiB") from None
    div = diversity(renders) if len(renders) > 1 else None
    if args.json:
        if div is None:
            print(json.dumps({k: v for k, v in results[0].items() if k != "asset"}))
        else:
            print(json.dumps({"prompt": args.prompt, "assets": results, "diversity": div}))
        return EXIT_OK
    for r in results:
        print(f"{r['asset']}: PSNR {r['psnr']:.2f} dB, mask IoU {r['mask_iou']:.3f}, view accuracy "
              f"{r['view_accuracy']:.3f}, aligned {r['aligned_view_accuracy']:.3f} (turned "
              f"{r['alignment_azimuth']:g} deg), multi-face rate {r['multi_face_rate']:.3f}, 128 px PSNR "
              f"{r['psnr_128']:.2f} dB, high-frequency energy x{r['hf_energy_ratio']:.2f} of the object's "
              f"(against the reference prior, {args.prompt!r})")
    if div is not None:
        print(f"diversity of the {len(results)} assets: {div:.4f} (mean pairwise RMS difference of aligned renders)")
    return EXIT_OK


def cmd_mesh(args: argparse.Namespace) -> int:
    import time

    from backend.engine.convert import mesh_settings
    from backend.io.mesh_export import mesh_ply_arrays, write_glb, write_mesh_ply
    from backend.io.ply import PLYError, read_gaussian_ply
    from backend.representations.gaussian_mesh import gaussians_to_mesh
    from backend.representations.gaussians import Gaussians

    values = {}
    for item in args.overrides:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. resolution=96")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    cfg = mesh_settings(values)
    if not args.asset.is_file():
        raise UsageError(f"asset {str(args.asset)!r} does not exist")
    out = args.out or args.asset.with_suffix(".glb")
    if out.suffix.lower() != ".glb":
        raise UsageError(f"--out {str(out)!r}: the mesh is written as glTF binary, name it *.glb")
    try:
        arrays = read_gaussian_ply(args.asset)
    except PLYError as exc:
        raise UsageError(f"asset {str(args.asset)!r}: {exc}") from None
    start = time.perf_counter()
    mesh = gaussians_to_mesh(Gaussians.from_ply_arrays(arrays), cfg)
    if not len(mesh.faces):
        raise UsageError(f"the Gaussians' density never reaches level={cfg.level:g}, so there is no surface "
                         "(lower --set level=... or --set min_opacity=...)")
    write_glb(out, mesh)
    if args.ply is not None:
        write_mesh_ply(args.ply, mesh_ply_arrays(mesh))
    seconds = round(time.perf_counter() - start, 2)
    result = {"glb": str(out), "ply": str(args.ply) if args.ply else None, "gaussians": len(arrays["x"]),
              "vertices": len(mesh.vertices), "faces": len(mesh.faces), "seconds": seconds}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{out}: {result['faces']} faces, {cfg.texture_size}x{cfg.texture_size} texture, from "
              f"{result['gaussians']} Gaussians in {result['seconds']:.1f} s")
    return EXIT_OK


def _mesh_from_ply(elements: dict) -> Any:
    """An ExportMesh from a mesh PLY's elements (vertex colours as uchar or float; grey without)."""
    import numpy as np

    from backend.io.mesh_export import ExportMesh
    from backend.io.ply import PLYError

    v = elements.get("vertex", {})
    if not all(k in v for k in ("x", "y", "z")):
        raise PLYError("the mesh has no x, y, z vertex properties")
    verts = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    faces = next(iter(elements["face"].values()), np.zeros((0, 3), np.int64))
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise PLYError("only triangle meshes can be evaluated")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise PLYError("a face refers to a vertex that does not exist")
    if all(k in v for k in ("red", "green", "blue")):
        cols = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.float32)
        cols = cols / 255.0 if v["red"].dtype == np.uint8 else cols
    else:
        cols = np.full((len(verts), 3), 0.5, np.float32)
    return ExportMesh(verts, faces.astype(np.int64), cols)


def run_bench(cfg: Any, warmup: int) -> dict[str, Any]:
    """Run `cfg` without previews, snapshots, checkpoints or evaluation and time its steps: per-phase medians
    after `warmup` steps (per stage too for multi-stage presets), wall time, and on CUDA the peak memory the
    job allocated. Returns the report `distillery bench --json` prints."""
    import platform

    import torch

    from backend.config import apply_overrides
    from backend.engine.loop import run_job
    from backend.engine.stage import Timings

    cfg = apply_overrides(cfg, {"output.preview_every": 0, "output.snapshot_every": 0,
                                "output.checkpoint_every": 0, "output.turntable_frames": 0,
                                "output.evaluate": False})
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")

    class StepTimings(Timings):
        """Peak GPU memory over the steps: the count restarts after the first step (which allocates the
        optimiser's moments, kept in the count as they stay resident), so loading, and the fp32 build of random
        weights before their cast, are left out."""

        def end_step(self, stage: str = "") -> None:
            super().end_step(stage)
            if cuda and len(self.history) == 1:
                torch.cuda.reset_peak_memory_stats()

    timings = StepTimings(sync=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_job(cfg, Path(tmp), timings=timings, resume=False)
        wall = time.perf_counter() - t0
    med = timings.medians(skip=warmup)
    # Multi-stage presets (NeRF then DMTet, pixel then latent prior) also get one table per stage: the
    # whole-job medians mix steps of very different cost. Warm-up steps are skipped in each stage.
    names = list(dict.fromkeys(timings.stages))
    per_stage = {n: timings.medians(skip=warmup, stage=n) for n in names} if len(names) > 1 else {}
    return {
        "preset": cfg.preset, "prompt": cfg.prompt, "steps": cfg.total_steps, "warmup": warmup,
        "median_ms": {k: round(v * 1000, 2) for k, v in med.items()},
        "steps_per_s": round(1.0 / med["step"], 2) if med.get("step") else None,
        "stages": {n: {"median_ms": {k: round(v * 1000, 2) for k, v in m.items()},
                       "steps_per_s": round(1.0 / m["step"], 2) if m.get("step") else None}
                   for n, m in per_stage.items()},
        "wall_s": round(wall, 1),
        "peak_vram_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "torch": torch.__version__,
    }


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    cfg = _build_config(args, args.prompt)
    _check_device(cfg)
    if args.random_prior:
        cfg = _with_random_prior(cfg, args.random_prior)
    report = run_bench(cfg, args.warmup)
    if args.json:
        print(json.dumps(report, indent=1))
        return EXIT_OK
    print(f"bench {cfg.preset} ({cfg.prompt!r}), {cfg.total_steps} steps, medians after {args.warmup} warm-up "
          f"steps, torch {torch.__version__}, {report['machine']}")
    med = {k: v / 1000 for k, v in report["median_ms"].items()}
    stages = [(f"stage {n}", {k: v / 1000 for k, v in st["median_ms"].items()}) for n, st in report["stages"].items()]
    for title, m in [("all stages" if stages else "", med), *stages]:
        if title:
            print(f"-- {title}")
        _print_phases(m)
    vram = f", peak GPU memory {report['peak_vram_gb']} GB" if report["peak_vram_gb"] is not None else ""
    print(f"{report['steps_per_s']} steps/s over the job (wall {report['wall_s']:.1f} s incl. setup){vram}")
    return EXIT_OK


def _print_phases(med: dict[str, float]) -> None:
    print(f"{'phase':12s} {'ms/step':>9s} {'share':>6s}")
    total = med.get("step", 0.0)
    for k, v in med.items():
        if k != "step":
            print(f"{k:12s} {v * 1000:9.2f} {100 * v / max(total, 1e-12):5.1f}%")
    print(f"{'step':12s} {total * 1000:9.2f}")


def cmd_serve(args: argparse.Namespace) -> int:
    from backend.server.serve import ServeError, serve

    try:
        return serve(host=args.host, port=args.port, data_dir=args.data_dir, token_file=args.token_file,
                     allow_remote=args.allow_remote, tls_cert=args.tls_cert, tls_key=args.tls_key,
                     access_log=args.access_log, memory_fraction=args.memory_fraction,
                     header_timeout_s=args.request_timeout)
    except ServeError as exc:
        raise UsageError(str(exc)) from None


def _with_random_prior(cfg: Any, arch: str) -> Any:
    """`bench --random-prior ARCH`: random weights of ARCH for every diffusers prior and particle model."""
    from backend.config import apply_overrides
    from backend.priors.architectures import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise UsageError(f"--random-prior {arch!r}: unknown architecture (allowed: {', '.join(ARCHITECTURES)})")
    sets: dict[str, Any] = {}
    for i, st in enumerate(cfg.stages):
        if hasattr(st.prior, "model"):
            sets[f"stages.{i}.prior.model"] = f"random:{arch}"
        if getattr(st.method, "particle_model", ""):
            sets[f"stages.{i}.method.particle_model"] = f"random:{arch}"
    if not sets:
        raise UsageError(f"--random-prior: preset {cfg.preset} uses no diffusers prior")
    return apply_overrides(cfg, sets)


def cmd_models(args: argparse.Namespace) -> int:
    from backend import presets
    from backend.priors import hub

    if args.action == "download":
        if not args.name:
            raise UsageError(f"models download NAME: name one of {', '.join(hub.KNOWN_MODELS)} or a model id")
        note = hub.alias_note(args.name)
        if note:
            print(note, file=sys.stderr)
        revision = args.revision or hub.pinned_revision(args.name)
        print(f"downloading {hub.repo_id_of(args.name)} (revision {revision}) into {hub.hf_cache_dir()}; an "
              "interrupted download resumes when run again", file=sys.stderr)
        try:
            path = hub.download(args.name, variant=args.variant, revision=revision)
        except RuntimeError as exc:
            print(f"distillery models: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{hub.short_name(args.name)}: ready in {path}")
        return EXIT_OK
    needs: dict[str, set[str]] = {}
    for model, users in hub.models_needed((n, presets.get(n)) for n in presets.names()).items():
        needs.setdefault(hub.repo_id_of(model), set()).update(users)
    rows = []
    names = list(hub.KNOWN_MODELS) + [m for m in sorted(needs) if hub.known(m) is None]
    for name in names:
        known = hub.known(name)
        model = known.repo_id if known else name
        st = hub.model_status(model, known.kind if known else "stable-diffusion")
        rows.append({**st, "name": hub.short_name(model), "needed_by": sorted(needs.get(model, set())),
                     "summary": known.summary if known else "", "download_gb": known.size_gb if known else None,
                     "licence": known.licence if known else "", "gated": known.gated if known else False})
    # Weights cached under a withdrawn id (an alias) count as that model's, not as another cached model.
    known_repos = {r["repo_id"] for r in rows} | {a for m in hub.KNOWN_MODELS.values() for a in m.aliases}
    others = [r for r in hub.cached_repos() if r not in known_repos]
    if args.json:
        print(json.dumps({"cache": str(hub.hf_cache_dir()), "offline": hub.is_offline(), "models": rows,
                          "other_cached": others}, indent=1))
        return EXIT_OK
    print(f"Hugging Face cache: {hub.hf_cache_dir()}{' (offline)' if hub.is_offline() else ''}")
    for r in rows:
        state = f"cached, {r['size_bytes'] / 1e9:.1f} GB" if r["available"] else "missing"
        size = f"about {r['download_gb']:g} GB" if r["download_gb"] else "size unknown"
        print(f"  {r['name']:10s} {r['repo_id']} @ {r['revision'][:12]}: {state}; {size}; "
              f"licence: {r['licence'] or 'see the model page'}{'; gated' if r['gated'] else ''}")
        print(f"  {'':10s} cache: {r['path'] if r['available'] else r['cache_folder']}")
        print(f"  {'':10s} needed by: {', '.join(r['needed_by']) or 'no preset'}")
        if not r["available"]:
            print(f"  {'':10s} fetch with: distillery models download {r['name']}"
                  + (" (accept the licence on the hub and set HF_TOKEN first)" if r["gated"] else ""))
    if others:
        print("other cached models: " + ", ".join(others))
    return EXIT_OK


COMMANDS = {"generate": cmd_generate, "batch": cmd_batch, "presets": cmd_presets, "evaluate": cmd_evaluate,
            "mesh": cmd_mesh,
            "bench": cmd_bench, "serve": cmd_serve, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # argparse exits with 2 on usage errors
    from backend.core.settings import ConfigError

    try:
        from backend.priors.reference.prompts import UnknownPromptError
    except ImportError:  # pragma: no cover - the reference prior always ships
        UnknownPromptError = ValueError
    from backend.engine.loop import OutputBusy

    try:
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, UnknownPromptError, OutputBusy) as exc:
        print(f"distillery {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a storage fault while the job runs (disk full, folder removed): one line, no traceback
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"distillery {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        from backend.priors.hub import ModelNotFoundError

        if isinstance(exc, ModelNotFoundError):
            print(f"distillery {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from backend.engine.loop import Diverged

        if isinstance(exc, Diverged):
            print(f"distillery {args.command}: failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise
