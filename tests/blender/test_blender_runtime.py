"""The add-on driven through its operators against a fake backend: Generate, progress, live snapshots applied
by the pump (newest only), the final asset, cancel, errors with their fix, a dead backend noticed in time, and
no network call on Blender's main thread."""

from __future__ import annotations

import threading
import time

import bpy
import numpy as np
import pytest
from conftest import prefs, pump_until
from fakes import FakeServer
from test_blender_scene_sync import gaussians


@pytest.fixture
def server(addon, presets_payload, tmp_path):
    ply = addon.ply
    snaps = [ply.write_gaussians(None, gaussians(ply, 300 + 100 * i, seed=i)) for i in range(3)]
    final = ply.write_gaussians(None, gaussians(ply, 777, seed=9))
    srv = FakeServer(presets_payload, snaps, final)
    rt = addon.runtime.RUNTIME
    rt.use_session_factory(lambda: srv.session_class())
    token = tmp_path / "token"
    token.write_text("secret\n")
    p = prefs(addon)
    p.mode, p.url, p.token_file = "CONNECT", "http://127.0.0.1:9", str(token)
    assert bpy.ops.distillery.backend_start() == {"FINISHED"}
    pump_until(addon, lambda: rt.view.state == "alive")
    return srv


def test_generate_runs_to_a_finished_gaussian_object(addon, server):
    scene = bpy.context.scene
    s = scene.distillery
    assert addon.properties.find_preset(s.preset) is not None  # presets arrived through the pump
    scene.cursor.location = (0.5, -1.0, 0.0)
    s.prompt = "a blue mug"
    assert bpy.ops.distillery.generate() == {"FINISHED"}
    assert s.job_state == "submitting"
    pump_until(addon, lambda: s.job_state == "succeeded")
    assert server.submitted[0]["prompt"] == "a blue mug" and server.submitted[0]["preset"] == s.preset
    obj = addon.scene_sync.find_object(s.job_id)
    assert obj is not None and obj.name == "a blue mug"
    assert tuple(round(c, 6) for c in obj.location) == (0.5, -1.0, 0.0)
    final = addon.ply.read_gaussians(server.final)
    stored = addon.scene_sync.get_gaussians(obj.data)
    assert len(obj.data.vertices) == 777
    for k, v in final.items():
        np.testing.assert_array_equal(stored[k], v, err_msg=k)
    assert obj[addon.scene_sync.STATE_KEY] == "succeeded"
    item = s.history[-1]
    assert (item.job_id, item.state, item.count, item.prompt) == (s.job_id, "succeeded", 777, "a blue mug")
    assert s.job_progress == 1.0 and s.job_step == s.job_steps == 300
    assert "done" in s.job_message


def test_only_the_newest_snapshot_per_job_is_applied(addon, server, monkeypatch):
    scene = bpy.context.scene
    s = scene.distillery
    s.prompt = "a duck"
    server.script = lambda job_id, cfg: [*server.default_script(job_id, cfg)[:-2], {"type": "_wait"},
                                         *server.default_script(job_id, cfg)[-2:]]
    bpy.ops.distillery.generate()
    rt = addon.runtime.RUNTIME
    applied = []
    real = addon.scene_sync.apply_snapshot
    monkeypatch.setattr(addon.scene_sync, "apply_snapshot", lambda *a, **k: applied.append(k["step"]) or real(*a, **k))
    # let the reader thread deliver every snapshot before the pump runs once
    pump_until(addon, lambda: s.job_id and rt.watchers.get(s.job_id))
    w = rt.watchers[s.job_id]
    end = time.monotonic() + 10
    while w.handle.last_seq < 7 and time.monotonic() < end:
        time.sleep(0.01)
    addon.runtime.pump()
    assert applied == [300]  # three snapshots arrived, one was applied: the newest
    assert rt.mailbox.dropped >= 2
    server.gate.set()
    pump_until(addon, lambda: s.job_state == "succeeded")


def test_cancel_stops_the_job(addon, server):
    s = bpy.context.scene.distillery
    s.prompt = "a house"
    server.script = lambda job_id, cfg: [server.default_script(job_id, cfg)[0], {"type": "_wait"}]
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_state == "running")
    assert s.job_running
    assert bpy.ops.distillery.cancel() == {"FINISHED"}
    pump_until(addon, lambda: s.job_state == "cancelled")
    assert s.job_id in server.cancelled
    assert not s.job_running


def test_an_error_shows_a_fix_that_works(addon, server):
    scene = bpy.context.scene
    s = scene.distillery
    s.prompt = "a snowman"
    server.script = lambda job_id, cfg: [
        {"type": "error", "code": "CUDA_OOM", "message": "out of memory at 512 px", "hint": "render at 256"},
        {"type": "status", "state": "failed", "message": "failed"}]
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_state == "failed")
    probs = addon.panels.problems(bpy.context)
    assert [(p.title, p.actions[0].operator, dict(p.actions[0].props)) for p in probs] == [
        ("Out of GPU memory", "distillery.fix", {"action": "LOWER_RESOLUTION"})]
    res_key = next(x["key"] for x in server.presets[0]["settings"] if x["key"].endswith(".camera.resolution"))
    assert probs[0].cause.startswith("out of memory at 512 px") and res_key in probs[0].cause  # names the setting
    assert probs[0].hint == "render at 256"
    before = server.submitted[-1]
    server.script = server.default_script
    assert bpy.ops.distillery.fix(action="LOWER_RESOLUTION") == {"FINISHED"}
    pump_until(addon, lambda: len(server.submitted) == 2)
    after = server.submitted[-1]
    r0 = before["stages"][int(res_key.split(".")[1])]["camera"]["resolution"]
    assert after["stages"][int(res_key.split(".")[1])]["camera"]["resolution"] == r0 // 2
    assert not addon.panels.problems(bpy.context)
    pump_until(addon, lambda: s.job_state == "succeeded")


def test_a_dead_backend_is_noticed_within_10_s_and_offers_a_restart(addon, server):
    rt = addon.runtime.RUNTIME
    server.down = True
    t0 = time.monotonic()
    pump_until(addon, lambda: rt.view.state == "unresponsive", timeout=12)
    assert time.monotonic() - t0 <= 10.0
    probs = addon.panels.problems(bpy.context)
    assert probs and probs[0].actions[0].operator == "distillery.backend_restart"


def test_a_launched_backend_that_exits_is_reported_dead(addon, tmp_path):
    p = prefs(addon)
    p.mode = "LAUNCH"
    p.python_path = "/bin/false"  # "starts", then exits with code 1 at once
    p.data_dir = str(tmp_path)
    assert bpy.ops.distillery.backend_start() == {"FINISHED"}
    rt = addon.runtime.RUNTIME
    t0 = time.monotonic()
    pump_until(addon, lambda: rt.view.state == "dead", timeout=10)
    assert time.monotonic() - t0 < 10.0
    assert "exited with code 1" in rt.view.message
    probs = addon.panels.problems(bpy.context)
    assert probs[0].title == "Backend stopped"
    assert [a.operator for a in probs[0].actions] == ["distillery.show_log", "distillery.backend_restart"]
    p.python_path = str(tmp_path / "missing-python")
    prob = addon.panels.problems(bpy.context)[0]
    assert prob.title == "Backend not installed"
    assert [a.operator for a in prob.actions] == ["distillery.venv_install", "distillery.open_preferences"]


def test_history_reimport_and_delete(addon, server):
    s = bpy.context.scene.distillery
    s.prompt = "a lamp"
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_state == "succeeded")
    job_id = s.job_id
    assert bpy.ops.distillery.history(action="REIMPORT", index=0) == {"FINISHED"}
    pump_until(addon, lambda: len([o for o in bpy.data.objects if o.name.startswith("a lamp")]) == 2)
    assert bpy.ops.distillery.history(action="DELETE", index=0) == {"FINISHED"}
    pump_until(addon, lambda: job_id in server.deleted)
    assert len(s.history) == 0


def test_the_pump_stays_fast_and_off_the_network(addon, server, monkeypatch):
    """100k-Gaussian snapshots: each pump call applies at most one per job and never opens a socket."""
    import socket

    ply = addon.ply
    rt = addon.runtime.RUNTIME
    s = bpy.context.scene.distillery
    s.prompt = "a big cloud"
    big = [gaussians(ply, 100_000, seed=i) for i in range(2)]
    server.snapshots = [ply.write_gaussians(None, b) for b in big]
    server.script = lambda job_id, cfg: [*server.default_script(job_id, cfg)[:-2], {"type": "_wait"}]
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_id and addon.scene_sync.find_object(s.job_id))

    def no_network(*args, **kwargs):
        raise AssertionError("the pump touched the network")

    main = threading.main_thread()
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: no_network() if threading.current_thread()
                        is main else real_connect(self, *a))
    for i in range(20):
        rt.mailbox.post_geometry(s.job_id, {"kind": "gaussians", "payload": big[i % 2], "step": i, "final": False})
        addon.runtime.pump()
    obj = addon.scene_sync.find_object(s.job_id)
    assert obj[addon.scene_sync.STEP_KEY] == 19 and len(obj.data.vertices) == 100_000
    server.gate.set()


def _mesh_ply(ply, n_side: int, z: float, seed: int = 0) -> bytes:
    """A coloured grid of n_side x n_side vertices at height z, two triangles per cell."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-0.4, 0.4, n_side), np.linspace(-0.4, 0.4, n_side))
    verts = np.stack([u.ravel(), v.ravel(), np.full(u.size, z)], axis=1).astype(np.float32)
    idx = np.arange(n_side * n_side).reshape(n_side, n_side)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int32)
    colors = rng.uniform(0, 1, (len(verts), 3)).astype(np.float32)
    return ply.write_mesh(None, verts, faces, colors)


def test_a_mesh_job_ends_with_its_final_mesh_replacing_the_snapshots(addon, presets_payload, tmp_path):
    """Mesh snapshots update one mesh object; the result (kind "mesh") replaces them with the final mesh."""
    ply = addon.ply
    snaps = [_mesh_ply(ply, 6 + 2 * i, 0.1 * i, seed=i) for i in range(2)]
    final = _mesh_ply(ply, 15, 0.5, seed=7)
    srv = FakeServer(presets_payload, snaps, final, kind="mesh")
    rt = addon.runtime.RUNTIME
    rt.use_session_factory(lambda: srv.session_class())
    token = tmp_path / "token"
    token.write_text("secret\n")
    p = prefs(addon)
    p.mode, p.url, p.token_file = "CONNECT", "http://127.0.0.1:9", str(token)
    bpy.ops.distillery.backend_start()
    pump_until(addon, lambda: rt.view.state == "alive")
    s = bpy.context.scene.distillery
    s.prompt = "a lamp"
    bpy.ops.distillery.generate()
    pump_until(addon, lambda: s.job_state == "succeeded")
    objs = [o for o in bpy.data.objects if o.get(addon.scene_sync.JOB_KEY) == s.job_id]
    assert len(objs) == 1  # the snapshots' object, now holding the final mesh
    obj = objs[0]
    verts, faces, _ = ply.read_mesh(final)
    assert obj[addon.scene_sync.KIND_KEY] == "mesh" and obj[addon.scene_sync.STATE_KEY] == "succeeded"
    assert (len(obj.data.vertices), len(obj.data.polygons)) == (len(verts), len(faces)) == (225, 392)
    co = np.empty(len(verts) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    np.testing.assert_array_equal(co.reshape(-1, 3), verts)
    assert s.job_kind == "mesh" and s.job_count == 225 and "a mesh of 225 vertices" in s.job_message
    assert s.history[-1].kind == "mesh" and not addon.panels.problems(bpy.context)
    # Re-import downloads the final asset again as a mesh
    assert bpy.ops.distillery.history(action="REIMPORT", index=len(s.history) - 1) == {"FINISHED"}
    pump_until(addon, lambda: any(o.get(addon.scene_sync.JOB_KEY) == s.job_id + ":reimport" for o in bpy.data.objects))
    copy = next(o for o in bpy.data.objects if o.get(addon.scene_sync.JOB_KEY) == s.job_id + ":reimport")
    assert copy.type == "MESH" and len(copy.data.polygons) == 392
