"""End to end with the real backend: the preferences' launcher starts `distillery serve` with the backend's
interpreter (.venv, as a user points the add-on at a Python that has the backend), Generate is pressed through
the operator, the pump is driven by hand (timers never fire in module mode), and the finished Gaussian object
in the scene carries exactly the backend's final PLY; a Workbench render of it shows a blue mug."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from conftest import BACKEND_PYTHON, prefs, pump_until
from test_blender_scene_sync import _render

STEPS = 40


def test_generate_with_the_real_backend_ends_with_its_final_asset_in_the_scene(addon, tmp_path):
    rt = addon.runtime.RUNTIME
    p = prefs(addon)
    data = tmp_path / "data"
    p.mode, p.python_path, p.data_dir = "LAUNCH", BACKEND_PYTHON, str(data)
    try:
        assert bpy.ops.distillery.backend_start() == {"FINISHED"}
        # worker start imports torch: allow for a slow, shared machine
        pump_until(addon, lambda: rt.view.state == "alive" and addon.properties.find_preset("gaussian-sds-quick"),
                   timeout=180)
        scene = bpy.context.scene
        s = scene.distillery
        s.preset = "gaussian-sds-quick"
        s.prompt = "a blue mug"
        s.seed, s.steps = 3, STEPS
        assert bpy.ops.distillery.generate() == {"FINISHED"}
        pump_until(addon, lambda: s.job_state in ("succeeded", "failed", "cancelled"), timeout=600)
        assert s.job_state == "succeeded", (s.job_message, s.job_error_message)

        # The object in the scene is the backend's final asset, attribute for attribute.
        final = Path(data) / "jobs" / s.job_id / "asset.ply"
        assert final.is_file(), sorted(p.name for p in final.parent.iterdir())
        want = addon.ply.read_gaussians(final.read_bytes())
        obj = addon.scene_sync.find_object(s.job_id)
        assert obj is not None and obj.name == "a blue mug"
        stored = addon.scene_sync.get_gaussians(obj.data)
        assert len(obj.data.vertices) == len(want["x"]) > 0
        for k, v in want.items():
            np.testing.assert_array_equal(stored[k], v, err_msg=k)
        assert s.job_step == s.job_steps == STEPS

        # Rendered in Blender, it is a blue object in the middle of the frame.
        px = _render("BLENDER_WORKBENCH", str(tmp_path / "mug.png"))
        covered = px[..., 3] > 0.5
        assert 100 < covered.sum() < 64 * 64, covered.sum()
        rgb = px[covered][:, :3].mean(axis=0)
        assert rgb[2] > rgb[0] and rgb[2] > rgb[1], rgb
    finally:
        rt.link.stop()
        pump_until(addon, lambda: rt.view.state == "stopped", timeout=60)


MESH_STEPS = 30
MESH_SETTINGS = {"output.turntable_frames": 0, "output.evaluate": False, "output.preview_every": 0,
                 "output.checkpoint_every": 0, "stages.0.representation.export_resolution": 48,
                 "stages.0.representation.snapshot_resolution": 24}


def test_a_dmtet_job_from_the_real_backend_ends_with_its_final_mesh_in_the_scene(addon, tmp_path):
    """magic3d-quick (a coarse NeRF, then a DMTet mesh) for a few steps: the mesh snapshots and then the final
    mesh reach the scene, and the object holds exactly the backend's asset.ply."""
    rt = addon.runtime.RUNTIME
    p = prefs(addon)
    data = tmp_path / "data"
    p.mode, p.python_path, p.data_dir = "LAUNCH", BACKEND_PYTHON, str(data)
    try:
        assert bpy.ops.distillery.backend_start() == {"FINISHED"}
        pump_until(addon, lambda: rt.view.state == "alive" and addon.properties.find_preset("magic3d-quick"),
                   timeout=180)
        scene = bpy.context.scene
        s = scene.distillery
        s.preset, s.prompt, s.seed, s.steps = "magic3d-quick", "a blue mug", 0, MESH_STEPS
        group = addon.properties.preset_values(scene, s.preset)
        for key, value in MESH_SETTINGS.items():
            ident = addon.properties.setting_ident(s.preset, key)
            assert ident is not None, key
            setattr(group, ident, value)
        assert bpy.ops.distillery.generate() == {"FINISHED"}
        pump_until(addon, lambda: s.job_state in ("succeeded", "failed", "cancelled"), timeout=600)
        assert s.job_state == "succeeded", (s.job_message, s.job_error_message)

        final = Path(data) / "jobs" / s.job_id / "asset.ply"
        verts, faces, _ = addon.ply.read_mesh(final.read_bytes())
        objs = [o for o in bpy.data.objects if o.get(addon.scene_sync.JOB_KEY) == s.job_id]
        assert len(objs) == 1, [o.name for o in objs]  # the final mesh replaced the snapshots in one object
        obj = objs[0]
        assert obj[addon.scene_sync.KIND_KEY] == "mesh" and obj[addon.scene_sync.STATE_KEY] == "succeeded"
        assert (len(obj.data.vertices), len(obj.data.polygons)) == (len(verts), len(faces))
        assert len(faces) > 100
        co = np.empty(len(verts) * 3, np.float32)
        obj.data.vertices.foreach_get("co", co)
        np.testing.assert_array_equal(co.reshape(-1, 3), verts)
        assert s.job_kind == "mesh" and not addon.panels.problems(bpy.context)
        assert "asset.glb" in rt.session.job(s.job_id)["artifacts"]  # listed and served
        assert rt.session.handle(s.job_id).download("asset.glb")[:4] == b"glTF"
    finally:
        rt.link.stop()
        pump_until(addon, lambda: rt.view.state == "stopped", timeout=60)
