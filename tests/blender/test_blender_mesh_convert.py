"""Convert to mesh with the real backend: a Gaussian object (a green ball of Gaussians, moved and turned) goes
to `distillery serve` as a PLY, the conversion job runs in its queue, and the textured GLB comes back as a new
mesh object with the Gaussian object's transform and a green texture."""

from __future__ import annotations

import importlib

import bpy
import numpy as np
import pytest
from conftest import BACKEND_PYTHON, prefs, pump_until

GREEN = (0.2, 0.7, 0.3)


def green_ball(ply, n: int = 600) -> dict:
    """3DGS arrays of opaque green Gaussians filling a ball of radius 0.4."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(n, 3))
    xyz = d / np.linalg.norm(d, axis=1, keepdims=True) * 0.4 * rng.random((n, 1)) ** (1 / 3)
    arrays = {k: np.zeros(n, np.float32) for k in ply.gaussian_names(0)}
    arrays.update(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], opacity=np.full(n, 2.2), rot_0=np.ones(n))
    for i in range(3):
        arrays[f"scale_{i}"] = np.full(n, np.log(0.05))
        arrays[f"f_dc_{i}"] = np.full(n, (GREEN[i] - 0.5) / 0.28209479177387814)
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def test_convert_to_mesh_imports_the_backends_textured_glb(addon, tmp_path):
    rt = addon.runtime.RUNTIME
    scene = bpy.context.scene
    path = tmp_path / "ball.ply"
    addon.ply.write_gaussians(str(path), green_ball(addon.ply))
    src = addon.scene_sync.import_gaussian_ply(scene, str(path), name="ball")
    src.location = (2.0, 0.0, 1.0)
    src.rotation_euler = (0.0, 0.0, 0.5)
    bpy.context.view_layer.objects.active = src
    assert bpy.ops.distillery.convert_to_mesh.poll()

    # Without a backend the operator says so (an ERROR report raises in module mode) and starts nothing.
    with pytest.raises(RuntimeError, match="The backend is not running"):
        bpy.ops.distillery.convert_to_mesh()

    p = prefs(addon)
    p.mode, p.python_path, p.data_dir = "LAUNCH", BACKEND_PYTHON, str(tmp_path / "data")
    try:
        assert bpy.ops.distillery.backend_start() == {"FINISHED"}
        pump_until(addon, lambda: rt.view.state == "alive", timeout=180)
        assert bpy.ops.distillery.convert_to_mesh() == {"FINISHED"}
        obj = pump_until(addon, lambda: bpy.data.objects.get("ball mesh"), timeout=180,
                         why=lambda: scene.distillery.job_message)
    finally:
        rt.link.stop()
        pump_until(addon, lambda: rt.view.state == "stopped", timeout=60)
        addon.properties.sync_presets([])  # later tests start without the backend's presets

    assert obj.type == "MESH" and len(obj.data.polygons) > 100
    mesh_convert = importlib.import_module(f"{addon.pkg}.mesh_convert")
    assert obj.get(mesh_convert.MESH_OF_KEY) == "ball" and obj.get("distillery_kind") == "mesh"
    assert obj.name in addon.scene_sync.ensure_collection(scene).objects
    # The Gaussians' transform: the ball's centre lands where the Gaussian object stands.
    world = np.array([tuple(obj.matrix_world @ v.co) for v in obj.data.vertices])
    assert np.allclose((world.min(0) + world.max(0)) / 2, (2.0, 0.0, 1.0), atol=0.05)
    size = world.max(0) - world.min(0)  # the ball of centres (radius 0.4) plus the Gaussians' own extent
    assert np.all((size > 0.8) & (size < 1.0)) and size.max() - size.min() < 0.05, size
    # Its material samples the baked texture, which is the Gaussians' green.
    nodes = obj.active_material.node_tree.nodes
    images = [n.image for n in nodes if n.type == "TEX_IMAGE" and n.image is not None]
    assert len(images) == 1 and tuple(images[0].size) == (512, 512)
    assert images[0].colorspace_settings.name == "sRGB"  # a byte image: `pixels` holds its stored values / 255
    px = np.array(images[0].pixels[:], dtype=np.float32).reshape(512, 512, 4)[..., :3]
    assert np.abs(np.median(px.reshape(-1, 3), axis=0) - GREEN).max() < 0.05
    assert "made from ball" in scene.distillery.job_message
