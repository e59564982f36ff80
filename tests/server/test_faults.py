"""Fault injection against the real server: worker crashes (quarantine after two), CUDA out-of-memory, a step
that hangs after a cancel, and SIGKILL of the server mid-job followed by a restart that resumes the job."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import FAULTS, ROOT, Server, quick_job, run_to_end, wait_for

pytestmark = pytest.mark.timeout(600)

SEED = {kind: seed for seed, (kind, _) in FAULTS.items()}


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory, warm_references):
    srv = Server(tmp_path_factory.mktemp("faults") / "data", faults=True).start()
    yield srv
    srv.stop()


def test_worker_crash_is_quarantined_out_of_memory_is_reported_and_the_queue_goes_on(fault_server):
    s = fault_server.session()
    restarts = s.health()["worker_restarts"]
    crasher = s.submit(quick_job(steps=6, seed=SEED["crash"]))
    oom = s.submit(quick_job(steps=6, seed=SEED["oom"]))
    after = s.submit(quick_job(steps=2, seed=40))

    # A job that kills the worker is retried once from its checkpoint, then failed with a clear message.
    events = run_to_end(crasher)
    job = s.job(crasher.job_id)
    assert job["state"] == "failed" and job["crashes"] == 2 and job["attempt"] == 2
    assert job["error"]["code"] == "WORKER_CRASHED" and "signal 9" in job["error"]["message"]
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["WORKER_CRASHED"] and errors[0]["hint"]
    retried = [e for e in events if e["type"] == "status" and e["state"] == "queued" and "died" in e["message"]]
    assert len(retried) == 1  # the first crash retried the job once
    pid = fault_server.worker_pid()

    # CUDA out of memory: the job fails with what to lower; the worker stays.
    events = run_to_end(oom)
    job = s.job(oom.job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "CUDA_OOM"
    hint = job["error"]["hint"]
    assert "camera.resolution (now 16)" in hint and "camera.views (now 1)" in hint and "max_count" in hint
    assert [e["code"] for e in events if e["type"] == "error"] == ["CUDA_OOM"]

    run_to_end(after)
    assert s.job(after.job_id)["state"] == "succeeded"
    assert fault_server.worker_pid() == pid  # one out-of-memory error does not restart the worker
    assert s.health()["worker_restarts"] == restarts + 2 and s.health()["worker"] == "ready"


def test_a_step_that_hangs_after_a_cancel_gets_the_worker_killed_and_restarted(fault_server):
    s = fault_server.session()
    pid = fault_server.worker_pid()
    hung = s.submit(quick_job(steps=6, seed=SEED["hang"]))
    after = s.submit(quick_job(steps=2, seed=42))
    wait_for(lambda: any(e["type"] == "progress" for e in s.handle(hung.job_id).poll_once()), 240,
             what="the first step")
    t0 = time.monotonic()
    hung.cancel()
    events = run_to_end(hung, timeout=60)
    waited = time.monotonic() - t0
    assert events[-1]["state"] == "cancelled" and "did not return within 10 s" in events[-1]["message"]
    assert waited >= 9.5, waited  # it was given its 10 s
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    run_to_end(after)
    assert s.job(after.job_id)["state"] == "succeeded"
    assert s.job(hung.job_id)["crashes"] == 0  # a kill for a cancel is not a crash


def test_sigkill_of_the_server_mid_job_resumes_the_job_from_its_checkpoint(fault_server):
    s = fault_server.session()
    finished = s.submit(quick_job(steps=2, seed=43))
    run_to_end(finished)
    folder = fault_server.data_dir / "jobs"
    kept = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / finished.job_id).iterdir()
            if p.is_file()}
    assert "asset.ply" in kept

    job = s.submit(quick_job(steps=12, seed=44))
    queued = s.submit(quick_job(steps=2, seed=45))
    ckpts = folder / job.job_id / "checkpoints"
    wait_for(lambda: ckpts.is_dir() and any((p / "_SUCCESS").exists() for p in ckpts.iterdir()), 240,
             what="a checkpoint")
    old_worker = fault_server.worker_pid()
    old_token = fault_server.token
    fault_server.kill9()
    # The orphaned worker notices that its parent is gone and exits by itself.
    wait_for(lambda: not psutil.pid_exists(old_worker) or psutil.Process(old_worker).status() == "zombie", 30,
             what="the orphaned worker to exit")

    fault_server.start()
    assert fault_server.token != old_token  # a new token at every start
    s2 = fault_server.session()
    events = run_to_end(s2.handle(job.job_id, last_seq=0), timeout=300)
    record = s2.job(job.job_id)
    assert record["state"] == "succeeded" and record["resumed"] and record["attempt"] == 2, record
    states = [e["state"] for e in events if e["type"] == "status"]
    assert "resumed" in states and states.index("resumed") > states.index("queued", 1)
    resumed = next(e for e in events if e["type"] == "status" and e["state"] == "resumed")
    assert "from step" in resumed["message"] and "from step 0" not in resumed["message"]
    run_to_end(s2.handle(queued.job_id))
    assert s2.job(queued.job_id)["state"] == "succeeded"
    # Nothing the finished job had was lost or changed.
    assert {n: hashlib.sha256((folder / finished.job_id / n).read_bytes()).hexdigest() for n in kept} == kept
    assert s2.job(finished.job_id)["state"] == "succeeded"


def test_sigterm_stops_the_server_quickly_and_the_job_resumes_at_the_next_start(fault_server):
    s = fault_server.session()
    job = s.submit(quick_job(steps=40, seed=46))
    queued = s.submit(quick_job(steps=2, seed=47))
    ckpts = fault_server.data_dir / "jobs" / job.job_id / "checkpoints"
    wait_for(lambda: ckpts.is_dir() and any((p / "_SUCCESS").exists() for p in ckpts.iterdir()), 240,
             what="a checkpoint")
    worker = fault_server.worker_pid()
    t0 = time.monotonic()
    fault_server.stop()  # SIGTERM
    assert time.monotonic() - t0 < 30 and fault_server.proc.returncode == 0
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie"
    fault_server.start()
    s2 = fault_server.session()
    assert s2.job(job.job_id)["state"] in ("queued", "running", "resumed")
    events = run_to_end(s2.handle(job.job_id), timeout=400)
    record = s2.job(job.job_id)
    assert record["state"] == "succeeded" and record["resumed"] and record["attempt"] == 2, record
    assert any(e["type"] == "status" and e["state"] == "resumed" for e in events)
    run_to_end(s2.handle(queued.job_id))
    assert s2.job(queued.job_id)["state"] == "succeeded"


def test_a_second_server_on_the_same_data_dir_is_refused(fault_server):
    run = subprocess.run([sys.executable, "-m", "backend", "serve", "--data-dir", str(fault_server.data_dir)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "another server" in run.stderr
