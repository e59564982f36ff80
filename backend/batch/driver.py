"""run_batch: plan the jobs, skip those already done, run the rest on a runner, keep results.jsonl and
index.html current while jobs finish, one progress bar over all jobs."""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.batch import gallery, job
from backend.batch.plan import JobSpec, parse_seeds, plan_jobs, read_prompts
from backend.batch.results import ResultsTable

RUNNING_SCAN_S = 2.0  # how often the progress bar re-reads which in-flight jobs have started
# results.jsonl and index.html are rewritten whole, at most this often (and at the end): with thousands of jobs a
# rewrite per job would grow quadratically. A row lost with a killed driver is recovered from the job's folder.
SAVE_EVERY_S = 2.0


@dataclass
class BatchOptions:
    """What `distillery batch` takes (see its --help)."""

    prompts_file: Path
    presets: list[str]
    seeds: str = "0"
    out: Path = Path("out/batch")
    overrides: list[str] = field(default_factory=list)
    ray: str | None = None  # None: the embedded runner; "local", "auto" or an address: Ray
    workers: int | None = None  # embedded: processes (default: GPUs for GPU presets, else CPU cores); Ray local: CPUs
    dashboard: bool = True  # the Ray dashboard of a --ray local instance
    quiet: bool = False


@dataclass
class BatchSummary:
    jobs: int
    skipped: int
    ok: int
    failed: int
    interrupted: bool
    results: Path
    gallery: Path
    rows: list[dict[str, Any]]


def make_runner(opts: BatchOptions, plan: list[JobSpec], root: Path, token: str) -> Any:
    if opts.workers is not None and opts.workers < 1:
        from backend.batch.plan import BatchInputError

        raise BatchInputError(f"--workers {opts.workers}: expected 1 or more")
    if opts.ray is None:
        from backend.batch.local import LocalRunner

        gpus: list[int] = []
        if any(s.needs_gpu for s in plan):
            import torch

            gpus = list(range(torch.cuda.device_count()))
        workers = opts.workers or (len(gpus) if gpus else os.cpu_count() or 1)
        return LocalRunner(root, workers, token, gpus=gpus)
    try:
        import ray  # noqa: F401
    except ImportError:
        from backend.batch.plan import BatchInputError

        raise BatchInputError("--ray needs Ray: pip install -e '.[cluster]'") from None
    from backend.batch.ray_runner import RayRunner

    workers = opts.workers or (os.cpu_count() if opts.ray == "local" else None)
    return RayRunner(root, opts.ray, workers, token, dashboard=opts.dashboard)


def run_batch(opts: BatchOptions, runner: Any = None) -> BatchSummary:
    from tqdm import tqdm

    prompts = read_prompts(Path(opts.prompts_file))
    plan = plan_jobs(prompts, opts.presets, parse_seeds(opts.seeds), list(opts.overrides))
    root = Path(opts.out)
    root.mkdir(parents=True, exist_ok=True)
    table = ResultsTable(root)
    todo: list[JobSpec] = []
    skipped = 0
    for spec in plan:
        if table.is_done(spec, root):
            skipped += 1
            continue
        row = job.finished_row(spec, root)  # finished, but the row was lost with a killed driver
        if row is not None:
            table.put(row)
            skipped += 1
            continue
        todo.append(spec)
    token = uuid.uuid4().hex
    runner = runner or make_runner(opts, plan, root, token)
    runner.token = token

    def save() -> None:
        table.write(plan)
        gallery.write_gallery(root, table.ordered(plan))

    save()
    log = (lambda text: None) if opts.quiet else (lambda text: print(text, file=sys.stderr))
    interrupted = False
    counts = {"ok": 0, "failed": 0}
    if todo:
        bar = tqdm(total=len(plan), initial=skipped, unit="job", dynamic_ncols=True, disable=opts.quiet,
                   file=sys.stderr)
        started: set[str] = set()
        last_scan = last_save = 0.0
        dirty = False
        try:
            runner.start()
            log(f"distillery batch: {len(plan)} jobs ({len(prompts)} prompts x {len(opts.presets)} presets x "
                f"seeds), {skipped} already done, {len(todo)} to run on {runner.label} -> {root}")
            for spec in todo:
                runner.submit(spec)
            while runner.pending():
                for spec, row in runner.wait(1.0):
                    started.discard(spec.key)
                    if row.get("status") == job.CANCELLED:
                        continue
                    table.put(row)
                    counts["ok" if row["status"] == "ok" else "failed"] += 1
                    dirty = True
                    bar.update(1)
                    if row["status"] != "ok" and not opts.quiet:
                        bar.write(f"failed: {spec.folder}: {row['error']}", file=sys.stderr)
                if dirty and time.monotonic() - last_save > SAVE_EVERY_S:
                    save()
                    dirty, last_save = False, time.monotonic()
                if time.monotonic() - last_scan > RUNNING_SCAN_S:
                    last_scan = time.monotonic()
                    started = {s.key for s in runner.in_flight()
                               if s.key in started or _started_in_this_run(root, s, token)}
                bar.set_postfix_str(f"done={counts['ok']} failed={counts['failed']} running={len(started)}")
        except KeyboardInterrupt:
            interrupted = True
            bar.write("interrupted: stopping the running jobs at their next step (their checkpoints stay)",
                      file=sys.stderr)
            for _spec, row in runner.cancel():
                if row.get("status") in ("ok", "failed"):
                    table.put(row)
                    counts["ok" if row["status"] == "ok" else "failed"] += 1
        finally:
            runner.close()
            bar.close()
            save()
    rows = table.ordered(plan)
    planned = {s.key for s in plan}
    mine = [r for r in rows if r["key"] in planned]
    summary = BatchSummary(jobs=len(plan), skipped=skipped, ok=sum(r["status"] == "ok" for r in mine),
                           failed=sum(r["status"] != "ok" for r in mine), interrupted=interrupted,
                           results=table.path, gallery=root / gallery.FILENAME, rows=rows)
    return summary


def _started_in_this_run(root: Path, spec: JobSpec, token: str) -> bool:
    info = job.read_json(root / spec.folder / "runner.json")
    return bool(info and info.get("token") == token)
