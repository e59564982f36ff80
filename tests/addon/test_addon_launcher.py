"""addon/launcher.py without Blender: the backend's command line and environment, a clean stop, and the managed
environment's installer (steps, progress, log, failure, cancel)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from addon import launcher

ROOT = Path(__file__).resolve().parents[2]

FAKE_MAIN = """
import json, os, sys
out = {"argv": sys.argv[1:], "pythonpath": os.environ.get("PYTHONPATH"), "hf_home": os.environ.get("HF_HOME"),
       "pythonhome": os.environ.get("PYTHONHOME"), "cwd": os.getcwd()}
open(os.environ["FAKE_OUT"], "w").write(json.dumps(out))
print("fake backend listening", flush=True)
sys.stdin.read()  # until Blender closes the pipe, or a signal
"""


def _spec(tmp_path: Path, python: str = sys.executable) -> launcher.LaunchSpec:
    pkg = tmp_path / "embed" / "backend"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_MAIN)
    return launcher.LaunchSpec(python=python, port=launcher.free_port(), token_file=tmp_path / "run" / "token",
                               data_dir=tmp_path / "data", log_file=tmp_path / "run" / "backend.log",
                               model_cache=str(tmp_path / "models"), pythonpath=tmp_path / "embed",
                               extra_env={"FAKE_OUT": str(tmp_path / "seen.json")})


def test_embedded_root_in_a_checkout_is_the_repository():
    assert launcher.embedded_root() == ROOT


def test_launch_command_environment_and_stop(tmp_path, monkeypatch):
    # Blender's own Python environment must not leak into the backend's interpreter
    monkeypatch.setenv("PYTHONPATH", "/blender/python/lib")
    monkeypatch.setenv("PYTHONHOME", "/blender/python")
    spec = _spec(tmp_path)
    (tmp_path / "run").mkdir()
    spec.token_file.write_text("stale")
    spec.log_file.write_text("ModuleNotFoundError: No module named 'torch'\n")  # an earlier run's last words
    proc = launcher.BackendProcess(spec)
    assert not spec.token_file.exists()  # a stale token is never mistaken for the new server's
    assert launcher.wait_for(lambda: (tmp_path / "seen.json").exists(), 20)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["argv"] == ["serve", "--port", str(spec.port), "--token-file", str(spec.token_file),
                            "--data-dir", str(spec.data_dir)]
    assert seen["pythonpath"] == str(tmp_path / "embed") and seen["hf_home"] == str(tmp_path / "models")
    assert seen["pythonhome"] is None and seen["cwd"] == str(spec.data_dir)
    assert proc.exit_code() is None
    t0 = time.monotonic()
    code = proc.stop(timeout=10)
    assert code is not None and time.monotonic() - t0 < 10
    assert "fake backend listening" in "\n".join(proc.log_tail())
    assert "No module named" not in "\n".join(proc.log_tail())  # an earlier run's error is not this run's


def test_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(launcher.LaunchError, match="does not exist") as err:
        launcher.BackendProcess(_spec(tmp_path, python=str(tmp_path / "nope" / "python")))
    assert "preferences" in err.value.hint
    with pytest.raises(launcher.LaunchError, match="no backend Python"):
        launcher.check_interpreter("")


def test_requirements_and_install_steps(tmp_path):
    reqs = launcher.requirements(ROOT)
    assert any(r.startswith("numpy==") for r in reqs) and any(r.startswith("torch") for r in reqs)
    steps = launcher.install_steps(tmp_path / "venv", "/usr/bin/python3", "CPU", ["--find-links", "/w"], root=ROOT)
    labels = [s.label for s in steps]
    assert labels == ["Create the environment", "Install PyTorch", "Install the backend's packages",
                      "Check the backend"]
    torch_step = steps[1].argv
    assert "https://download.pytorch.org/whl/cpu" in torch_step and "--find-links" in torch_step
    assert str(tmp_path / "venv" / "torch-constraint.txt") in steps[2].argv  # pip never swaps torch later
    assert steps[3].env["PYTHONPATH"] == str(ROOT)


def _step(label: str, code: str) -> launcher.Step:
    return launcher.Step(label, [sys.executable, "-c", code])


def test_installer_reports_progress_log_and_success(tmp_path):
    steps = [_step("one", "print('Collecting numpy'); print('Downloading numpy.whl')"), _step("two", "print('ok')")]
    inst = launcher.Installer(steps, tmp_path / "venv", tmp_path / "install.log")
    inst.start()
    inst.thread.join(30)
    snap = inst.snapshot()
    assert snap["state"] == "succeeded" and snap["progress"] == 1.0
    assert "Collecting numpy" in snap["log"] and "ok" in snap["log"]
    assert "Downloading numpy.whl" in (tmp_path / "install.log").read_text()


def test_installer_failure_names_the_step(tmp_path):
    steps = [_step("fine", "pass"), _step("Install PyTorch", "import sys; print('no match'); sys.exit(3)"),
             _step("never", "pass")]
    inst = launcher.Installer(steps, tmp_path / "venv", tmp_path / "install.log")
    inst.start()
    inst.thread.join(30)
    snap = inst.snapshot()
    assert snap["state"] == "failed" and "Install PyTorch failed (exit code 3)" in snap["message"]
    assert snap["step"] == 1 and 0.3 < snap["progress"] < 0.7


def test_installer_cancel_stops_the_running_step(tmp_path):
    steps = [_step("slow", "import time; print('Collecting', flush=True); time.sleep(60)"), _step("after", "pass")]
    inst = launcher.Installer(steps, tmp_path / "venv", tmp_path / "install.log")
    inst.start()
    assert launcher.wait_for(lambda: "Collecting" in inst.snapshot()["log"], 20)
    t0 = time.monotonic()
    inst.cancel()
    inst.thread.join(10)
    assert inst.snapshot()["state"] == "cancelled" and time.monotonic() - t0 < 5
