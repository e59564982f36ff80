"""The job worker: a child process of the supervisor that runs one job at a time with `run_job`.

A crash or a CUDA fault here never takes the server down: the supervisor sees the process end and restarts
it. Messages are JSON lines, never pickles (docs/RELIABILITY.md §2):

    supervisor -> worker (stdin):  {"op": "run", "job_id", "config", "out_dir"} | {"op": "cancel", "job_id"}
                                   | {"op": "shutdown"}
    worker -> supervisor (the original stdout; anything printed goes to stderr, the server log):
        {"kind": "ready", "pid", "devices", "renderers"}
        {"kind": "event", "job_id", "event"}      every event of the engine loop, non-finite floats as null
        {"kind": "finished", "job_id", "outcome": "succeeded" | "failed" | "cancelled", "step", "error", "result"}
        {"kind": "restart", "reason"}             the worker exits on purpose (3 out-of-memory errors in a row)

The worker exits when its parent disappears (stdin reaches EOF): it stops the job at the next step and, if
a step hangs, exits anyway after EXIT_GRACE_S. CUDA out-of-memory is handled outside the `except` block so
the failing step's tensors are really freed before the next job (docs/RELIABILITY.md §3).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from backend.jobs.store import dumps
from backend.protocol import ERROR_CODES

log = logging.getLogger("distillery.worker")

EXIT_GRACE_S = 10.0  # after the parent is gone, a hung step cannot keep the process (and its VRAM) alive
MAX_CONSECUTIVE_OOM = 3
MAX_MESSAGE_BYTES = 1 << 20  # control messages are small; a longer line is refused
LOCK_TIMEOUT_S = 60.0


class Channel:
    """Writes JSON lines to the supervisor; a closed pipe means the supervisor is gone: exit at once (every
    checkpoint on disk is complete, so nothing is lost that a restart cannot resume)."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = dumps(message) + "\n"
        try:
            with self._lock:
                self._file.write(line)
                self._file.flush()
        except (BrokenPipeError, OSError, ValueError):
            os._exit(0)


def oom_hint(config: dict[str, Any], host: bool = False) -> str:
    """What to lower after an out-of-memory error, with the job's current values."""
    parts = []
    for i, st in enumerate(config.get("stages", [])):
        cam, rep = st.get("camera", {}), st.get("representation", {})
        prefix = f"stages.{i}." if len(config.get("stages", [])) > 1 else ""
        parts.append(f"{prefix}camera.resolution (now {cam.get('resolution')}), {prefix}camera.views (now "
                     f"{cam.get('views')}) or {prefix}representation.max_count (now {rep.get('max_count')} Gaussians)")
    where = "memory" if host else "GPU memory"
    return f"out of {where}: lower " + "; ".join(parts) if parts else "lower the resolution or the views"


_PATH = re.compile(r"(?:(?<![\w.~])~|(?<![\w.])[A-Za-z]:|(?<![\w.:/]))(?:[\\/][^\s'\"`:;,()\[\]{}<>]+)+")


def redact_paths(text: str) -> str:
    """`text` with every absolute file path cut to its last part (`/home/u/data/x.ply` -> `.../x.ply`): job
    errors reach clients, and paths tell them about the machine (docs/RELIABILITY.md §2)."""

    def cut(m: re.Match[str]) -> str:
        last = re.split(r"[\\/]", m.group(0).rstrip("/\\"))[-1]
        return f".../{last}" if last else "..."

    return _PATH.sub(cut, text)


def limit_memory(fraction: float) -> int | None:
    """Run this worker under a memory limit: `fraction` of the memory available now on top of what it holds
    (docs/RELIABILITY.md §4), so a runaway job fails alone with an allocation error."""
    import psutil

    from backend.engine.memory import limit_data_segment

    return limit_data_segment(int(psutil.virtual_memory().available * fraction))


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cancel = threading.Event()
        self.stopping = threading.Event()
        self.current: str | None = None
        self.cancel_requested: set[str] = set()  # a cancel can overtake its job's start
        self.consecutive_oom = 0
        self.baseline_bytes = 0

    # ------------------------------------------------------------------------------------------ input

    def read_commands(self, stream: Any) -> None:
        """Stdin reader thread: cancel takes effect at once; runs are queued for the main thread."""
        while True:
            try:
                line = stream.readline(MAX_MESSAGE_BYTES + 1)
            except (OSError, ValueError):
                line = b""
            if not line:
                break  # EOF: the supervisor is gone
            if len(line) > MAX_MESSAGE_BYTES:
                log.error("ignoring an oversize control message")
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                log.error("ignoring a malformed control message")
                continue
            op = msg.get("op") if isinstance(msg, dict) else None
            if op == "cancel":
                self.cancel_requested.add(str(msg.get("job_id")))
                if msg.get("job_id") == self.current:
                    self.cancel.set()
            elif op == "run":
                self.inbox.put(msg)
            elif op == "shutdown":
                self._stop()
                return
        self._stop()

    def _stop(self) -> None:
        self.stopping.set()
        self.cancel.set()
        self.inbox.put({"op": "stop"})
        timer = threading.Timer(EXIT_GRACE_S, lambda: os._exit(0))
        timer.daemon = True
        timer.start()

    # ------------------------------------------------------------------------------------------ jobs

    def serve(self) -> int:
        from backend.config import RENDERERS
        from backend.core.devices import probe

        info = probe()
        renderers = {rep: [r for r in names if r != "gsplat" or info.gsplat] for rep, names in RENDERERS.items()}
        if info.cuda:
            import torch

            self.baseline_bytes = torch.cuda.memory_allocated()
        self.channel.send({"kind": "ready", "pid": os.getpid(), "devices": info.to_json(), "renderers": renderers})
        while not self.stopping.is_set():
            msg = self.inbox.get()
            if msg.get("op") != "run" or self.stopping.is_set():
                continue
            job_id = str(msg["job_id"])
            self.cancel.clear()
            self.current = job_id
            if job_id in self.cancel_requested:
                self.cancel.set()
            outcome = self.execute(job_id, msg["config"], Path(msg["out_dir"]))
            self.current = None
            self.channel.send({"kind": "finished", "job_id": job_id, **outcome})
            if self._must_restart(outcome):
                self.channel.send({"kind": "restart", "reason": self._restart_reason})
                return 0
        return 0

    _restart_reason = ""

    def _must_restart(self, outcome: dict[str, Any]) -> bool:
        if (outcome.get("error") or {}).get("code") != "CUDA_OOM":
            self.consecutive_oom = 0
            return False
        self.consecutive_oom += 1
        if self.consecutive_oom >= MAX_CONSECUTIVE_OOM:
            self._restart_reason = f"{self.consecutive_oom} out-of-memory errors in a row"
            return True
        import torch

        if torch.cuda.is_available() and torch.cuda.memory_allocated() > self.baseline_bytes + (64 << 20):
            self._restart_reason = "GPU memory stayed above its baseline after an out-of-memory error"
            return True
        return False

    def emit(self, job_id: str, event: dict[str, Any]) -> None:
        self.channel.send({"kind": "event", "job_id": job_id, "event": event})

    def execute(self, job_id: str, config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """Run one job; returns {"outcome", "step", "error", "result"}. Never raises."""
        import torch

        from backend.config import from_dict
        from backend.core.settings import ConfigError
        from backend.engine.convert import is_mesh_job, run_mesh_conversion
        from backend.engine.loop import Cancelled, Diverged, OutputBusy, run_job
        from backend.engine.memory import MemoryBudgetError, is_allocation_failure
        from backend.priors.hub import ModelNotFoundError
        from backend.priors.reference.prompts import UnknownPromptError

        oom = host_oom = False
        try:
            if is_mesh_job(config):  # a Gaussian PLY -> textured mesh conversion (engine/convert.py)
                result = run_mesh_conversion(config, out_dir, emit=lambda e: self.emit(job_id, e), job_id=job_id)
                return _outcome("succeeded", step=0, result={k: result.get(k) for k in ("artifacts", "count",
                                                                                         "seconds", "kind")})
            cfg = from_dict(config)
            # run_job checks the memory budget again: memory may have filled up since the job was queued
            result = run_job(cfg, out_dir, emit=lambda e: self.emit(job_id, e), should_cancel=self.cancel.is_set,
                             job_id=job_id, resume=True)
            keep = ("artifacts", "metrics", "kind", "count", "faces", "seconds", "renderer", "device")
            return _outcome("succeeded", step=cfg.total_steps, result={k: result.get(k) for k in keep})
        except Cancelled as exc:
            return _outcome("cancelled", step=exc.step)
        except Diverged as exc:
            return _failed("DIVERGED", str(exc), "lower the learning rates or the guidance scale")
        except MemoryBudgetError as exc:
            out = _failed("OUT_OF_MEMORY", str(exc), f"lower {exc.allowed}" if exc.allowed else "")
            out["error"]["field"] = exc.field
            return out
        except ConfigError as exc:
            out = _failed("INVALID_CONFIG", str(exc), exc.allowed and f"allowed: {exc.allowed}")
            out["error"]["field"] = exc.field  # the client highlights the setting at fault
            return out
        except ModelNotFoundError as exc:
            return _failed("MODEL_MISSING", str(exc), exc.hint)
        except UnknownPromptError as exc:
            return _failed("UNKNOWN_PROMPT", str(exc), "use a prompt the reference prior knows, or a real prior")
        except OutputBusy as exc:
            return _failed("INTERNAL", str(exc), "another process is writing this job's folder")
        except torch.cuda.OutOfMemoryError:
            oom = True  # handled below, once this frame no longer holds the traceback and its tensors
        except Exception as exc:
            if is_allocation_failure(exc):
                host_oom = True
            else:
                log.error("job %s failed:\n%s", job_id, traceback.format_exc())
                return _failed("INTERNAL", f"internal error ({type(exc).__name__}): {_first_line(exc)}",
                               "see the server log for details")
        if host_oom:
            gc.collect()
            return _failed("OUT_OF_MEMORY", "the job ran out of memory (the worker's memory limit)",
                           oom_hint(config, host=True))
        assert oom
        return self._recover_from_oom(config)

    def _recover_from_oom(self, config: dict[str, Any]) -> dict[str, Any]:
        import torch

        gc.collect()
        free = total = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            with contextlib.suppress(RuntimeError):
                free, total = torch.cuda.mem_get_info()
        message = "CUDA out of memory"
        if free is not None and total is not None:
            message += f" ({free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB after freeing)"
        out = _failed("CUDA_OOM", message, oom_hint(config))
        out["error"].update(free=free, total=total)
        return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _outcome(outcome: str, step: int | None = None, error: dict | None = None, result: dict | None = None
             ) -> dict[str, Any]:
    return {"outcome": outcome, "step": step, "error": error, "result": result}


def _failed(code: str, message: str, hint: str) -> dict[str, Any]:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return _outcome("failed", error={"code": code, "message": redact_paths(message), "hint": redact_paths(hint or "")})


def _lock(path: Path, timeout: float) -> Any:
    """Hold an exclusive lock on `path` for the life of the process: a worker left behind by a killed
    supervisor finishes its last step before a new one touches the same job folders."""
    f = open(path, "a+b")  # noqa: SIM115 - held until the process exits
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"another worker holds {path}") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distillery-worker")
    parser.add_argument("--lock", type=Path, required=True, help="lock file shared by this data dir's workers")
    args = parser.parse_args(argv)
    # The message channel is the original stdout; anything a library prints goes to stderr (the server log).
    channel_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", encoding="utf-8", buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the supervisor
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s worker %(levelname)s %(message)s")
    from backend.engine.memory import memory_fraction

    limit = limit_memory(memory_fraction())
    if limit is not None:
        log.info("memory limit (RLIMIT_DATA): %.2f GiB", limit / 2**30)
    worker = Worker(Channel(channel_fd))
    reader = threading.Thread(target=worker.read_commands, args=(sys.stdin.buffer,), daemon=True, name="commands")
    reader.start()
    _lock(args.lock, LOCK_TIMEOUT_S)
    code = worker.serve()
    os._exit(code)  # do not wait for the reader thread blocked on stdin


if __name__ == "__main__":
    sys.exit(main())
