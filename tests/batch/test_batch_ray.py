"""`distillery batch --ray`: a real local Ray instance of 2 CPUs on the reference prior (recent Ray has no
local_mode). A worker killed mid-job (the task is retried and resumes from its checkpoint), a failing job (its
row says why, the others finish), the rerun skip, and the actor path that keeps the prior loaded between jobs."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray

from backend.batch.driver import BatchOptions, run_batch
from backend.batch.ray_runner import RayRunner
from tests.batch.conftest import PRESET, SETTINGS, kill_after_first_checkpoint, read_rows, write_prompts

ROOT = Path(__file__).resolve().parents[2]


def test_cli_ray_local_worker_killed_mid_job_is_retried_and_resumes(tmp_path, warm_references):
    """`distillery batch --ray local --workers 2` starts its own instance; the Ray worker running the job is
    SIGKILLed after its first checkpoint; Ray retries the task, which resumes from that folder's checkpoint."""
    prompts = write_prompts(tmp_path / "prompts.txt", ["a blue mug"])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "backend", "batch", str(prompts), "--presets", PRESET, "--out", str(out),
           "--ray", "local", "--workers", "2", "--no-dashboard", "--quiet"]
    for s in [*SETTINGS, "stages.0.steps=40"]:
        cmd += ["--set", s]
    killed: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=kill_after_first_checkpoint,
                              args=(out / f"a-blue-mug-{PRESET}-s0", killed, stop), daemon=True)
    killer.start()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        stop.set()
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pid" in killed, "the job finished before a checkpoint was seen"
    row = read_rows(out)["a blue mug"]
    assert row["status"] == "ok" and row["runner"].startswith("ray:")
    assert row["resumed_from"] is not None and row["resumed_from"] >= 5  # resumed, not started over
    assert (out / row["asset"]).is_file() and row["steps"] == 40


@pytest.fixture(scope="module")
def ray_cluster(warm_references):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_failing_job_and_rerun_skip(tmp_path, ray_cluster):
    prompts = write_prompts(tmp_path / "prompts.txt", ["a red duck", "a purple giraffe"])
    opts = BatchOptions(prompts_file=prompts, presets=[PRESET], out=tmp_path / "out", overrides=SETTINGS,
                        ray="local", quiet=True)
    first = run_batch(opts)
    assert (first.ok, first.failed, first.skipped, first.interrupted) == (1, 1, 0, False)
    rows = read_rows(opts.out)
    duck, giraffe = rows["a red duck"], rows["a purple giraffe"]
    assert duck["status"] == "ok" and duck["runner"].startswith("ray:") and duck["mask_iou"] is not None
    assert giraffe["status"] == "failed" and giraffe["error"].startswith("UNKNOWN_PROMPT")
    assert (opts.out / "index.html").is_file()

    second = run_batch(opts)
    assert (second.ok, second.failed, second.skipped) == (1, 1, 1)
    again = read_rows(opts.out)
    assert again["a red duck"] == duck  # done: skipped
    assert again["a purple giraffe"]["finished"] >= giraffe["finished"] and again["a purple giraffe"] != giraffe


def test_ray_actor_keeps_the_prior_loaded_between_jobs(tmp_path, ray_cluster):
    """The GPU path (an actor that runs job after job), here on a CPU: the second job finds the prior its
    actor loaded for the first."""
    prompts = write_prompts(tmp_path / "prompts.txt", ["a blue mug", "a red duck"])
    opts = BatchOptions(prompts_file=prompts, presets=[PRESET], out=tmp_path / "out", overrides=SETTINGS,
                        ray="local", workers=1, quiet=True)
    runner = RayRunner(opts.out, "local", 1, "", actor_resources={"num_cpus": 1}, actor_for_all=True)
    summary = run_batch(opts, runner=runner)
    assert (summary.ok, summary.failed) == (2, 0)
    rows = read_rows(opts.out)
    first, second = rows["a blue mug"], rows["a red duck"]
    assert first["prior_loaded"] is True and second["prior_loaded"] is False
    assert first["runner"] == second["runner"] and first["runner"].startswith("ray:")
