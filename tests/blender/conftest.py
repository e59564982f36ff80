"""Tests with the real Blender API: the bpy wheel (Blender 5.0.1 as a Python 3.11 module) in .venv-blender.

`scripts/test.sh` runs this folder with .venv-blender's Python; the backend's own environment (.venv) is a
separate interpreter, reached by subprocess as the add-on reaches it. BLENDER_USER_RESOURCES points at a temp
folder before bpy is imported, so installing the extension never touches a real Blender configuration.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="distillery-blender-user-")
BACKEND_PYTHON = os.environ.get("DISTILLERY_BACKEND_PYTHON", str(ROOT / ".venv" / "bin" / "python"))

try:
    import bpy
except ImportError:  # the backend's interpreter: this folder belongs to .venv-blender (see scripts/test.sh)
    bpy = None
    collect_ignore_glob = ["test_*.py"]

PKG = "bl_ext.user_default.distillery"
MODULES = ("runtime", "link", "reducer", "failures", "scene_sync", "display", "properties", "preferences",
           "operators", "panels", "request", "launcher", "client.ply", "client.convert", "client.transform",
           "client.splat")


def backend_python(code: str, stdin: str = "") -> str:
    """Run `code` in the backend's interpreter (torch, numpy 2) and return its stdout."""
    proc = subprocess.run([BACKEND_PYTHON, "-c", code], input=stdin, capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="session")
def presets_payload() -> list[dict]:
    """What GET /v1/presets answers, computed by the backend itself."""
    code = "import json; from backend import presets; print(json.dumps(presets.payload()))"
    return json.loads(backend_python(code))


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--output-dir", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zips = list(out.glob("distillery-*.zip"))
    assert len(zips) == 1, zips
    return zips[0]


@pytest.fixture(scope="session")
def ext(built_zip) -> types.SimpleNamespace:
    """The extension installed from the built zip with Blender's own installer, enabled."""
    result = bpy.ops.extensions.package_install_files(filepath=str(built_zip), repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}, result
    ns = types.SimpleNamespace(pkg=PKG, module=importlib.import_module(PKG), zip=built_zip)
    for name in MODULES:
        setattr(ns, name.split(".")[-1], importlib.import_module(f"{PKG}.{name}"))
    return ns


def enabled(pkg: str = PKG) -> bool:
    import addon_utils

    return addon_utils.check(pkg)[1]


@pytest.fixture
def addon(ext):
    """The enabled add-on with a clean scene; stops every thread it started afterwards."""
    import addon_utils

    if not enabled():
        addon_utils.enable(PKG, default_set=True)
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for mesh in list(bpy.data.meshes):
        bpy.data.meshes.remove(mesh)
    scene = bpy.context.scene
    scene.cursor.location = (0.0, 0.0, 0.0)
    s = scene.distillery
    s.history.clear()
    for key in ("job_id", "job_state", "job_message", "job_error_code", "job_error_message", "job_error_hint",
                "job_error_field", "job_kind", "prompt", "negative_prompt", "prior", "method", "representation"):
        setattr(s, key, "")
    s.seed_object = None
    s.seed = s.steps = 0
    s.use_camera_front = False
    s.splat_blend = "TRAINED"
    for preset in ext.properties.presets():  # settings edited by an earlier test go back to the defaults
        ext.properties.reset_values(scene, preset["name"])
    rt = ext.runtime.RUNTIME
    if rt is not None:
        rt.views.clear()
        rt.pending_submit = None
        rt.pending_cancels.clear()
    yield ext
    rt = ext.runtime.RUNTIME
    if rt is not None:
        rt.shutdown()
        rt.view = ext.runtime.BackendView()
        rt.pending_submit = None
        rt.use_session_factory(ext.runtime.default_session_factory)  # a fake backend stays with its test
    p = prefs(ext)
    for name in ("mode", "python_path", "url", "token_file", "data_dir", "auto_start"):
        p.property_unset(name)  # the preferences' defaults for the next test


def pump_until(ext, predicate, timeout: float = 20.0, interval: float = 0.02, why=None):
    """Call the pump by hand (timers never fire in module mode) until `predicate()` holds; `why()`, when
    given, adds what the panel says to the failure."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ext.runtime.pump()
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    ext.runtime.pump()
    assert predicate(), "condition not reached while pumping" + (f": {why()}" if why else "")
    return predicate()


def prefs(ext):
    return bpy.context.preferences.addons[PKG].preferences
