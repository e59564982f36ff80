"""A real `distillery serve` in a subprocess on an ephemeral loopback port, driven by the stdlib client.

Fault injection (worker crash, CUDA out-of-memory, a hung step) needs no hook in the product: the fault server
gets a `sitecustomize.py` on its PYTHONPATH that wraps the engine loop's `_run_stage` in the worker process
when it is imported, keyed by the job's seed (see FAULTS).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from addon.client import BackendError, Session

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a red duck"  # the prompt the engine tests use too: its references are rendered once per session

# Seeds that trigger a simulated fault in the worker (fault, at the n-th step check).
FAULTS = {666: ("crash", 2), 667: ("oom", 1), 668: ("hang", 1)}


def quick_job(steps: int = 6, seed: int = 0, **extra: object) -> dict:
    """A job request that runs in seconds on a loaded 2-core CPU."""
    return {"prompt": PROMPT, "seed": seed, "stages.0.steps": steps, "camera.resolution": 16, "camera.views": 1,
            "representation.init_count": 200, "output.turntable_frames": 0, "output.evaluate": False,
            "output.preview_views": 1, "output.preview_resolution": 32, "output.snapshot_every": 2,
            "output.preview_every": 2, "output.checkpoint_every": 2, **extra}


SITECUSTOMIZE = textwrap.dedent('''
    """Test-only fault injection for the distillery worker (see tests/server/conftest.py)."""
    import importlib.abc
    import importlib.machinery
    import json
    import os
    import signal
    import sys
    import time

    FAULTS = {int(k): v for k, v in json.loads(os.environ.get("DISTILLERY_TEST_FAULTS", "{}")).items()}


    def _patch(module):
        real = module._run_stage

        def run_stage(cfg, st, start, out_dir, emit, should_cancel, *args, **kwargs):
            fault = FAULTS.get(cfg.seed)
            if fault is None:
                return real(cfg, st, start, out_dir, emit, should_cancel, *args, **kwargs)
            kind, at = fault
            calls = [0]

            def checked():
                calls[0] += 1
                if calls[0] == at:
                    if kind == "crash":
                        os.kill(os.getpid(), signal.SIGKILL)
                    if kind == "oom":
                        import torch
                        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
                    if kind == "hang":
                        time.sleep(60)
                return should_cancel()

            return real(cfg, st, start, out_dir, emit, checked, *args, **kwargs)

        module._run_stage = run_stage


    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "backend.engine.loop":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            real_exec = spec.loader.exec_module

            def exec_module(module):
                real_exec(module)
                _patch(module)

            spec.loader.exec_module = exec_module
            return spec


    if FAULTS:
        sys.meta_path.insert(0, _Hook())
''')


class Server:
    """One `distillery serve` process for a data dir; restartable on the same port."""

    def __init__(self, data_dir: Path, faults: bool = False, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.token_file = data_dir / "token"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.faults = faults
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 120.0) -> Server:
        env = {**os.environ, **self.extra_env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        if self.faults:
            hook_dir = self.data_dir.parent / "fault-hook"
            hook_dir.mkdir(exist_ok=True)
            (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join((str(hook_dir), env["PYTHONPATH"]))
            env["DISTILLERY_TEST_FAULTS"] = json.dumps({str(k): v for k, v in FAULTS.items()})
        conn = self.data_dir / "server.json"
        if conn.exists():
            conn.unlink()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server's stderr for the whole run
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                info = json.loads(conn.read_text())
                if info["pid"] == self.proc.pid:
                    self.port = info["port"]
                    if self.session(timeout=2).health()["worker"] == "ready":
                        return self
            except (OSError, ValueError, KeyError, BackendError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become ready in {timeout} s:\n{self.log()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def session(self, timeout: float = 5.0) -> Session:
        return Session.from_token_file(self.url, self.token_file, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pid(self) -> int | None:
        import psutil

        assert self.proc is not None
        kids = psutil.Process(self.proc.pid).children()
        return kids[0].pid if kids else None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_to_end(handle, timeout: float = 240.0) -> list[dict]:
    """poll_once until the job's terminal status; returns every event."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = handle.poll_once(wait=5)
        events.extend(batch)
        if any(e["type"] == "status" and e["state"] in ("succeeded", "failed", "cancelled") for e in batch):
            return events
    raise AssertionError(f"job {handle.job_id} did not end in {timeout} s; last events: {events[-3:]}")


@pytest.fixture(scope="session")
def warm_references():
    """Render the prompt's references (and the unconditional branch's) once, in this process, so server jobs
    only load them from the session cache."""
    from backend.config import ReferencePriorConfig
    from backend.priors.reference.prior import ReferencePrior

    ReferencePrior(ReferencePriorConfig()).prepare(PROMPT, "")


@pytest.fixture(scope="session")
def server(tmp_path_factory, warm_references):
    """The shared server of the integration and security tests."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data").start()
    yield srv
    srv.stop()
