"""The embedded runner: jobs in worker processes on this machine, no Ray needed.

A `ProcessPoolExecutor` of N spawned workers; each keeps its loaded priors between jobs (job.PRIOR_CACHE) and
uses cpu_count / N torch threads, or one GPU each when jobs need one. Workers ignore SIGINT: on Ctrl-C the
driver sets the shared cancel event and every running job stops at its next step (its checkpoints stay for the
rerun); a worker whose driver was killed stops the same way. A worker that dies (killed, out of memory) breaks
the pool: the pool is rebuilt and the jobs that were running are retried, resuming from their checkpoints, up to
`max_retries` times each.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import signal
from collections import Counter, deque
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from backend.batch import job
from backend.batch.plan import JobSpec

CANCEL_GRACE_S = 120.0  # how long Ctrl-C waits for running jobs to reach their next step

_cancel: Any = None
_parent = 0


def _init_worker(cancel_event: Any, threads: int, gpus: list[int], counter: Any) -> None:
    global _cancel, _parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _cancel = cancel_event
    _parent = os.getppid()
    if gpus:  # one GPU per worker, before anything initialises CUDA
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[index % len(gpus)])
    import torch

    torch.set_num_threads(threads)


def _should_stop() -> bool:
    """Ctrl-C in the driver, or the driver is gone (killed): stop at the next step, checkpoints stay."""
    return _cancel.is_set() or os.getppid() != _parent


def _run(spec_json: dict[str, Any], root: str, token: str) -> dict[str, Any]:
    return job.run_one(spec_json, root, "local", token, should_cancel=_should_stop)


class LocalRunner:
    def __init__(self, root: Path, workers: int, token: str, gpus: list[int] | None = None,
                 max_retries: int = 2) -> None:
        self.root, self.workers, self.token = Path(root), workers, token
        self.gpus = gpus or []
        self.max_retries = max_retries
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.label = f"{workers} local worker process{'es' if workers > 1 else ''}" + (
            f" on GPUs {self.gpus}" if self.gpus else f", {self.threads} torch thread{'s' * (self.threads > 1)} each")
        self._ctx = mp.get_context("spawn")
        self._cancel = self._ctx.Event()
        self._counter = self._ctx.Value("i", 0)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._queue: deque[JobSpec] = deque()
        self._futures: dict[cf.Future, JobSpec] = {}
        self._crashes: Counter[str] = Counter()

    def start(self) -> None:
        self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=self._ctx,
                                            initializer=_init_worker,
                                            initargs=(self._cancel, self.threads, self.gpus, self._counter))

    def submit(self, spec: JobSpec) -> None:
        self._queue.append(spec)

    def pending(self) -> int:
        return len(self._queue) + len(self._futures)

    def in_flight(self) -> list[JobSpec]:
        return list(self._futures.values())

    def _fill(self) -> None:
        assert self._pool is not None
        while self._queue and len(self._futures) < self.workers + 1:  # one queued ahead: no idle gap
            spec = self._queue.popleft()
            self._futures[self._pool.submit(_run, spec.to_json(), str(self.root), self.token)] = spec

    def wait(self, timeout: float) -> list[tuple[JobSpec, dict[str, Any]]]:
        """Rows of the jobs that finished within `timeout` seconds (failed rows included)."""
        self._fill()
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out: list[tuple[JobSpec, dict[str, Any]]] = []
        crashed: list[JobSpec] = []
        for fut in done:
            spec = self._futures.pop(fut)
            try:
                out.append((spec, fut.result()))
            except BrokenProcessPool:
                crashed.append(spec)
            except Exception as exc:  # the job function itself never raises; this is the pool's own error
                out.append((spec, job.failed_row(spec, f"INTERNAL: {type(exc).__name__}: {exc}", "local", 0.0)))
        if crashed:
            out += self._recover(crashed)
        return out

    def _recover(self, crashed: list[JobSpec]) -> list[tuple[JobSpec, dict[str, Any]]]:
        """A worker died: every future of the pool is lost. Retry the jobs that were running (their runner.json
        carries this run's token), requeue the others, and start a new pool."""
        crashed += list(self._futures.values())
        self._futures.clear()
        assert self._pool is not None
        self._pool.shutdown(wait=False, cancel_futures=True)
        failed = []
        for spec in reversed(crashed):
            marker = self.root / spec.folder / "runner.json"
            info = job.read_json(marker) or {}
            if info.get("token") == self.token:
                self._crashes[spec.key] += 1
                marker.unlink(missing_ok=True)
            if self._crashes[spec.key] > self.max_retries:
                failed.append((spec, job.failed_row(
                    spec, f"WORKER_CRASHED: its worker process died {self._crashes[spec.key]} times (killed, or out "
                          "of memory); its checkpoints are kept for the next run", "local", 0.0)))
            else:
                self._queue.appendleft(spec)
        self.start()
        return failed

    def cancel(self) -> list[tuple[JobSpec, dict[str, Any]]]:
        """Stop: drop queued jobs, let running ones stop at their next step; rows of jobs that still finished."""
        self._queue.clear()
        self._cancel.set()
        out = []
        done, _ = cf.wait(list(self._futures), timeout=CANCEL_GRACE_S)
        for fut in done:
            with contextlib.suppress(Exception):
                out.append((self._futures[fut], fut.result()))
        self._futures.clear()
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
