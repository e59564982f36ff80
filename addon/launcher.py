"""Starting the backend process and filling its managed virtual environment. No bpy: plain-pytest testable.

The backend is a separate process in its own Python environment (docs/DESIGN.md §1): `python -m backend serve
--port P --token-file F --data-dir D` with the embedded backend package first on PYTHONPATH. Everything here
that waits (process start, pip) runs in a worker thread; the main thread only reads the state objects.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent
EMBED_DIR_NAME = "backend_embed"  # build.py puts the backend package and pyproject.toml here
LOG_LINES = 200


class LaunchError(RuntimeError):
    """A backend that cannot be started; `hint` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def embedded_root(addon_dir: Path = ADDON_DIR) -> Path:
    """The folder to put on PYTHONPATH so `import backend` finds the backend shipped with this add-on: the
    packaged extension's `backend_embed/`, or the source checkout that holds `addon/` and `backend/`."""
    for cand in (addon_dir / EMBED_DIR_NAME, addon_dir.parent):
        if (cand / "backend" / "__init__.py").is_file():
            return cand
    raise LaunchError("the backend package is missing from this add-on", "reinstall the extension zip")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_python(venv_dir: Path) -> Path:
    return Path(venv_dir) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@dataclass
class LaunchSpec:
    python: str
    port: int
    token_file: Path
    data_dir: Path
    log_file: Path
    model_cache: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    pythonpath: Path | None = None  # default: the embedded backend (embedded_root())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.python, "-m", "backend", "serve", "--port", str(self.port), "--token-file", str(self.token_file),
                "--data-dir", str(self.data_dir)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # Blender sets PYTHONHOME/PYTHONPATH for its own Python; the backend's interpreter must not inherit them.
        for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONNOUSERSITE"):
            env.pop(key, None)
        env["PYTHONPATH"] = str(self.pythonpath or embedded_root())
        env["PYTHONUNBUFFERED"] = "1"
        if self.model_cache:
            env["HF_HOME"] = self.model_cache
        env.update(self.extra_env)
        return env


def check_interpreter(python: str) -> None:
    """Raise LaunchError unless `python` is an existing file (the cheap check; the backend reports the rest)."""
    if not python:
        raise LaunchError("no backend Python interpreter is set",
                          "choose one in the add-on preferences, or install the managed environment")
    if not Path(python).is_file():
        raise LaunchError(f"the backend interpreter {python} does not exist",
                          "choose an existing Python in the add-on preferences")


class BackendProcess:
    """A launched backend: the Popen, its log file, and a clean stop."""

    def __init__(self, spec: LaunchSpec) -> None:
        check_interpreter(spec.python)
        self.spec = spec
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        spec.token_file.parent.mkdir(parents=True, exist_ok=True)
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        if spec.token_file.exists():
            spec.token_file.unlink()  # a stale token must not be mistaken for the new server's
        self._log = open(spec.log_file, "ab")  # noqa: SIM115 - closed in stop()
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True  # Ctrl-C in Blender's terminal does not kill the backend mid-write
        # stdin stays open: the backend may treat its EOF as "Blender is gone" and shut down cleanly.
        self.proc = subprocess.Popen(spec.command(), stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=spec.environment(), cwd=str(spec.data_dir), **kwargs)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 20) -> list[str]:
        return read_tail(self.spec.log_file, lines)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s. Blocking: call it from a worker thread."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin:
                    self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def signal_stop(self) -> None:
        """Ask the process to stop without waiting (for unregister and interpreter exit)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGTERM)


def read_tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return f.read().decode("utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------- managed venv


def requirements(root: Path | None = None) -> list[str]:
    """The backend's pinned requirements, read from the pyproject.toml beside the embedded backend package
    (its dependencies plus the `server` extra when there is one)."""
    root = root or embedded_root()
    data = tomllib.loads((root / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project.get("dependencies", []))
    reqs += project.get("optional-dependencies", {}).get("server", [])
    return reqs


TORCH_INDEXES = {
    "DEFAULT": [],
    "CPU": ["--index-url", "https://download.pytorch.org/whl/cpu"],
    "CU121": ["--index-url", "https://download.pytorch.org/whl/cu121"],
    "CU124": ["--index-url", "https://download.pytorch.org/whl/cu124"],
}


@dataclass
class Step:
    label: str
    argv: list[str]
    env: dict[str, str] | None = None


def install_steps(venv_dir: Path, base_python: str, torch_variant: str = "DEFAULT", extra_args: list[str] | None = None,
                  root: Path | None = None) -> list[Step]:
    """The commands that create and fill the managed environment, in order."""
    root = root or embedded_root()
    py = str(venv_python(venv_dir))
    extra = list(extra_args or [])
    reqs = requirements(root)
    torch_req = [r for r in reqs if r.replace(" ", "").startswith("torch")]
    rest = [r for r in reqs if r not in torch_req]
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    steps = [Step("Create the environment", [base_python, "-m", "venv", str(venv_dir)])]
    if torch_req:
        steps.append(Step("Install PyTorch", [*pip, *torch_req, *TORCH_INDEXES.get(torch_variant, []), *extra]))
    if rest:
        # Constrain to the torch just installed so pip never swaps it for another build.
        steps.append(Step("Install the backend's packages",
                          [*pip, *rest, *extra, "-c", str(Path(venv_dir) / "torch-constraint.txt")]))
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("PYTHONHOME", None)
    steps.append(Step("Check the backend", [py, "-c", "import backend, torch; print('backend', backend.__version__,"
                                                      " 'torch', torch.__version__)"], env))
    return steps


class Installer:
    """Runs install steps in a thread with progress, a log and cancel. The main thread polls `snapshot()`."""

    def __init__(self, steps: list[Step], venv_dir: Path, log_file: Path) -> None:
        self.steps = steps
        self.venv_dir = Path(venv_dir)
        self.log_file = Path(log_file)
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self.state = "idle"  # idle | running | succeeded | failed | cancelled
        self.step_index = 0
        self.sub_progress = 0.0
        self.message = ""
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.state == "running":
            return
        self.state = "running"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self._run, name="distillery-venv-install", daemon=True)
        self.thread.start()

    def cancel(self) -> None:
        self._cancel.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    @property
    def progress(self) -> float:
        if self.state == "succeeded":
            return 1.0
        return min(1.0, (self.step_index + self.sub_progress) / max(1, len(self.steps)))

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self.state, "progress": self.progress, "message": self.message,
                    "step": self.step_index, "steps": len(self.steps), "log": list(self.lines)[-12:]}

    def _log(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
            if line.startswith(("Collecting", "Downloading", "Installing", "Successfully")):
                self.sub_progress = min(0.95, self.sub_progress + 0.04)
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _run(self) -> None:
        try:
            for i, step in enumerate(self.steps):
                with self._lock:
                    self.step_index, self.sub_progress, self.message = i, 0.0, step.label
                self._log(f"== {step.label}: {' '.join(step.argv)}")
                if self._cancel.is_set():
                    break
                rc = self._run_step(step)
                if self._cancel.is_set():
                    break
                if rc != 0:
                    with self._lock:
                        self.state, self.message = "failed", f"{step.label} failed (exit code {rc}); see the log"
                    return
                if step.label == "Install PyTorch":
                    self._pin_torch()
            with self._lock:
                if self._cancel.is_set():
                    self.state, self.message = "cancelled", "installation cancelled"
                else:
                    self.state, self.step_index, self.message = "succeeded", len(self.steps), "installed"
        except Exception as exc:  # an unexpected OSError must reach the panel, not vanish with the thread
            with self._lock:
                self.state, self.message = "failed", f"{type(exc).__name__}: {exc}"

    def _run_step(self, step: Step) -> int:
        proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=step.env,
                                text=True, errors="replace", bufsize=1)
        with self._lock:
            self._proc = proc
        assert proc.stdout is not None
        for line in proc.stdout:
            self._log(line.rstrip())
        return proc.wait()

    def _pin_torch(self) -> None:
        py = str(venv_python(self.venv_dir))
        out = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                             capture_output=True, text=True, timeout=120)
        version = out.stdout.strip()
        (self.venv_dir / "torch-constraint.txt").write_text(f"torch=={version}\n" if version else "")


def python_for_blender() -> str:
    """The interpreter Blender runs (its bundled Python), used to create the managed environment."""
    return sys.executable


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
