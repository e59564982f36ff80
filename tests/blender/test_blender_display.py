"""The splat display with the real Blender API: what an artist sees matches the Gaussians.

Each test names the defect it guards against: constant-alpha facets and holes (Cycles), colours that miss the
sRGB -> linear step or become a palette (Workbench), a view transform that shifts colours without a word, a
0-vertex snapshot or PLY, imports on the main thread, and exports that ignore the object's transform.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
import pytest
from conftest import pump_until

SH_C0 = 0.28209479177387814


def one_gaussian(ply, sigma=(0.10, 0.05, 0.03), angle=0.6, opacity=0.9, color=(0.2, 0.5, 0.8)) -> dict:
    """A single Gaussian at the origin, rotated by `angle` about +Y (it tilts in the camera's image plane)."""
    a = {k: np.zeros(1, np.float32) for k in ply.gaussian_names(0)}
    for i, c in enumerate(color):
        a[f"f_dc_{i}"][:] = (c - 0.5) / SH_C0
    a["opacity"][:] = math.log(opacity / (1 - opacity))
    for i, s in enumerate(sigma):
        a[f"scale_{i}"][:] = math.log(s)
    a["rot_0"][:], a["rot_2"][:] = math.cos(angle / 2), math.sin(angle / 2)
    return a


def ortho_camera(scene, scale: float = 0.8):
    """An orthographic camera on -Y looking at +Y: image x is world +X, image up is world +Z."""
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.data.type = "ORTHO"
    cam.data.ortho_scale = scale
    cam.location = (0.0, -3.0, 0.0)
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.camera = cam
    return cam


def render(scene, engine: str, path: str, size: int = 48) -> np.ndarray:
    """[H, W, 4] straight RGBA with row 0 at the top (8-bit PNG values, sRGB-encoded colour)."""
    r = scene.render
    r.engine = engine
    r.resolution_x = r.resolution_y = size
    r.resolution_percentage = 100
    r.film_transparent = True
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    r.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path)
    px = np.array(img.pixels[:], dtype=np.float64).reshape(size, size, 4)[::-1]
    bpy.data.images.remove(img)
    return px


def expected_alpha(a, size: int, scale: float) -> np.ndarray:
    """opacity exp(-1/2 x^T Sigma_xz^-1 x) at pixel centres: the Gaussian's marginal in the image plane, which
    equals its maximum along each (orthographic) ray."""
    q = np.array([a[f"rot_{i}"][0] for i in range(4)], float)
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    s = np.exp([a[f"scale_{i}"][0] for i in range(3)])
    cov = rot @ np.diag(s**2) @ rot.T
    cov2 = cov[np.ix_([0, 2], [0, 2])]
    px = (np.arange(size) + 0.5) / size * scale - scale / 2
    gx, gz = np.meshgrid(px, -px)  # row 0 is the top: world +Z
    d = np.stack([gx, gz], -1)
    m = np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov2), d)
    return (1 / (1 + math.exp(-a["opacity"][0]))) * np.exp(-0.5 * m)


def test_cycles_splat_has_the_gaussian_falloff_counted_once(addon, tmp_path):
    """Defect: a constant-alpha 1.5-sigma ico sphere (facets, a hard edge, front and back faces both
    blending). Fix: 3-sigma proxy, alpha from the ray's closest approach, front faces only."""
    ss, ply = addon.scene_sync, addon.ply
    scene = bpy.context.scene
    a = one_gaussian(ply)
    ss.apply_snapshot(scene, "job-f", "gaussians", a, name="g", placement={"location": (0, 0, 0)})
    ortho_camera(scene)
    scene.view_settings.view_transform = "Standard"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.filter_width = 0.01  # one sample position per pixel centre: compare with the analytic value
    scene.cycles.use_denoising = False
    px = render(scene, "CYCLES", str(tmp_path / "falloff.png"))
    want = expected_alpha(a, 48, 0.8)
    err = np.abs(px[..., 3] - want)
    assert err.max() < 0.03, err.max()  # constant alpha would be off by up to the opacity (0.9) at the rim
    assert abs(px[..., 3].max() - 0.9) < 0.02  # the centre is the opacity, not 1 - (1 - 0.9)^2 (two faces)
    # colour: emitted in linear, shown under Standard as the backend's display colour
    core = px[..., 3] > 0.5
    np.testing.assert_allclose(px[core][:, :3].mean(axis=0), (0.2, 0.5, 0.8), atol=0.02)


def test_workbench_solid_view_shows_each_gaussians_colour(addon, tmp_path):
    """Defect: a 27-colour palette in Solid view. Fix: an attribute colour (`distillery_color`, linear)
    that Workbench's Attribute colouring shows."""
    ss, ply, display = addon.scene_sync, addon.ply, addon.display
    scene = bpy.context.scene
    colours = [(0.13, 0.62, 0.31), (0.85, 0.27, 0.55)]
    for i, (c, x) in enumerate(zip(colours, (-0.2, 0.2), strict=True)):
        obj = ss.apply_snapshot(scene, f"job-w{i}", "gaussians", one_gaussian(ply, (0.05, 0.05, 0.05), 0.0, 0.99, c),
                                name="g", placement={"location": (x, 0, 0)})
        display.set_display(obj, "camera")
        assert obj.data.color_attributes.active_color_name == display.COLOR_ATTRIBUTE
    ortho_camera(scene)
    scene.view_settings.view_transform = "Standard"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "VERTEX"  # "Attribute" in the UI
    px = render(scene, "BLENDER_WORKBENCH", str(tmp_path / "wb.png"))
    for c, col in zip(colours, (18, 30), strict=True):  # pixel columns of x = -0.2 and +0.2
        np.testing.assert_allclose(px[24, col, :3], c, atol=0.01)


def test_camera_facing_quads_are_sorted_back_to_front(addon):
    """EEVEE blends faces in their order: one quad per Gaussian, the farthest from the camera first."""
    ss, ply, display = addon.scene_sync, addon.ply, addon.display
    scene = bpy.context.scene
    rng = np.random.default_rng(0)
    a = {k: np.zeros(50, np.float32) for k in ply.gaussian_names(0)}
    a["x"], a["y"], a["z"] = (rng.uniform(-0.3, 0.3, (3, 50))).astype(np.float32)
    a["opacity"][:] = 2.0
    a["rot_0"][:] = 1.0
    for i in range(3):
        a[f"scale_{i}"][:] = math.log(0.02)
    obj = ss.apply_snapshot(scene, "job-q", "gaussians", a, name="q", placement={"location": (0, 0, 0)})
    display.set_display(obj, "camera")
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.4, -2.0, 0.7)
    scene.camera = cam
    dg = bpy.context.evaluated_depsgraph_get()
    dg.update()
    me = obj.evaluated_get(dg).data
    quads = len(me.polygons)
    assert quads == 50
    centres = np.empty(quads * 3, np.float32)
    me.polygons.foreach_get("center", centres)
    dist = np.linalg.norm(centres.reshape(-1, 3) - np.array(cam.location), axis=1)
    assert (np.diff(dist) <= 1e-5).all()  # back to front
    normals = np.empty(quads * 3, np.float32)
    me.polygons.foreach_get("normal", normals)
    to_cam = np.array(cam.location) - centres.reshape(-1, 3)
    facing = np.abs((normals.reshape(-1, 3) * to_cam).sum(1)) / np.linalg.norm(to_cam, axis=1)
    assert facing.min() > 0.99  # isotropic Gaussians: each quad faces the camera


def test_view_transform_notice_never_changes_the_scene_silently(addon):
    """Defect: AgX (Blender's default) turns the blue mug cyan-grey without a word. Fix: the panel names it
    and offers Standard; nothing changes until the user presses the button."""
    ss, ply, display = addon.scene_sync, addon.ply, addon.display
    scene = bpy.context.scene
    scene.view_settings.view_transform = "AgX"
    scene.render.engine = "CYCLES"
    scene.cycles.transparent_max_bounces = 8
    ss.apply_snapshot(scene, "job-v", "gaussians", one_gaussian(ply), name="g")
    assert scene.view_settings.view_transform == "AgX"
    codes = [code for code, _ in display.render_notes(scene)]
    assert codes == ["VIEW_TRANSFORM", "TRANSPARENT_BOUNCES"]
    assert "Standard" in display.render_notes(scene)[0][1] and "AgX" in display.render_notes(scene)[0][1]
    assert bpy.ops.distillery.splat_settings(setting="VIEW_TRANSFORM") == {"FINISHED"}
    assert scene.view_settings.view_transform == "Standard"
    bpy.ops.distillery.splat_settings(setting="TRANSPARENT_BOUNCES")
    assert scene.cycles.transparent_max_bounces >= display.TRANSPARENT_BOUNCES
    assert display.render_notes(scene) == []


def test_zero_gaussians_give_an_empty_object_or_a_one_line_error(addon, tmp_path):
    """Defect: a 0-vertex snapshot or PLY raised a traceback (no position attribute on an empty mesh)."""
    ss, ply = addon.scene_sync, addon.ply
    scene = bpy.context.scene
    empty = {k: np.zeros(0, np.float32) for k in ply.gaussian_names(0)}
    obj = ss.apply_snapshot(scene, "job-z", "gaussians", ply.read_gaussians(ply.write_gaussians(None, empty)),
                            name="z")
    assert len(obj.data.vertices) == 0
    bpy.context.evaluated_depsgraph_get().update()
    ss.apply_snapshot(scene, "job-z", "gaussians", one_gaussian(ply), name="z")  # and it fills in later
    assert len(obj.data.vertices) == 1
    path = tmp_path / "empty.ply"
    ply.write_gaussians(path, empty)
    with pytest.raises(ply.PLYError, match="no Gaussians"):
        ss.import_gaussian_ply(scene, str(path))
    ss.apply_snapshot(scene, "job-z", "gaussians", ply.read_gaussians(ply.write_gaussians(None, empty)), name="z")
    with pytest.raises(ValueError, match="no Gaussians"):
        ss.export_gaussian_ply(obj, str(tmp_path / "out.ply"))


def test_import_reads_in_a_thread_and_the_pump_adds_the_object(addon, tmp_path):
    """Defect: a large PLY parsed on the main thread froze Blender. Fix: the operator posts the read to a
    worker; the pump creates the object; a bad file becomes one line in the panel."""
    ply = addon.ply
    scene = bpy.context.scene
    rng = np.random.default_rng(2)
    a = {k: rng.normal(size=300).astype(np.float32) for k in ply.gaussian_names(1)}
    path = tmp_path / "cloud.ply"
    ply.write_gaussians(path, a)
    assert bpy.ops.distillery.import_ply(filepath=str(path)) == {"FINISHED"}
    obj = pump_until(addon, lambda: bpy.data.objects.get("cloud"))
    back = addon.scene_sync.get_gaussians(obj.data)
    for k in a:
        np.testing.assert_array_equal(back[k], a[k], err_msg=k)
    assert "imported 300 Gaussians" in scene.distillery.job_message
    bad = tmp_path / "bad.ply"
    blob = bytearray(ply.write_gaussians(None, a))
    blob[-4:] = np.float32(np.nan).tobytes()  # the last rot_3 is NaN
    bad.write_bytes(bytes(blob))
    bpy.ops.distillery.import_ply(filepath=str(bad))
    pump_until(addon, lambda: "import failed" in scene.distillery.job_message)
    assert "rot_3" in scene.distillery.job_message and "\n" not in scene.distillery.job_message


def test_export_applies_the_objects_transform(addon, tmp_path):
    """Defect: Export wrote the local arrays, so a moved, turned or scaled object came back where it started."""
    ss, ply = addon.scene_sync, addon.ply
    scene = bpy.context.scene
    a = one_gaussian(ply)
    obj = ss.apply_snapshot(scene, "job-e", "gaussians", a, name="e",
                            placement={"location": (1.0, 2.0, 3.0), "rotation_z": 0.7, "scale": 2.0})
    bpy.context.view_layer.update()
    ss.export_gaussian_ply(obj, str(tmp_path / "world.ply"))
    back = ply.read_gaussians(tmp_path / "world.ply")
    np.testing.assert_allclose([back["x"][0], back["y"][0], back["z"][0]], (1.0, 2.0, 3.0), atol=1e-6)
    m = np.array(obj.matrix_world)[:3, :3]
    q = np.array([a[f"rot_{i}"][0] for i in range(4)])
    sig = lambda arr, qq: _cov(qq, np.exp([arr[f"scale_{i}"][0] for i in range(3)]))  # noqa: E731
    np.testing.assert_allclose(sig(back, [back[f"rot_{i}"][0] for i in range(4)]), m @ sig(a, q) @ m.T, atol=1e-6)
    ss.export_gaussian_ply(obj, str(tmp_path / "local.ply"), apply_transform=False)
    assert ply.read_gaussians(tmp_path / "local.ply")["x"][0] == 0.0


def _cov(q, s) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    return r @ np.diag(np.asarray(s) ** 2) @ r.T
