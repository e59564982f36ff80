"""The JobManager's supervision logic with a scripted stand-in worker that speaks the same JSON-lines protocol
(no torch, so each case runs in a second or two): crash retry and quarantine, a cancel that the worker never
acknowledges, a worker that dies while cancelling, shutdown with a running job, and long-poll wake-ups."""

from __future__ import annotations

import asyncio
import itertools
import sys
import textwrap
import time

import pytest

from backend.jobs import manager as manager_module
from backend.jobs.manager import JobManager

from .conftest import quick_job

pytestmark = pytest.mark.timeout(120)

FAKE_WORKER = textwrap.dedent('''
    import json, os, sys, threading, time

    out = os.fdopen(os.dup(1), "w", buffering=1)
    def send(m):
        out.write(json.dumps(m) + "\\n")

    cancelled = set()  # job ids; a cancel may arrive before its run starts
    runs = []
    def read():
        for line in sys.stdin:
            m = json.loads(line)
            if m["op"] == "run":
                runs.append(m)
            elif m["op"] == "cancel":
                cancelled.add(m["job_id"])
            elif m["op"] == "shutdown":
                cancelled.add("all")
        os._exit(0)
    threading.Thread(target=read, daemon=True).start()
    send({"kind": "ready", "pid": os.getpid(), "devices": {"cuda": False}, "renderers": {"gaussians": ["torch"]}})
    while True:
        while not runs:
            time.sleep(0.01)
        m = runs.pop(0)
        job, seed = m["job_id"], m["config"]["seed"]
        stop = lambda: job in cancelled or "all" in cancelled
        ev = lambda **e: send({"kind": "event", "job_id": job, "event": {"job_id": job, "time": time.time(), **e}})
        ev(type="status", state="running", message="stage main from step 0")
        if seed == 1:
            os._exit(3)  # a crash
        if seed == 5:
            os.kill(os.getpid(), 9)  # killed, as the kernel's out-of-memory killer does
        if seed == 2:
            time.sleep(3600)  # a step that never returns, cancel or not
        step = 0
        while not stop() and (seed >= 3 or step < 3):
            step += 1
            ev(type="progress", global_step=step, losses={"sds": float("nan") if step == 2 else 0.5})
            time.sleep(0.05)
        if stop():
            if seed == 4:
                os._exit(1)  # dies while cancelling
            send({"kind": "finished", "job_id": job, "outcome": "cancelled", "step": step})
            continue
        ev(type="result", artifacts={"asset": "asset.ply"}, metrics={}, count=1, seconds=0.1)
        send({"kind": "finished", "job_id": job, "outcome": "succeeded", "step": step, "result": {}})
''')


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def started(tmp_path) -> JobManager:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    mgr = JobManager(tmp_path / "data", worker_command=[sys.executable, str(script)])
    await mgr.start()
    await until(lambda: mgr.health()["worker"] == "ready")
    return mgr


async def until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def submit(mgr, seed, **extra):
    job, created = mgr.submit(quick_job(seed=seed, **extra))
    assert created
    return job["id"]


def state(mgr, job_id):
    return mgr.get(job_id)["state"]


def test_jobs_run_in_order_and_non_finite_values_never_reach_the_log(tmp_path):
    async def main():
        mgr = await started(tmp_path)
        ids = [submit(mgr, 0) for _ in range(3)]
        await until(lambda: all(state(mgr, i) == "succeeded" for i in ids))
        jobs = [mgr.get(i) for i in ids]
        assert all(a["finished"] <= b["started"] for a, b in itertools.pairwise(jobs))
        events = await mgr.events(ids[0], 0, 0)
        nan_step = next(e for e in events if e["type"] == "progress" and e["global_step"] == 2)
        assert nan_step["losses"]["sds"] is None
        await mgr.stop()

    run(main())


def test_a_crashing_job_is_retried_once_then_quarantined_and_the_queue_continues(tmp_path):
    async def main():
        mgr = await started(tmp_path)
        bad, good = submit(mgr, 1), submit(mgr, 0)
        await until(lambda: state(mgr, good) == "succeeded")
        job = mgr.get(bad)
        assert job["state"] == "failed" and job["crashes"] == 2 and job["error"]["code"] == "WORKER_CRASHED"
        assert "exit code 3" in job["error"]["message"]
        assert mgr.health()["worker_restarts"] == 2
        await mgr.stop()

    run(main())


def test_an_unacknowledged_cancel_kills_the_worker_after_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "CANCEL_KILL_S", 1.0)

    async def main():
        mgr = await started(tmp_path)
        hung, after = submit(mgr, 2), submit(mgr, 0)
        await until(lambda: mgr.health()["busy"] and state(mgr, hung) == "running")
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        mgr.cancel(hung)
        await until(lambda: state(mgr, hung) == "cancelled")
        assert time.monotonic() - t0 >= 1.0
        assert "did not return within 1 s" in (await mgr.events(hung, 0, 0))[-1]["message"]
        await until(lambda: state(mgr, after) == "succeeded")
        assert mgr.get(hung)["crashes"] == 0
        await mgr.stop()

    run(main())


def test_a_worker_that_dies_while_cancelling_leaves_the_job_cancelled_not_retried(tmp_path):
    async def main():
        mgr = await started(tmp_path)
        job = submit(mgr, 4)
        await until(lambda: mgr.get(job)["step"] >= 2)
        mgr.cancel(job)
        await until(lambda: state(mgr, job) == "cancelled")
        assert mgr.get(job)["crashes"] == 0 and mgr.get(job)["attempt"] == 1
        await mgr.stop()

    run(main())


def test_cancel_of_a_queued_job_is_immediate_and_running_jobs_stop_at_a_step(tmp_path):
    async def main():
        mgr = await started(tmp_path)
        running, queued = submit(mgr, 3), submit(mgr, 0)
        await until(lambda: mgr.get(running)["step"] >= 2)
        assert mgr.cancel(queued)["state"] == "cancelled"
        assert mgr.cancel(running)["state"] in ("cancelling", "cancelled")
        await until(lambda: state(mgr, running) == "cancelled")
        last = (await mgr.events(running, 0, 0))[-1]
        assert last["state"] == "cancelled" and last["step"] >= 2
        assert mgr.cancel(running)["state"] == "cancelled"  # idempotent
        await mgr.stop()

    run(main())


def test_shutdown_requeues_the_running_job_and_a_restart_runs_it_again(tmp_path):
    async def main():
        mgr = await started(tmp_path)
        job = submit(mgr, 3)
        await until(lambda: mgr.get(job)["step"] >= 1)
        await mgr.stop()
        mgr2 = await started(tmp_path)  # same data dir
        await until(lambda: mgr2.get(job)["attempt"] == 2)
        assert state(mgr2, job) in ("running", "resumed")
        mgr2.cancel(job)
        await until(lambda: state(mgr2, job) == "cancelled")
        await mgr2.stop()

    run(main())


def test_long_poll_wakes_on_the_next_event_and_returns_empty_after_the_wait(tmp_path):
    async def main():
        mgr = await started(tmp_path)
        job = submit(mgr, 3)
        await until(lambda: mgr.get(job)["step"] >= 1)
        last = mgr.store.last_seq(job)
        t0 = time.monotonic()
        events = await mgr.events(job, last, 10.0)
        assert events and events[0]["seq"] == last + 1 and time.monotonic() - t0 < 5
        mgr.cancel(job)
        await until(lambda: state(mgr, job) == "cancelled")
        t0 = time.monotonic()
        assert await mgr.events(job, mgr.store.last_seq(job), 10.0) == []  # ended: no waiting
        assert time.monotonic() - t0 < 1
        await mgr.stop()

    run(main())


def test_a_job_killed_while_memory_ran_out_fails_at_once_instead_of_being_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "_memory_nearly_exhausted", lambda: True)

    async def main():
        mgr = await started(tmp_path)
        bad, good = submit(mgr, 5), submit(mgr, 0)
        await until(lambda: state(mgr, good) == "succeeded")
        job = mgr.get(bad)
        assert job["state"] == "failed" and job["attempt"] == 1 and job["error"]["code"] == "OUT_OF_MEMORY"
        assert "camera.resolution (now 16)" in job["error"]["hint"]
        assert mgr.health()["busy"] is False
        await mgr.stop()

    run(main())


def test_without_memory_pressure_a_killed_job_is_still_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "_memory_nearly_exhausted", lambda: False)

    async def main():
        mgr = await started(tmp_path)
        bad = submit(mgr, 5)
        await until(lambda: state(mgr, bad) == "failed")
        job = mgr.get(bad)
        assert job["crashes"] == 2 and job["error"]["code"] == "WORKER_CRASHED"
        await mgr.stop()

    run(main())
