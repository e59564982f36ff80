"""The worker in-process: CUDA out-of-memory recovery really frees the failing step's tensors, the hint names
what to lower, three in a row restart the worker; control messages are JSON lines; the client's protocol
copy matches the backend's."""

from __future__ import annotations

import gc
import io
import json
import os
import weakref
from pathlib import Path

import pytest
import torch

from backend.config import to_dict
from backend.engine import loop
from backend.jobs.requests import build_config
from backend.jobs.worker import MAX_CONSECUTIVE_OOM, Channel, Worker, oom_hint

from .conftest import ROOT, quick_job


class Recorder(Channel):
    def __init__(self) -> None:  # no pipe: keep the messages
        self.sent: list[dict] = []

    def send(self, message: dict) -> None:
        self.sent.append(json.loads(json.dumps(message)))


def test_client_protocol_is_an_exact_copy_of_the_backend_protocol():
    backend = (ROOT / "backend" / "protocol.py").read_bytes()
    client = (ROOT / "addon" / "client" / "protocol.py").read_bytes()
    assert client == backend, "copy backend/protocol.py to addon/client/protocol.py"


def test_out_of_memory_is_handled_outside_the_except_block_and_frees_the_step(tmp_path, monkeypatch,
                                                                            warm_references):
    refs: list[weakref.ref] = []

    def oom_step(cfg, st, *args, **kwargs):
        activations = torch.ones(256, 256, requires_grad=True) * 2  # tensors the failing step holds
        refs.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    monkeypatch.setattr(loop, "_run_stage", oom_step)
    worker = Worker(Recorder())
    config = to_dict(build_config(quick_job(steps=4, **{"camera.resolution": 32, "camera.views": 3})))
    outcome = worker.execute("ab" * 16, config, tmp_path)
    assert outcome["outcome"] == "failed" and outcome["error"]["code"] == "CUDA_OOM"
    assert "camera.resolution (now 32)" in outcome["error"]["hint"]
    assert "camera.views (now 3)" in outcome["error"]["hint"]
    assert "representation.max_count" in outcome["error"]["hint"]
    assert refs and refs[0]() is None, "the failing step's tensors are still alive after recovery"


def test_three_out_of_memory_errors_in_a_row_restart_the_worker():
    worker = Worker(Recorder())
    oom = {"outcome": "failed", "error": {"code": "CUDA_OOM"}}
    ok = {"outcome": "succeeded", "error": None}
    assert not worker._must_restart(oom) and not worker._must_restart(oom)
    assert not worker._must_restart(ok)  # a success resets the count
    results = [worker._must_restart(oom) for _ in range(MAX_CONSECUTIVE_OOM)]
    assert results == [False] * (MAX_CONSECUTIVE_OOM - 1) + [True]
    assert "3 out-of-memory errors in a row" in worker._restart_reason


def test_other_failures_map_to_their_codes(tmp_path, monkeypatch):
    worker = Worker(Recorder())
    bad = to_dict(build_config(quick_job()))
    bad["stages"][0]["camera"]["resolution"] = 99999
    out = worker.execute("cd" * 16, bad, tmp_path)
    assert out["error"]["code"] == "INVALID_CONFIG" and "stages.0.camera.resolution" in out["error"]["message"]

    def boom(*args, **kwargs):
        raise RuntimeError(f"something broke in {tmp_path}")

    monkeypatch.setattr(loop, "run_job", boom)
    out = worker.execute("cd" * 16, to_dict(build_config(quick_job())), tmp_path)
    assert out["error"]["code"] == "INTERNAL" and out["error"]["hint"] == "see the server log for details"


def test_a_missing_model_is_reported_as_model_missing(tmp_path, monkeypatch):
    # The add-on's panel offers its model-cache fix for MODEL_MISSING; a missing model must not become INTERNAL.
    worker = Worker(Recorder())
    job = to_dict(build_config(quick_job()))
    job["stages"][0]["prior"] = {"name": "stable-diffusion", "model": str(tmp_path / "no-such-model")}
    out = worker.execute("ef" * 16, job, tmp_path / "out")
    assert out["outcome"] == "failed" and out["error"]["code"] == "MODEL_MISSING"
    assert "no-such-model" in out["error"]["message"]


def test_multi_stage_hint_names_each_stage():
    cfg = {"stages": [{"camera": {"resolution": 64, "views": 4}, "representation": {"max_count": 10}},
                      {"camera": {"resolution": 512, "views": 2}, "representation": {"max_count": 20}}]}
    hint = oom_hint(cfg)
    assert "stages.1.camera.resolution (now 512)" in hint and "stages.0.representation.max_count (now 10" in hint


def test_commands_are_json_lines_and_eof_stops_the_worker(monkeypatch):
    timers = []
    monkeypatch.setattr("threading.Timer.start", lambda self: timers.append(self))
    worker = Worker(Recorder())
    worker.current = "ab" * 16
    lines = [b'{"op": "run", "job_id": "' + b"ef" * 16 + b'"}\n', b"not json\n", b"[1, 2]\n",
             b'{"op": "cancel", "job_id": "' + b"00" * 16 + b'"}\n', b"x" * (2 << 20) + b"\n",
             b'{"op": "cancel", "job_id": "' + b"ab" * 16 + b'"}\n']
    worker.read_commands(io.BytesIO(b"".join(lines)))  # returns at EOF
    assert worker.inbox.get_nowait()["job_id"] == "ef" * 16
    assert worker.cancel.is_set() and worker.stopping.is_set()
    assert "ab" * 16 in worker.cancel_requested and "00" * 16 in worker.cancel_requested
    assert timers, "no exit deadline was armed after EOF"


@pytest.mark.parametrize("data", [b"", b"partial"])
def test_channel_exits_when_the_supervisor_is_gone(monkeypatch, data):
    r, w = os.pipe()
    os.close(r)
    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    Channel(w).send({"kind": "event", "data": data.decode()})
    assert exits == [0]
    gc.collect()


def test_worker_lock_is_exclusive(tmp_path):
    from backend.jobs.worker import _lock

    held = _lock(Path(tmp_path) / "worker.lock", 1.0)
    try:
        import subprocess
        import sys

        lock = str(tmp_path / "worker.lock")
        code = ("from pathlib import Path; from backend.jobs.worker import _lock\n"
                f"try:\n    _lock(Path({lock!r}), 0.5)\nexcept TimeoutError:\n    raise SystemExit(3)")
        assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 3
    finally:
        held.close()
