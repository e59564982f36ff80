"""The JobManager: the supervisor's side of the job system (runs on the server's asyncio loop).

It owns the job store, the one worker process and the queue:
- `submit` validates a request into a JobConfig and records a queued job; the dispatcher hands the oldest
  queued job to the worker when it is idle, so jobs run in submission order.
- Worker messages (JSON lines, backend/jobs/worker.py) become events in the store; long-polling readers are
  woken at once.
- `cancel` is acknowledged by the loop at its next step; a step that does not return within
  CANCEL_KILL_S of the cancel gets the worker terminated (then killed) and restarted.
- A worker that dies while running a job is restarted; the job is retried from its checkpoint once, and
  quarantined (failed with WORKER_CRASHED) when it kills the worker a second time; the queue continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from backend.engine.memory import FRACTION_ENV
from backend.jobs.artifacts import list_artifacts, valid_job_id
from backend.jobs.requests import build_config
from backend.jobs.store import ACTIVE_STATES, JobStore, new_job_id
from backend.protocol import ERROR_CODES, EVENT_TYPES, TERMINAL_STATES, error_event, warning_event

log = logging.getLogger("distillery.jobs")

CANCEL_KILL_S = 10.0  # a cancelled step that has not returned by then gets the worker killed
TERM_GRACE_S = 2.0  # SIGTERM, then SIGKILL after this
MAX_CRASHES = 2  # a job that kills the worker this many times is failed (quarantined)
STALL_WARN_S = 120.0  # no event from a running job for this long: a "STALLED" warning
MAX_WORKER_LINE = 4 << 20
SHUTDOWN_WAIT_S = 15.0


LOW_MEMORY_FRACTION = 0.03  # available memory below this share of the total counts as exhausted


def _memory_nearly_exhausted() -> bool:
    import psutil

    vm = psutil.virtual_memory()
    return vm.available < LOW_MEMORY_FRACTION * vm.total


class JobNotFound(KeyError):
    pass


class JobConflict(Exception):
    pass


class JobManager:
    def __init__(self, data_dir: Path, worker_command: list[str] | None = None,
                 memory_fraction: float | None = None) -> None:
        from backend.engine.memory import memory_fraction as resolve_fraction

        self.memory_fraction = resolve_fraction(memory_fraction)
        self.data_dir = Path(data_dir)
        self.jobs_root = self.data_dir / "jobs"
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.data_dir / "jobs.sqlite3")
        self.worker_command = worker_command or [sys.executable, "-m", "backend.jobs.worker",
                                                 "--lock", str(self.data_dir / "worker.lock")]
        self.worker_info: dict[str, Any] | None = None
        self.worker_restarts = 0
        self.started_at = time.time()
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = False
        self._current: str | None = None
        self._cancel_deadline: float | None = None
        self._killed_for_cancel: str | None = None
        self._last_event_at = 0.0
        self._stall_warned = False
        self._start_failures = 0
        self._stopping = False
        self._waiters: dict[str, asyncio.Event] = {}
        self._low_memory_seen = False  # the machine was nearly out of memory while the worker ran a job
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._wake = asyncio.Event()
        requeued = self.store.recover()
        if requeued:
            log.info("requeued %d job(s) left running by the previous server", len(requeued))
        self._tasks = [asyncio.create_task(self._dispatcher(), name="dispatcher"),
                       asyncio.create_task(self._watchdog(), name="watchdog")]
        await self._spawn_worker()

    async def stop(self) -> None:
        """Stop taking jobs, stop the worker (the running job stays queued and resumes from its checkpoint at
        the next start), and close the store."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._send({"op": "shutdown"})
            if proc.stdin is not None:
                proc.stdin.close()  # EOF as well: a worker stops on either
            try:
                await asyncio.wait_for(proc.wait(), SHUTDOWN_WAIT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await asyncio.sleep(0)  # let the reader task record the worker's last messages
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._current is not None:
            self._requeue(self._current, "the server stopped; the job resumes from its last checkpoint")
            self._current = None
        for ev in self._waiters.values():
            ev.set()
        self.store.close()

    # ------------------------------------------------------------------------------------------ public API

    def submit(self, request: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Validate a job request and queue it; returns (job, created). A request naming the id of an existing
        job returns that job (a retried submit never runs twice). Raises ConfigError / UnknownPromptError."""
        from backend.config import to_dict

        request = dict(request)
        job_id, existing = self._claim_id(request.pop("job_id", None))
        if existing is not None:
            return existing, False
        cfg = build_config(request)
        self._check_resources(cfg)
        job, created = self.store.create(job_id, to_dict(cfg))
        self._notify(job_id)
        self._kick()
        return self.describe(job), created

    def _claim_id(self, job_id: str | None) -> tuple[str, dict[str, Any] | None]:
        """The id a submit uses (a new one when none is given) and the job that already has it, if any: a
        retried submit returns that job instead of running twice."""
        from backend.core.settings import ConfigError

        if job_id is None:
            return new_job_id(), None
        if not valid_job_id(job_id):
            raise ConfigError("job_id", "not a job id", "32 lower-case hexadecimal digits, or leave it out")
        existing = self.store.get(job_id)
        return job_id, (self.describe(existing) if existing is not None else None)

    def _check_resources(self, cfg: Any) -> None:
        """Refuse, before queuing, a job this machine cannot run: device=cuda without CUDA in the worker, or
        an estimated peak memory over the budget (MemoryBudgetError, a ConfigError naming what to lower)."""
        from backend.core.settings import ConfigError
        from backend.engine.memory import check_budget

        devices = (self.worker_info or {}).get("devices") or {}
        has_cuda = bool(devices.get("cuda"))
        if cfg.device == "cuda" and self.worker_info is not None and not has_cuda:
            raise ConfigError("device", "cuda was requested but the server has no CUDA device", "auto, cpu")
        device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and has_cuda) else "cpu"
        check_budget(cfg, self.memory_fraction, device=device)

    def submit_mesh(self, ply: bytes, settings: dict[str, Any], job_id: str | None = None
                    ) -> tuple[dict[str, Any], bool]:
        """Queue the conversion of an uploaded 3DGS PLY into a textured mesh (engine/convert.py); returns (job,
        created). Bad settings raise ConfigError, a file that is not a 3DGS PLY raises PLYError; either way
        nothing is queued."""
        from backend.engine.convert import SOURCE_NAME, mesh_job_config, mesh_settings
        from backend.io.ply import PLYError, read_gaussian_ply

        job_id, existing = self._claim_id(job_id)
        if existing is not None:
            return existing, False
        cfg = mesh_settings(settings)
        folder = self.jobs_root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{SOURCE_NAME}.tmp"
        tmp.write_bytes(ply)
        try:
            read_gaussian_ply(tmp)  # refuse anything that is not a 3DGS PLY before it is queued
        except PLYError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except Exception as exc:  # whatever a malformed file trips over, the client hears one line
            shutil.rmtree(folder, ignore_errors=True)
            raise PLYError(f"not a readable PLY ({type(exc).__name__})") from None
        tmp.replace(folder / SOURCE_NAME)
        job, created = self.store.create(job_id, mesh_job_config(cfg))
        self._notify(job_id)
        self._kick()
        return self.describe(job), created

    def get(self, job_id: str, with_config: bool = False) -> dict[str, Any]:
        job = self.store.get(job_id) if valid_job_id(job_id) else None
        if job is None:
            raise JobNotFound(job_id)
        out = self.describe(job)
        if with_config:
            out["config"] = self.store.config(job_id)
        return out

    def list(self) -> list[dict[str, Any]]:
        queue = self.store.queue()
        return [self.describe(j, queue) for j in self.store.list()]

    def describe(self, job: dict[str, Any], queue: list[str] | None = None) -> dict[str, Any]:
        queue = self.store.queue() if queue is None else queue
        out = dict(job)
        out["queue_position"] = queue.index(job["id"]) if job["id"] in queue else None
        out["last_seq"] = self.store.last_seq(job["id"])
        out["artifacts"] = list_artifacts(self.jobs_root, job["id"])
        return out

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        state = job["state"]
        if state == "queued":
            self.store.set_state(job_id, "cancelled", "cancelled before it started", step=0)
        elif state in ("running", "resumed"):
            self.store.set_state(job_id, "cancelling", "cancelling: the job stops at the end of its current step")
            if self._current == job_id:
                self._send({"op": "cancel", "job_id": job_id})
                self._cancel_deadline = time.monotonic() + CANCEL_KILL_S
        self._notify(job_id)
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        if job["state"] in ACTIVE_STATES or self._current == job_id:
            raise JobConflict(job_id)
        self.store.delete(job_id)
        shutil.rmtree(self.jobs_root / job_id, ignore_errors=True)
        self._notify(job_id)

    async def events(self, job_id: str, after: int, wait: float, limit: int = 1000) -> list[dict[str, Any]]:
        """Events after `after`; waits up to `wait` seconds for the first one unless the job has ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        self.get(job_id)  # 404 for an unknown job
        while True:
            events = self.store.events(job_id, after, limit)
            if events or wait <= 0 or self._stopping:
                return events
            job = self.store.get(job_id)
            if job is None or job["state"] in TERMINAL_STATES:
                return events
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            waiter = self._waiters.setdefault(job_id, asyncio.Event())
            try:
                await asyncio.wait_for(waiter.wait(), remaining)
            except TimeoutError:
                return []

    def health(self) -> dict[str, Any]:
        info = self.worker_info or {}
        return {
            "worker": "ready" if self._ready else ("stopping" if self._stopping else "starting"),
            "worker_restarts": self.worker_restarts,
            "devices": info.get("devices"),
            "renderers": info.get("renderers"),
            "queue_length": len(self.store.queue()),
            "busy": self._current is not None,  # no job id: health needs no token
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    # ------------------------------------------------------------------------------------------ internals

    def _notify(self, job_id: str) -> None:
        waiter = self._waiters.pop(job_id, None)
        if waiter is not None:
            waiter.set()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):  # exit seen by the reader
            proc.stdin.write((json.dumps(message, allow_nan=False) + "\n").encode())

    async def _spawn_worker(self) -> None:
        if self._stopping:
            return
        self._ready = False
        self._tasks = [t for t in self._tasks if not t.done()]  # a server runs for days: drop finished tasks
        env = {**os.environ, FRACTION_ENV: str(self.memory_fraction)}
        self._proc = await asyncio.create_subprocess_exec(
            *self.worker_command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=MAX_WORKER_LINE, start_new_session=True, env=env)  # terminal signals: the supervisor's alone
        log.info("worker started (pid %d)", self._proc.pid)
        self._tasks.append(asyncio.create_task(self._read_worker(self._proc), name="worker-reader"))

    async def _read_worker(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.error("worker sent an oversize message; restarting it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                break
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                log.error("worker sent a malformed message")
                continue
            if isinstance(msg, dict):
                try:
                    self._handle(msg)
                except Exception:  # a bad message must never stop the reader
                    log.exception("could not handle a worker message")
        code = await proc.wait()
        if proc is self._proc:
            await self._on_worker_exit(code)

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("kind")
        if kind == "ready":
            self._ready = True
            self._start_failures = 0
            self.worker_info = {"devices": msg.get("devices"), "renderers": msg.get("renderers"),
                                "pid": msg.get("pid")}
            self._kick()
        elif kind == "event":
            self._on_event(msg.get("job_id"), msg.get("event"))
        elif kind == "finished":
            self._on_finished(msg)
        elif kind == "restart":
            log.warning("worker restarts: %s", msg.get("reason"))

    def _on_event(self, job_id: Any, event: Any) -> None:
        if job_id != self._current or not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
            return
        self._last_event_at = time.monotonic()
        self._stall_warned = False
        kind = event["type"]
        job = self.store.get(job_id)
        if job is None:
            return
        if kind == "status" and event.get("state") in ("running", "resumed") and job["state"] != "cancelling":
            extra = {k: v for k, v in event.items() if k not in ("type", "job_id", "time", "seq", "state", "message")}
            self.store.set_state(job_id, event["state"], str(event.get("message", "")), **extra)
        else:
            if kind == "progress" and isinstance(event.get("global_step"), int):
                self.store.set_step(job_id, event["global_step"])
            if kind == "result":
                self.store.set_result(job_id, {k: event.get(k) for k in ("artifacts", "metrics", "kind", "count",
                                                                         "faces", "seconds")})
            self.store.append(job_id, event)
        self._notify(job_id)

    def _on_finished(self, msg: dict[str, Any]) -> None:
        job_id = msg.get("job_id")
        if job_id != self._current:
            return
        self._current = None
        self._cancel_deadline = None
        job = self.store.get(job_id)
        outcome = msg.get("outcome")
        if job is not None:
            if outcome == "succeeded":
                self.store.set_state(job_id, "succeeded", "finished", step=msg.get("step"))
            elif outcome == "cancelled":
                if job["state"] != "cancelling" and self._stopping:
                    self._requeue(job_id, "the server stopped; the job resumes from its last checkpoint")
                else:
                    step = msg.get("step")
                    self.store.set_state(job_id, "cancelled", f"cancelled after step {step}", step=step)
            else:
                error = msg.get("error") if isinstance(msg.get("error"), dict) else {}
                code = str(error.get("code", "INTERNAL"))
                error = {"code": code if code in ERROR_CODES else "INTERNAL",
                         "message": str(error.get("message", "failed")),
                         "hint": str(error.get("hint", "")),
                         **{k: error[k] for k in ("free", "total", "field") if k in error}}
                self._fail(job_id, error)
        self._notify(job_id)
        self._kick()

    def _fail(self, job_id: str, error: dict[str, Any], crashed: bool = False) -> None:
        self.store.append(job_id, error_event(job_id=job_id, **error))
        self.store.set_state(job_id, "failed", error["message"], error=error, code=error["code"], crashed=crashed)

    def _requeue(self, job_id: str, message: str, crashed: bool = False) -> None:
        self.store.set_state(job_id, "queued", message, crashed=crashed)

    async def _on_worker_exit(self, code: int) -> None:
        was_ready, self._ready = self._ready, False
        self._proc = None
        job_id, self._current = self._current, None
        self._cancel_deadline = None
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        if job_id is not None and self.store.get(job_id) is not None:
            job = self.store.get(job_id)
            assert job is not None
            if self._killed_for_cancel == job_id:
                self.store.set_state(job_id, "cancelled", f"cancelled: the step did not return within "
                                     f"{CANCEL_KILL_S:g} s, so the worker was stopped and restarted",
                                     step=job["step"])
            elif job["state"] == "cancelling":  # it was going to stop anyway: not a crash to retry
                self.store.set_state(job_id, "cancelled", f"cancelled (the worker process ended, {how})",
                                     step=job["step"])
            elif self._stopping:
                self._requeue(job_id, "the server stopped; the job resumes from its last checkpoint")
            elif code == -9 and (self._low_memory_seen or _memory_nearly_exhausted()):
                # Killed while the machine was out of memory (the kernel's OOM killer): running it again with
                # the same settings would only do the same, so it fails at once with what to lower.
                from backend.jobs.worker import oom_hint

                log.error("worker killed (%s) running job %s while memory was exhausted; job failed", how, job_id)
                self._fail(job_id, {"code": "OUT_OF_MEMORY",
                                    "message": "the worker was killed while the machine was out of memory",
                                    "hint": oom_hint(self.store.config(job_id), host=True)}, crashed=True)
            elif job["crashes"] + 1 >= MAX_CRASHES:
                log.error("worker died (%s) running job %s for the %s time; job failed", how, job_id,
                          "second" if MAX_CRASHES == 2 else f"{MAX_CRASHES}th")
                self._fail(job_id, {"code": "WORKER_CRASHED",
                                    "message": f"the worker process died ({how}) while running this job, "
                                               f"{job['crashes'] + 1} times; the job was stopped so the queue "
                                               "can continue",
                                    "hint": "see the server log; if memory ran out, lower camera.resolution, "
                                            "camera.views or representation.max_count"}, crashed=True)
            else:
                log.error("worker died (%s) running job %s; retrying from its last checkpoint", how, job_id)
                self._requeue(job_id, f"the worker process died ({how}); the job is retried from its last "
                                      "checkpoint", crashed=True)
            self._notify(job_id)
        self._killed_for_cancel = None
        self._low_memory_seen = False
        if self._stopping:
            return
        self.worker_restarts += 1
        if not was_ready and code != 0:
            self._start_failures += 1  # it could not even start: back off instead of spinning
        delay = min(30.0, 0.5 * 2 ** max(0, self._start_failures - 1)) if self._start_failures else 0.0
        if delay:
            log.error("worker exited (%s) before running a job; restarting in %.1f s", how, delay)
            await asyncio.sleep(delay)
        await self._spawn_worker()

    async def _dispatcher(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping or not self._ready or self._current is not None:
                continue
            job = self.store.claim_next()
            if job is None:
                continue
            job_id = job["id"]
            self._current = job_id
            self._last_event_at = time.monotonic()
            self._stall_warned = False
            self._notify(job_id)
            self._send({"op": "run", "job_id": job_id, "config": self.store.config(job_id),
                        "out_dir": str(self.jobs_root / job_id)})

    async def _watchdog(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            job_id = self._current
            if job_id is None:
                continue
            if not self._low_memory_seen and _memory_nearly_exhausted():
                self._low_memory_seen = True
            if self._cancel_deadline is not None and now > self._cancel_deadline and self._proc is not None:
                self._cancel_deadline = None
                self._killed_for_cancel = job_id
                log.warning("job %s did not stop within %g s of its cancel; stopping the worker", job_id,
                            CANCEL_KILL_S)
                self._tasks.append(asyncio.create_task(self._terminate(self._proc)))
            if not self._stall_warned and now - self._last_event_at > STALL_WARN_S:
                self._stall_warned = True
                self.store.append(job_id, warning_event("STALLED", f"no progress for {STALL_WARN_S:g} s", job_id))
                self._notify(job_id)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), TERM_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
