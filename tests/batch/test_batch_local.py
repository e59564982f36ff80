"""`distillery batch` with the embedded runner (worker processes, no Ray): results.jsonl, the rerun skip, the
gallery in a real headless browser, Ctrl-C."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.batch.plan import BatchInputError, parse_seeds, plan_jobs, read_prompts
from tests.batch.conftest import PRESET, SETTINGS, kill_after_first_checkpoint, read_rows, write_prompts

ROOT = Path(__file__).resolve().parents[2]


def batch_cmd(prompts: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "backend", "batch", str(prompts), "--presets", PRESET, "--seeds", "0",
           "--out", str(out), "--quiet"]
    for s in SETTINGS:
        cmd += ["--set", s]
    return cmd + list(extra)  # after SETTINGS: a later --set of the same key wins


def run_cli(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory, warm_references):
    """One batch on 2 local workers: a known prompt and one the reference prior does not know."""
    tmp = tmp_path_factory.mktemp("batch-local")
    prompts = write_prompts(tmp / "prompts.txt", ["a blue mug", "a purple giraffe"])
    out = tmp / "out"
    first = run_cli(batch_cmd(prompts, out, "--workers", "2"))
    return prompts, out, first


def test_plan_input_errors(tmp_path):
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(BatchInputError, match="--seeds"):
        parse_seeds("a,b")
    with pytest.raises(BatchInputError, match="no prompts"):
        read_prompts(write_prompts(tmp_path / "p.txt", ["# only a comment"]))
    from backend.core.settings import ConfigError

    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        plan_jobs(["a blue mug"], ["nope"], [0], [])
    with pytest.raises(ConfigError, match=r"method\.guidance_scale"):
        plan_jobs(["a blue mug"], [PRESET], [0], ["method.guidance_scale=-3"])
    jobs = plan_jobs(["a blue mug", "a red duck"], [PRESET, "jsd-quick"], [0, 1], [])
    assert len(jobs) == 8 and len({j.folder for j in jobs}) == 8
    assert jobs[0].folder == f"a-blue-mug-{PRESET}-s0"


def test_bad_setting_is_a_usage_error(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.txt", ["a blue mug"])
    r = run_cli([sys.executable, "-m", "backend", "batch", str(prompts), "--presets", PRESET, "--out",
                 str(tmp_path / "out"), "--set", "output.turntable_frames=-1"])
    assert r.returncode == 2, r.stderr
    assert "output.turntable_frames" in r.stderr and "Traceback" not in r.stderr


def test_local_batch_rows_and_failure(local_batch):
    _, out, first = local_batch
    assert first.returncode == 1, first.stderr  # one job failed
    assert "2 jobs: 1 ok, 1 failed (0 done before this run)" in first.stdout
    rows = read_rows(out)
    mug, giraffe = rows["a blue mug"], rows["a purple giraffe"]
    assert mug["status"] == "ok" and mug["error"] is None and mug["runner"] == "local"
    assert mug["seed"] == 0 and mug["preset"] == PRESET and mug["seconds"] > 0
    for role in ("asset", "preview", "turntable"):
        assert (out / mug[role]).is_file(), role
    assert mug["asset"] == f"a-blue-mug-{PRESET}-s0/asset.ply"
    assert 0.0 <= mug["mask_iou"] <= 1.0 and 0.0 <= mug["view_accuracy"] <= 1.0 and mug["psnr"] > 5
    assert giraffe["status"] == "failed" and giraffe["error"].startswith("UNKNOWN_PROMPT")
    assert "giraffe" in giraffe["error"] and giraffe["asset"] is None
    assert (out / "index.html").is_file()


def test_local_rerun_skips_done_and_retries_failed(local_batch):
    prompts, out, _ = local_batch
    before = read_rows(out)
    marker = out / before["a blue mug"]["folder"] / "runner.json"
    marker_before = marker.read_text()
    again = run_cli(batch_cmd(prompts, out, "--workers", "2"))
    assert again.returncode == 1
    assert "2 jobs: 1 ok, 1 failed (1 done before this run)" in again.stdout
    after = read_rows(out)
    assert after["a blue mug"] == before["a blue mug"]  # skipped: the same row, the folder untouched
    assert marker.read_text() == marker_before
    assert after["a purple giraffe"]["finished"] > before["a purple giraffe"]["finished"]  # retried
    assert len((out / "results.jsonl").read_text().splitlines()) == 2  # still one row per job


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "the gallery test needs Chromium: ./scripts/bootstrap_chromium.sh installs Debian's package"
    return path


def headless(url: str, tmp: Path, *mode: str) -> subprocess.CompletedProcess:
    """Chromium without a sandbox, GPU or any background network traffic, with a fresh profile."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000", *mode, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_gallery_in_headless_chromium(local_batch, tmp_path):
    _, out, _ = local_batch
    url = (out / "index.html").resolve().as_uri()
    r = headless(url + "#selftest", tmp_path, "--dump-dom")
    m = re.search(r'<pre id="selftest-result">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the page did not run its self-check: {r.stderr[-2000:]}"
    report = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert report["rows"] == report["cards"] == report["visible"] == 2
    assert report["images"] == 2 and report["images_loaded"] == 2  # the mug's turntable and preview
    by = {(f["filter"], f["value"]): f for f in report["filters"]}
    failed = by[("status", "failed")]
    assert failed["visible"] == failed["expected"] == failed["counter"] == 1 and failed["all_match"]
    mug = by[("prompt", "a blue mug")]
    assert mug["visible"] == 1 and mug["all_match"]
    assert by[("preset", PRESET)]["visible"] == 2
    assert report["visible_after_reset"] == 2
    # What a reader sees without the self-check: both cards, the failure's reason.
    dom = headless(url, tmp_path, "--dump-dom").stdout
    assert dom.count('class="card"') == 2 and "UNKNOWN_PROMPT" in dom
    shot = tmp_path / "shot.png"
    headless(url, tmp_path, f"--screenshot={shot}", "--window-size=1000,700")
    assert shot.is_file() and shot.stat().st_size > 5000


def test_local_worker_killed_mid_job_is_retried_and_resumes(tmp_path, warm_references):
    prompts = write_prompts(tmp_path / "prompts.txt", ["a blue mug"])
    out = tmp_path / "out"
    killed: dict = {}
    stop = threading.Event()
    threading.Thread(target=kill_after_first_checkpoint, args=(out / f"a-blue-mug-{PRESET}-s0", killed, stop),
                     daemon=True).start()
    try:
        r = run_cli(batch_cmd(prompts, out, "--workers", "2", "--set", "stages.0.steps=40"))  # 1 thread each
    finally:
        stop.set()
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pid" in killed, "the job finished before a checkpoint was seen"
    row = read_rows(out)["a blue mug"]
    assert row["status"] == "ok" and row["resumed_from"] is not None and row["resumed_from"] >= 5
    assert (out / row["asset"]).is_file() and row["steps"] == 40


def test_ctrl_c_stops_cleanly_and_keeps_checkpoints(tmp_path, warm_references):
    prompts = write_prompts(tmp_path / "prompts.txt", ["a red duck"])
    out = tmp_path / "out"
    cmd = batch_cmd(prompts, out, "--workers", "2", "--set", "stages.0.steps=200")
    # Started as from a terminal: Ctrl-C's default disposition, whatever this test process inherited (a child
    # inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt).
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpts = out / f"a-red-duck-{PRESET}-s0" / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(ckpts.glob("ckpt-*/_SUCCESS")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(ckpts.glob("ckpt-*/_SUCCESS"))  # kept for the rerun
    assert (out / "results.jsonl").read_text() == ""  # no row for a job that did not finish


def test_a_kept_prior_gives_the_same_result_as_a_fresh_one(tmp_path, warm_references):
    """A worker keeps its loaded prior for the next job: the next job's asset is what a fresh process makes."""
    from backend.batch.plan import build_config
    from backend.engine.loop import run_job

    tiny = ["stages.0.steps=6", "stages.0.camera.views=1", "stages.0.camera.resolution=32",
            "stages.0.representation.init_count=200", "output.preview_every=0", "output.snapshot_every=0",
            "output.checkpoint_every=0", "output.turntable_frames=0", "output.evaluate=false"]
    duck = build_config("a red duck", PRESET, 3, tiny)
    run_job(duck, tmp_path / "fresh", resume=False)
    cache: dict = {}
    run_job(build_config("a blue mug", PRESET, 0, tiny), tmp_path / "first", resume=False, prior_cache=cache)
    assert len(cache) == 1
    kept = next(iter(cache.values()))
    run_job(duck, tmp_path / "kept", resume=False, prior_cache=cache)
    assert next(iter(cache.values())) is kept  # the same loaded prior served the second job
    assert (tmp_path / "kept" / "asset.ply").read_bytes() == (tmp_path / "fresh" / "asset.ply").read_bytes()
