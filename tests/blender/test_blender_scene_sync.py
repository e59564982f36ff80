"""scene_sync with the real Blender API: Gaussian objects from PLY snapshots (values equal to the file's),
in-place updates, mesh objects, the Geometry Nodes display, renders, PLY import/export."""

from __future__ import annotations

import bpy
import numpy as np
import pytest


def gaussians(ply, n: int, degree: int = 0, seed: int = 0, color=(0.9, 0.1, 0.1)) -> dict:
    """A ball of n Gaussians in the 3DGS layout, all of one colour, fairly opaque."""
    rng = np.random.default_rng(seed)
    a = {k: np.zeros(n, np.float32) for k in ply.gaussian_names(degree)}
    p = rng.normal(size=(n, 3))
    p = 0.35 * p / np.linalg.norm(p, axis=1, keepdims=True) * rng.uniform(0.6, 1.0, (n, 1))
    a["x"], a["y"], a["z"] = p.T.astype(np.float32)
    for i, c in enumerate(color):
        a[f"f_dc_{i}"][:] = (c - 0.5) / 0.28209479177387814
    for k in a:
        if k.startswith("f_rest_"):
            a[k][:] = rng.normal(scale=0.1, size=n)
    a["opacity"][:] = rng.uniform(1.0, 4.0, n)
    for i in range(3):
        a[f"scale_{i}"][:] = np.log(rng.uniform(0.02, 0.05, n))
    q = rng.normal(size=(n, 4))
    for i in range(4):
        a[f"rot_{i}"][:] = q[:, i] * 3.0  # unnormalised on purpose
    return a


def test_snapshot_creates_then_updates_one_object_in_place(addon):
    ss, ply = addon.scene_sync, addon.ply
    scene = bpy.context.scene
    scene.cursor.location = (1.0, 2.0, 3.0)
    blob = ply.write_gaussians(None, gaussians(ply, 500, degree=1))
    arrays = ply.read_gaussians(blob)
    obj = ss.apply_snapshot(scene, "job-a", "gaussians", arrays, name=ss.object_name("a  blue\tmug"), step=100)
    assert obj.name == "a blue mug" and tuple(obj.location) == (1.0, 2.0, 3.0)
    assert obj.users_collection[0].name == "Distillery"
    assert obj[ss.JOB_KEY] == "job-a" and obj[ss.STEP_KEY] == 100
    assert len(obj.data.vertices) == 500 and len(obj.data.polygons) == 0
    # every attribute equals the file's value, and the PLY names are the attribute names
    back = ss.get_gaussians(obj.data)
    assert list(back) == ply.gaussian_names(1)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    for k in ("opacity", "f_rest_8", "rot_0"):
        attr = obj.data.attributes[k]
        assert (attr.domain, attr.data_type) == ("POINT", "FLOAT")

    mesh_name = obj.data.name
    newer = gaussians(ply, 500, degree=1, seed=1)
    obj2 = ss.apply_snapshot(scene, "job-a", "gaussians", newer, name="ignored", step=200)
    assert obj2 == obj and obj.data.name == mesh_name and len(bpy.data.objects) == 1
    np.testing.assert_array_equal(ss.get_gaussians(obj.data)["x"], newer["x"])
    # idempotent: the same snapshot twice changes nothing
    ss.apply_snapshot(scene, "job-a", "gaussians", newer, name="ignored", step=200)
    assert len(bpy.data.objects) == 1 and len(bpy.data.meshes) == 1
    # a count change and an SH degree change rebuild the geometry, still one object
    smaller = gaussians(ply, 123, degree=0, seed=2)
    ss.apply_snapshot(scene, "job-a", "gaussians", smaller, name="ignored", step=300)
    back = ss.get_gaussians(obj.data)
    assert len(obj.data.vertices) == 123 and list(back) == ply.gaussian_names(0)
    assert "f_rest_0" not in obj.data.attributes
    for k, v in smaller.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_user_moves_and_deletions_are_respected(addon):
    ss, ply = addon.scene_sync, addon.ply
    scene = bpy.context.scene
    obj = ss.apply_snapshot(scene, "job-b", "gaussians", gaussians(ply, 50), name="duck",
                            placement={"location": (0, 0, 0), "rotation_z": 0.5, "scale": 2.0})
    assert obj.rotation_euler.z == pytest.approx(0.5) and tuple(obj.scale) == (2.0, 2.0, 2.0)
    obj.location = (5, 5, 5)
    ss.apply_snapshot(scene, "job-b", "gaussians", gaussians(ply, 50, seed=3), name="duck",
                      placement={"location": (0, 0, 0)})
    assert tuple(obj.location) == (5, 5, 5)  # placement applies on creation only
    bpy.data.objects.remove(obj)
    again = ss.apply_snapshot(scene, "job-b", "gaussians", gaussians(ply, 50), name="duck")
    assert again.name.startswith("duck") and ss.find_object("job-b") == again


def test_mesh_snapshots_create_and_update_a_mesh(addon):
    ss, ply = addon.scene_sync, addon.ply
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    f = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    payload = ply.read_mesh(ply.write_mesh(None, v, f, c))
    obj = ss.apply_snapshot(bpy.context.scene, "job-m", "mesh", payload, name="tetra")
    me = obj.data
    assert (len(me.vertices), len(me.polygons)) == (4, 4)
    co = np.empty(12, np.float32)
    me.vertices.foreach_get("co", co)
    np.testing.assert_array_equal(co.reshape(4, 3), v)
    tri = np.empty(12, np.int32)
    me.polygons.foreach_get("vertices", tri)
    np.testing.assert_array_equal(tri.reshape(4, 3), f)
    col = np.empty(16, np.float32)
    me.color_attributes["Col"].data.foreach_get("color", col)
    np.testing.assert_allclose(col.reshape(4, 4)[:, :3], c)
    name = me.name
    ss.apply_snapshot(bpy.context.scene, "job-m", "mesh", (v * 2, f, None), name="tetra")
    me.vertices.foreach_get("co", co)
    np.testing.assert_array_equal(co.reshape(4, 3), v * 2)
    assert obj.data.name == name and len(bpy.data.objects) == 1
    assert obj.active_material.name == ss.MESH_MATERIAL


def test_geometry_nodes_show_one_splat_per_visible_gaussian(addon):
    ss, ply = addon.scene_sync, addon.ply
    a = gaussians(ply, 300)
    a["opacity"][:100] = -8.0  # alpha 0.0003: below the default Min Opacity, hidden
    obj = ss.apply_snapshot(bpy.context.scene, "job-g", "gaussians", a, name="g")
    dg = bpy.context.evaluated_depsgraph_get()
    dg.update()
    # instance scale is exp(scale) times Size (3 standard deviations by default)
    scales = sorted(float(np.prod(i.matrix_world.to_scale())) for i in dg.object_instances
                    if i.is_instance and i.parent and i.parent.name == obj.name)
    assert len(scales) == 200
    expect = sorted(float(np.prod(np.exp([a[f"scale_{k}"][j] for k in range(3)]) * 3.0)) for j in range(100, 300))
    np.testing.assert_allclose(scales, expect, rtol=1e-4)
    ss.set_display(obj, ellipsoids=False)
    dg.update()
    # points mode: no ellipsoid instances, one point cloud with a point per visible Gaussian
    kinds = [(i.object.type, len(i.object.data.points) if i.object.type == "POINTCLOUD" else 0)
             for i in dg.object_instances if i.is_instance and i.parent and i.parent.name == obj.name]
    assert kinds == [("POINTCLOUD", 200)]


def _input_id(obj, name: str) -> str:
    return next(i.identifier for i in obj.modifiers["Distillery"].node_group.interface.items_tree
                if getattr(i, "in_out", None) == "INPUT" and i.name == name)


def _render(engine: str, path: str, ellipsoids: bool = True) -> np.ndarray:
    scene = bpy.context.scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -2.0, 0.0)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = cam
    scene.render.engine = engine
    scene.render.resolution_x = scene.render.resolution_y = 64
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = 4
    else:  # Solid view: each Gaussian's colour attribute (Attribute colouring), on the camera-facing quads
        scene.display.shading.color_type = "VERTEX"
        for obj in scene.objects:
            if obj.get("distillery_kind") == "gaussians":
                obj.modifiers["Distillery"][_input_id(obj, "Camera Facing")] = True
                obj.update_tag()
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path)
    px = np.array(img.pixels[:], dtype=np.float32).reshape(64, 64, 4)
    bpy.data.images.remove(img)
    return px


@pytest.mark.parametrize("engine", ["BLENDER_WORKBENCH", "CYCLES"])
def test_renders_show_the_splat_colours(addon, tmp_path, engine):
    ss, ply = addon.scene_sync, addon.ply
    ss.apply_snapshot(bpy.context.scene, "job-r", "gaussians", gaussians(ply, 3000, color=(0.1, 0.2, 0.9)),
                      name="blue ball")
    px = _render(engine, str(tmp_path / f"{engine}.png"))
    covered = px[..., 3] > 0.5
    assert 200 < covered.sum() < 64 * 64  # a ball in the middle, not an empty or full frame
    rgb = px[covered][:, :3].mean(axis=0)
    assert rgb[2] > rgb[0] + 0.2 and rgb[2] > rgb[1], rgb  # blue, as generated


def test_ply_import_export_round_trip_and_blenders_own_importer(addon, tmp_path):
    ss, ply = addon.scene_sync, addon.ply
    a = gaussians(ply, 200, degree=3)
    src = tmp_path / "in.ply"
    ply.write_gaussians(src, a)
    obj = ss.import_gaussian_ply(bpy.context.scene, str(src))
    assert obj.name == "in" and len(obj.data.vertices) == 200
    out = tmp_path / "out.ply"
    assert ss.export_gaussian_ply(obj, str(out)) == 200
    assert out.read_bytes() == src.read_bytes()  # exact layout, byte for byte
    # Blender's own PLY importer reads our file with the same values under the same names
    bpy.ops.wm.ply_import(filepath=str(out))
    imported = bpy.context.selected_objects[0]
    for k in ("f_dc_0", "f_rest_44", "opacity", "scale_2", "rot_0"):
        v = np.empty(200, np.float32)
        imported.data.attributes[k].data.foreach_get("value", v)
        np.testing.assert_array_equal(v, a[k], err_msg=k)
    with pytest.raises(ply.PLYError):
        ss.import_gaussian_ply(bpy.context.scene, _bad(tmp_path))


def _bad(tmp_path) -> str:
    p = tmp_path / "bad.ply"
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9999999\nproperty float x\nend_header\n")
    return str(p)


def test_surface_points_lie_on_the_seed_mesh(addon):
    ss = addon.scene_sync
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(3.0, 0.0, 0.0))
    cube = bpy.context.active_object
    pts = ss.surface_points(cube, bpy.context.evaluated_depsgraph_get(), 500, seed=1)
    assert pts.shape == (500, 3)
    local = np.abs(pts - [3.0, 0.0, 0.0])
    np.testing.assert_allclose(local.max(axis=1), 1.0, atol=1e-5)  # on a face of the cube
    can, scale = ss.seed_points(cube, bpy.context.evaluated_depsgraph_get(), (3.0, 0.0, 0.0), 0.0, 100)
    assert len(can) == 100 and max(np.linalg.norm(can, axis=1)) == pytest.approx(0.5, abs=1e-3)
    assert scale == pytest.approx(np.sqrt(3) / 0.5, rel=0.1)
