"""One batch job, run inside a worker process (the embedded runner's, or a Ray worker on any node).

The job is the normal engine run (`run_job`) into `<root>/<folder>/`, resumed from that folder's own
checkpoints, so a retry after a dead worker carries on where the last checkpoint left it. `job.json` in the folder
names the config it belongs to: a folder of another config (other --set values) starts over instead of
resuming a checkpoint that does not fit. Loaded priors stay in this process between jobs (PRIOR_CACHE), so
weights load once per worker, not once per job.

Each attempt writes `runner.json` (pid, host, the batch run's token) when it starts: the driver counts running
jobs from it, and an operator can see which process holds a job.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.batch.plan import JobSpec, build_config, config_hash

MAX_CACHED_PRIORS = 2  # distinct loaded priors a worker keeps (a real prior is gigabytes)
PRIOR_CACHE: dict[str, Any] = {}

CANCELLED = "cancelled"  # status of an attempt stopped by Ctrl-C: no row is written, a rerun resumes it


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def claim_folder(folder: Path, spec: JobSpec) -> bool:
    """Make `folder` this job's; True when its checkpoints belong to this config (resume), False when it was
    empty or held another config (whose checkpoints and results are removed first)."""
    folder.mkdir(parents=True, exist_ok=True)
    owner = read_json(folder / "job.json")
    if owner is not None and owner.get("config_hash") == spec.config_hash:
        return True
    for stale in ("checkpoints", "result.json"):
        path = folder / stale
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    _write_json(folder / "job.json", spec.to_json())
    return False


def row_from_result(spec: JobSpec, result: dict[str, Any], runner: str, seconds: float,
                    resumed_from: int | None = None, prior_loaded: bool | None = None,
                    cpu_seconds: float | None = None) -> dict[str, Any]:
    """A results.jsonl row of a finished job; paths are relative to the batch root (the gallery's links)."""
    arts = result.get("artifacts", {})
    metrics = result.get("metrics") or {}

    def path(role: str) -> str | None:
        return f"{spec.folder}/{arts[role]}" if role in arts else None

    return {
        "key": spec.key, "prompt": spec.prompt, "preset": spec.preset, "seed": spec.seed, "status": "ok",
        "error": None, "seconds": round(seconds, 2), "runner": runner,
        "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 2),
        "psnr": metrics.get("psnr"), "mask_iou": metrics.get("mask_iou"), "view_accuracy": metrics.get("view_accuracy"),
        "asset": path("asset"), "preview": path("preview"), "turntable": path("turntable"),
        "folder": spec.folder, "steps": result.get("steps"), "kind": result.get("kind"),
        "resumed_from": resumed_from, "prior_loaded": prior_loaded, "config_hash": spec.config_hash,
        "settings": list(spec.overrides), "finished": round(time.time(), 1),
    }


def failed_row(spec: JobSpec, error: str, runner: str, seconds: float) -> dict[str, Any]:
    return {
        "key": spec.key, "prompt": spec.prompt, "preset": spec.preset, "seed": spec.seed, "status": "failed",
        "error": error, "seconds": round(seconds, 2), "runner": runner, "cpu_seconds": None,
        "psnr": None, "mask_iou": None, "view_accuracy": None, "asset": None, "preview": None, "turntable": None,
        "folder": spec.folder, "steps": None, "kind": None, "resumed_from": None, "prior_loaded": None,
        "config_hash": spec.config_hash, "settings": list(spec.overrides), "finished": round(time.time(), 1),
    }


def finished_row(spec: JobSpec, root: Path) -> dict[str, Any] | None:
    """The row of a job whose folder already holds its finished result (written before a crash of the driver
    lost the row), or None."""
    folder = root / spec.folder
    result = read_json(folder / "result.json")
    if result is None or "config" not in result:
        return None
    import hashlib

    if hashlib.sha1(json.dumps(result["config"], sort_keys=True).encode()).hexdigest()[:12] != spec.config_hash:
        return None
    if not (folder / result.get("artifacts", {}).get("asset", "asset.ply")).is_file():
        return None
    runner = (read_json(folder / "runner.json") or {}).get("runner", "local")
    return row_from_result(spec, result, runner, float(result.get("seconds", 0.0)))


def _error_text(exc: BaseException) -> str:
    """`CODE: message`, with the protocol's error codes."""
    from backend.core.settings import ConfigError
    from backend.engine.loop import Diverged
    from backend.priors.hub import ModelNotFoundError
    from backend.priors.reference.prompts import UnknownPromptError

    if isinstance(exc, UnknownPromptError):
        code = "UNKNOWN_PROMPT"
    elif isinstance(exc, ConfigError):
        code = "INVALID_CONFIG"
    elif isinstance(exc, ModelNotFoundError):
        code = "MODEL_MISSING"
    elif isinstance(exc, Diverged):
        code = "DIVERGED"
    elif "out of memory" in str(exc).lower():
        code = "CUDA_OOM"
    else:
        return f"INTERNAL: {type(exc).__name__}: {exc}"
    return f"{code}: {exc}"


def run_one(spec_json: dict[str, Any], root: str, runner: str, token: str,
            should_cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run one job to its end and return its row (status ok or failed); a cancelled attempt returns
    {"status": "cancelled"}. Never raises for a job's own failure: the row says why."""
    from backend.engine.loop import Cancelled, run_job

    spec = JobSpec.from_json(spec_json)
    folder = Path(root) / spec.folder
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        resume = claim_folder(folder, spec)
        _write_json(folder / "runner.json", {"pid": os.getpid(), "host": socket.gethostname(), "runner": runner,
                                             "token": token, "started": round(time.time(), 3)})
        cfg = build_config(spec.prompt, spec.preset, spec.seed, spec.overrides)
        if config_hash(cfg) != spec.config_hash:  # another version of distillery on this node
            raise RuntimeError(f"this worker builds another config for {spec.preset} (hash {config_hash(cfg)}, "
                               f"driver {spec.config_hash}): install the same distillery version on every node")
        first_status: dict[str, Any] = {}

        def emit(ev: dict[str, Any]) -> None:
            if ev["type"] == "status" and not first_status:
                first_status.update(ev)

        loaded_before = len(PRIOR_CACHE)
        cached_keys = set(PRIOR_CACHE)
        result = run_job(cfg, folder, emit=emit, should_cancel=should_cancel, resume=resume,
                         prior_cache=PRIOR_CACHE)
        prior_loaded = len(PRIOR_CACHE) > loaded_before or not cached_keys
        resumed_from = None
        if first_status.get("state") == "resumed":
            resumed_from = int(first_status["message"].rsplit(" ", 1)[-1])
        return row_from_result(spec, result, runner, time.perf_counter() - t0, resumed_from, prior_loaded,
                               time.process_time() - cpu0)
    except Cancelled:
        return {"key": spec.key, "status": CANCELLED}
    except Exception as exc:
        error = _error_text(exc)
        if error.startswith("INTERNAL"):
            traceback.print_exc()  # the worker's log keeps the traceback; the row keeps the one-line reason
        return failed_row(spec, error, runner, time.perf_counter() - t0)
    finally:
        while len(PRIOR_CACHE) > MAX_CACHED_PRIORS:
            PRIOR_CACHE.pop(next(iter(PRIOR_CACHE)))
