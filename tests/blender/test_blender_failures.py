"""Every dead end leads somewhere: for each failure the panel states the cause in one line and offers the action
that fixes it, and pressing that action fixes it (real bpy, the fake backend or a real process)."""

from __future__ import annotations

import sys
import time

import bpy
import pytest
from conftest import prefs, pump_until
from fakes import FakeServer
from test_blender_runtime import server  # noqa: F401 - the fixture
from test_blender_scene_sync import gaussians


def _actions(prob) -> list[tuple[str, dict]]:
    return [(a.operator, dict(a.props)) for a in prob.actions]


def _only_problem(addon, title: str):
    probs = [p for p in addon.panels.problems(bpy.context) if p.title == title]
    assert len(probs) == 1, [p.title for p in addon.panels.problems(bpy.context)]
    prob = probs[0]
    assert "\n" not in prob.cause and prob.cause  # the cause is one line
    return prob


def test_every_error_code_has_a_fix(addon):
    import importlib

    failures = addon.failures
    protocol = importlib.import_module(f"{addon.pkg}.client.protocol")
    for code in protocol.ERROR_CODES:
        assert failures.FIXES[code].actions, code
    for code, fix in failures.FIXES.items():
        assert fix.title and fix.cause and fix.actions, code
        for action in fix.actions:
            mod, name = action.operator.split(".")
            rna = getattr(getattr(bpy.ops, mod), name).get_rna_type()  # a registered operator ...
            for key, _ in action.props:
                assert key in rna.properties, (code, action)  # ... with these properties


def test_a_python_without_the_packages_names_the_missing_module(addon, tmp_path):
    p = prefs(addon)
    p.mode, p.python_path, p.data_dir = "LAUNCH", sys.executable, str(tmp_path)  # Blender's Python: no torch
    assert bpy.ops.distillery.backend_start() == {"FINISHED"}
    rt = addon.runtime.RUNTIME
    pump_until(addon, lambda: rt.view.state == "dead", timeout=60)
    prob = _only_problem(addon, "Backend packages missing")
    assert prob.cause.startswith("No module named 'torch'") and sys.executable in prob.cause
    assert [a for a, _ in _actions(prob)] == ["distillery.venv_install", "distillery.open_preferences",
                                              "distillery.show_log"]
    assert not any(a == "distillery.backend_restart" for a, _ in _actions(prob))  # no Restart that crashes again
    # "Open Log" shows the traceback; "Install Backend" switches to the managed environment
    assert bpy.ops.distillery.show_log() == {"FINISHED"}
    assert "No module named 'torch'" in bpy.data.texts["Distillery log"].as_string()
    with pytest.raises(RuntimeError, match="Online access is off"):  # module mode has no online access
        bpy.ops.distillery.venv_install(use_managed=True)
    assert p.mode == "MANAGED"
    assert _only_problem(addon, "Backend not installed").actions[0].operator == "distillery.venv_install"
    p.mode = "LAUNCH"


def test_a_half_made_managed_environment_is_not_installed(addon):
    p = prefs(addon)
    p.mode = "MANAGED"
    venv = addon.preferences.venv_dir()
    python = addon.launcher.venv_python(venv)
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text("")  # an install interrupted after PyTorch: the interpreter and torch, nothing else
    (venv / "lib" / "python3.11" / "site-packages" / "torch-2.13.0.dist-info").mkdir(parents=True, exist_ok=True)
    try:
        prob = _only_problem(addon, "Backend install incomplete")
        assert prob.cause.startswith("the managed environment lacks ") and "fastapi" in prob.cause
        assert "torch" not in prob.cause
        assert prob.actions[0].operator == "distillery.venv_install"
        with pytest.raises(RuntimeError, match="lacks"):  # never launched to crash
            bpy.ops.distillery.backend_start()
        assert addon.runtime.RUNTIME.view.code == "BACKEND_INCOMPLETE"
    finally:
        python.unlink()
        p.mode = "LAUNCH"


def test_generate_with_the_backend_stopped_starts_it_then_submits(addon, presets_payload, tmp_path):
    addon.properties.sync_presets([])  # a fresh Blender: no presets known until the backend answers
    srv = FakeServer(presets_payload, [], addon.ply.write_gaussians(None, gaussians(addon.ply, 50)))
    rt = addon.runtime.RUNTIME
    rt.use_session_factory(lambda: srv.session_class())
    token = tmp_path / "token"
    token.write_text("secret\n")
    p = prefs(addon)
    p.mode, p.url, p.token_file, p.auto_start = "CONNECT", "http://127.0.0.1:9", str(token), True
    s = bpy.context.scene.distillery
    s.prompt = "a chair"
    assert rt.view.state == "stopped"
    assert bpy.ops.distillery.generate() == {"FINISHED"}
    assert s.job_state == "waiting" and "sent when it is ready" in s.job_message
    pump_until(addon, lambda: s.job_state == "succeeded")
    assert len(srv.submitted) == 1 and srv.submitted[0]["prompt"] == "a chair"


def test_a_cancel_pressed_while_the_backend_is_down_is_sent_after_the_restart(addon, server):  # noqa: F811
    s = bpy.context.scene.distillery
    s.prompt = "a house"
    server.script = lambda job_id, cfg: [server.default_script(job_id, cfg)[0], {"type": "_wait"}]
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_state == "running")
    rt = addon.runtime.RUNTIME
    server.down = True  # the backend dies: its process is gone, nothing listens
    bpy.ops.distillery.backend_stop()
    pump_until(addon, lambda: rt.view.state == "stopped")
    assert bpy.ops.distillery.cancel() == {"FINISHED"}
    assert s.job_state == "cancelling" and "when it is back" in s.job_message
    time.sleep(0.3)
    assert server.cancelled == set()  # nothing could be sent yet
    server.down = False
    assert bpy.ops.distillery.backend_restart() == {"FINISHED"}
    pump_until(addon, lambda: s.job_state == "cancelled")
    assert s.job_id in server.cancelled


@pytest.mark.parametrize("case", ["empty prompt", "no camera", "seed without faces"])
def test_a_bad_field_is_highlighted_with_its_fix(addon, server, case):  # noqa: F811
    from test_blender_panels import draw

    scene = bpy.context.scene
    s = scene.distillery
    s.prompt = "a mug"
    if case == "empty prompt":
        s.prompt = ""
        field, title, fix = "prompt", "Prompt is empty", None
    elif case == "no camera":
        scene.camera = None
        s.use_camera_front = True
        field, title, fix = "front from camera", "No active camera", "NO_CAMERA_FRONT"
    else:
        mesh = bpy.data.meshes.new("points only")
        mesh.vertices.add(3)
        obj = bpy.data.objects.new("points only", mesh)
        scene.collection.objects.link(obj)
        s.seed_object = obj
        field, title, fix = "seed shape", "Seed shape unusable", "CLEAR_SEED"
    with pytest.raises(RuntimeError, match=field):
        bpy.ops.distillery.generate()
    prob = _only_problem(addon, title)
    assert prob.field == field == s.job_error_field
    assert ("alert", {"prompt": "prompt", "front from camera": "use_camera_front",
                      "seed shape": "seed_object"}[field]) in draw(addon.panels.DISTILLERY_PT_main)
    if fix is None:
        assert _actions(prob) == [("distillery.fix", {"action": "CLEAR"})]
        s.prompt = "a mug"
        assert bpy.ops.distillery.generate() == {"FINISHED"}
    else:
        assert _actions(prob) == [("distillery.fix", {"action": fix})]
        assert bpy.ops.distillery.fix(action=fix) == {"FINISHED"}  # fixes the field and sends the job
    pump_until(addon, lambda: s.job_state == "succeeded")
    assert not addon.panels.problems(bpy.context) and s.job_error_field == ""


def test_model_missing_offers_the_download(addon, server, tmp_path, monkeypatch):  # noqa: F811
    from test_blender_panels import draw

    s = bpy.context.scene.distillery
    s.prompt = "a teapot"
    hint = "fetch it with: distillery models download sd21"
    server.script = lambda job_id, cfg: [
        {"type": "error", "code": "MODEL_MISSING", "message": "stabilityai/stable-diffusion-2-1-base is not in "
         "the model cache", "hint": hint},
        {"type": "status", "state": "failed", "message": "failed"}]
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_state == "failed")
    prob = _only_problem(addon, "Model missing")
    assert prob.cause.startswith("stabilityai/stable-diffusion-2-1-base is not in the model cache")
    assert prob.hint == hint
    assert [a for a, _ in _actions(prob)] == ["distillery.download_model", "distillery.open_preferences"]
    # The action runs the backend's own download command with the backend's interpreter (a stand-in here).
    seen = tmp_path / "argv.txt"
    fake_python = tmp_path / "python"
    go = tmp_path / "go"
    fake_python.write_text(f"#!/bin/sh\necho \"$@\" > {seen}\nwhile [ ! -f {go} ]; do sleep 0.05; done\n"
                           "echo 'sd21: ready'\n")
    fake_python.chmod(0o755)
    p = prefs(addon)
    p.mode, p.python_path = "LAUNCH", str(fake_python)
    with pytest.raises(RuntimeError, match="Online access is off"):  # as in module mode
        bpy.ops.distillery.download_model()
    monkeypatch.setattr(addon.preferences, "online_access", lambda: True)
    assert bpy.ops.distillery.download_model() == {"FINISHED"}
    rt = addon.runtime.RUNTIME
    assert ("progress", "Download sd21") in draw(addon.panels.DISTILLERY_PT_main)  # shown while it runs
    go.write_text("")
    rt.installer.thread.join(30)
    assert rt.installer.state == "succeeded"
    assert seen.read_text().split() == ["-m", "backend", "models", "download", "sd21"]


def test_an_invalid_setting_is_highlighted_and_reset(addon, server):  # noqa: F811
    """INVALID_CONFIG names the setting: it is drawn in red (even under a closed Advanced) and reset."""
    from test_blender_panels import draw

    scene = bpy.context.scene
    s = scene.distillery
    s.prompt = "a mug"
    s.preset = server.presets[0]["name"]
    setting = next(x for x in addon.request.editable_settings(server.presets[0])
                   if x.get("advanced", True) and x["kind"] == "float")
    key = setting["key"]
    ident = addon.properties.setting_ident(s.preset, key)
    group = addon.properties.preset_values(scene, s.preset)
    setattr(group, ident, setting["default"] + 1.0)
    server.script = lambda job_id, cfg: [
        {"type": "error", "code": "INVALID_CONFIG", "message": f"{key}: out of range", "hint": "allowed: 0..1",
         "field": key},
        {"type": "status", "state": "failed", "message": "failed"}]
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_state == "failed")
    prob = _only_problem(addon, "Invalid setting")
    assert prob.field == key and prob.cause == f"{key}: out of range" and prob.hint == "allowed: 0..1"
    assert _actions(prob) == [("distillery.fix", {"action": "RESET_FIELD"})]
    s.show_advanced = False
    assert ("alert", ident) in draw(addon.panels.DISTILLERY_PT_settings)
    assert group.is_property_set(ident)
    assert bpy.ops.distillery.fix(action="RESET_FIELD") == {"FINISHED"}
    assert not group.is_property_set(ident) and not addon.panels.problems(bpy.context)
