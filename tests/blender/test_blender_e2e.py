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
