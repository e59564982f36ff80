"""The only module that writes `bpy.data` heavily: the Gaussian and mesh objects of jobs and imports.

Gaussians live on the vertices of a faceless mesh, one FLOAT point attribute per 3DGS PLY property with the
PLY's own name (positions in `position`), so attribute values are exactly the file's. How they look (the
Geometry Nodes group and the splat materials) is display.py's business; this module keeps the objects.

Everything is looked up by name or by the job id kept in `obj["distillery_job"]` on every call: nothing here
holds a `bpy` reference across calls (undo and file loads invalidate them). Arrays are written with float32
`foreach_set`; a snapshot with the same count updates the mesh in place.
"""

from __future__ import annotations

import bpy
import numpy as np

from . import display
from .client import convert, splat, transform
from .client import ply as plyio

COLLECTION = "Distillery"
NODE_GROUP = display.NODE_GROUP
MESH_MATERIAL = display.MESH_MATERIAL
set_display = display.set_display  # the display's settings live in display.py
JOB_KEY = "distillery_job"
KIND_KEY = "distillery_kind"
STEP_KEY = "distillery_step"
STATE_KEY = "distillery_state"
MAX_NAME = 60


# ---------------------------------------------------------------------------------------------- lookups


def ensure_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    """The "Distillery" collection, created and linked under the scene's master collection when missing."""
    coll = bpy.data.collections.get(COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION)
    if scene.collection.children.get(coll.name) is None and coll.name not in _all_children(scene.collection):
        scene.collection.children.link(coll)
    return coll


def _all_children(coll: bpy.types.Collection) -> set[str]:
    names = set()
    for child in coll.children:
        names.add(child.name)
        names |= _all_children(child)
    return names


def find_object(job_id: str) -> bpy.types.Object | None:
    """The object that shows job `job_id`, or None (the user may have deleted it)."""
    for obj in bpy.data.objects:
        if obj.get(JOB_KEY) == job_id:
            return obj
    return None


def object_name(prompt: str) -> str:
    """An object name from a prompt: "a blue mug" -> "a blue mug" (shortened; Blender adds .001 on clashes)."""
    text = " ".join(prompt.split()) or "Distillery"
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 3].rstrip() + "..."


# ---------------------------------------------------------------------------------------------- objects


def create_object(scene: bpy.types.Scene, job_id: str, name: str, kind: str,
                  location: tuple[float, float, float] | None = None, rotation_z: float = 0.0,
                  scale: float = 1.0) -> bpy.types.Object:
    """A new empty Gaussian or mesh object for job `job_id` in the "Distillery" collection, at `location`
    (default: the 3D cursor)."""
    if kind not in ("gaussians", "mesh"):
        raise ValueError(f"unknown snapshot kind {kind!r}; expected gaussians or mesh")
    mesh = bpy.data.meshes.new(name)
    obj = bpy.data.objects.new(name, mesh)
    ensure_collection(scene).objects.link(obj)
    obj.location = tuple(scene.cursor.location) if location is None else location
    obj.rotation_euler = (0.0, 0.0, rotation_z)
    obj.scale = (scale, scale, scale)
    obj[JOB_KEY] = job_id
    obj[KIND_KEY] = kind
    if kind == "gaussians":
        display.attach(obj)
    else:
        mesh.materials.append(display.ensure_mesh_material())
    return obj


def set_gaussians(mesh: bpy.types.Mesh, arrays: dict[str, np.ndarray]) -> None:
    """Write 3DGS arrays (PLY names -> float32 [N]) onto a faceless mesh: x y z as positions, every other
    property as a FLOAT point attribute of the same name, plus the display attributes of client/splat.py
    (taken from `arrays` when the reader thread computed them, else computed here). Same count: in place;
    else the geometry is rebuilt."""
    arrays = dict(arrays)
    shown = {k: arrays.pop(k) for k in splat.NAMES if k in arrays}
    n = len(arrays["x"])
    names = [k for k in arrays if k not in ("x", "y", "z")]
    if len(mesh.vertices) != n or len(mesh.polygons) or len(mesh.edges):
        mesh.clear_geometry()
        mesh.vertices.add(n)
    if n == 0:  # e.g. every Gaussian pruned: an empty object (a mesh without vertices has no position array)
        display.name_active_color(mesh)
        mesh.update()
        return
    if len(shown) != len(splat.NAMES):
        shown = splat.display_arrays(arrays)
    xyz = np.empty((n, 3), dtype=np.float32)  # [N, 3]
    xyz[:, 0], xyz[:, 1], xyz[:, 2] = arrays["x"], arrays["y"], arrays["z"]
    mesh.attributes["position"].data.foreach_set("vector", xyz.ravel())
    wanted = set(names)
    for attr in list(mesh.attributes):
        if attr.name in wanted and (attr.domain != "POINT" or attr.data_type != "FLOAT"):
            mesh.attributes.remove(attr)
    for name in names:
        attr = mesh.attributes.get(name) or mesh.attributes.new(name, "FLOAT", "POINT")
        attr.data.foreach_set("value", np.ascontiguousarray(arrays[name], dtype=np.float32))
    for name, (data_type, prop) in _DISPLAY_TYPES.items():
        attr = mesh.attributes.get(name)
        if attr is not None and (attr.domain != "POINT" or attr.data_type != data_type):
            mesh.attributes.remove(attr)
            attr = None
        attr = attr or mesh.attributes.new(name, data_type, "POINT")
        attr.data.foreach_set(prop, np.ascontiguousarray(shown[name], dtype=np.float32).ravel())
    stale = [a.name for a in mesh.attributes if _is_ply_name(a.name) and a.name not in wanted]
    for name in stale:  # e.g. f_rest_* after an SH degree change
        mesh.attributes.remove(mesh.attributes[name])
    display.name_active_color(mesh)
    mesh.update()


_DISPLAY_TYPES = {splat.ALPHA: ("FLOAT", "value"), splat.COLOR: ("FLOAT_COLOR", "color"),
                  splat.ROTATION: ("QUATERNION", "value"), splat.SIGMA: ("FLOAT_VECTOR", "vector")}


def _is_ply_name(name: str) -> bool:
    return name in ("nx", "ny", "nz", "opacity") or name.startswith(("f_dc_", "f_rest_", "scale_", "rot_"))


def get_gaussians(mesh: bpy.types.Mesh) -> dict[str, np.ndarray]:
    """The 3DGS arrays stored on `mesh`, in PLY order (inverse of set_gaussians)."""
    n = len(mesh.vertices)
    xyz = np.empty(n * 3, dtype=np.float32)
    if n:
        mesh.attributes["position"].data.foreach_get("vector", xyz)
    xyz = xyz.reshape(n, 3)
    out = {"x": xyz[:, 0].copy(), "y": xyz[:, 1].copy(), "z": xyz[:, 2].copy()}
    for attr in mesh.attributes:
        if _is_ply_name(attr.name) and attr.domain == "POINT" and attr.data_type == "FLOAT":
            v = np.empty(n, dtype=np.float32)
            attr.data.foreach_get("value", v)
            out[attr.name] = v
    degree = plyio.sh_degree_of(list(out))
    return {k: out[k] for k in plyio.gaussian_names(degree) if k in out}


def set_mesh(mesh: bpy.types.Mesh, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> None:
    """Write a triangle mesh (verts [N, 3], faces [F, 3], colours [N, 4] or None). Same counts: positions and
    colours in place; else rebuilt with foreach_set (no from_pydata, no Python loops)."""
    verts = np.ascontiguousarray(verts, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    n, f = len(verts), len(faces)
    same = len(mesh.vertices) == n and len(mesh.polygons) == f
    if same and f:
        current = np.empty(f * 3, dtype=np.int32)
        mesh.loops.foreach_get("vertex_index", current)
        same = bool(np.array_equal(current, faces.ravel()))
    if not same:
        mesh.clear_geometry()
        mesh.vertices.add(n)
        mesh.loops.add(3 * f)
        mesh.polygons.add(f)
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * f, 3, dtype=np.int32))
    mesh.attributes["position"].data.foreach_set("vector", verts.ravel())
    if colors is not None:
        col = mesh.color_attributes.get("Col") or mesh.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
        rgba = np.ones((n, 4), dtype=np.float32)
        rgba[:, : colors.shape[1]] = colors
        col.data.foreach_set("color", rgba.ravel())
        mesh.color_attributes.active_color = col
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    mesh.update(calc_edges=not same)


def apply_snapshot(scene: bpy.types.Scene, job_id: str, kind: str, payload, *, name: str, step: int = 0,
                   placement: dict | None = None, state: str = "running") -> bpy.types.Object:
    """Create or update the object of job `job_id` from a decoded snapshot. `payload`: Gaussian arrays, or
    (verts, faces, colours) for a mesh. `placement` (location, rotation_z, scale) applies on creation only, so
    a user who moved the object keeps it where they put it."""
    obj = find_object(job_id)
    if obj is not None and (obj.type != "MESH" or obj.get(KIND_KEY) != kind):
        obj[JOB_KEY] = ""  # a different kind now (e.g. a mesh stage after Gaussians): keep the old, start anew
        obj = None
    if obj is None:
        placement = placement or {}
        obj = create_object(scene, job_id, name, kind, placement.get("location"),
                            placement.get("rotation_z", 0.0), placement.get("scale", 1.0))
    if kind == "gaussians":
        set_gaussians(obj.data, payload)
    else:
        set_mesh(obj.data, *payload)
    obj[STEP_KEY] = int(step)
    obj[STATE_KEY] = state
    return obj


def remove_objects(job_id: str) -> int:
    """Delete the objects (and their meshes) of a job; returns how many."""
    count = 0
    for obj in [o for o in bpy.data.objects if o.get(JOB_KEY) == job_id]:
        mesh = obj.data if obj.type == "MESH" else None
        bpy.data.objects.remove(obj)
        if mesh is not None and mesh.users == 0:
            bpy.data.meshes.remove(mesh)
        count += 1
    return count


# ---------------------------------------------------------------------------------------------- files


def import_gaussian_ply(scene: bpy.types.Scene, path: str, name: str | None = None,
                        job_id: str = "") -> bpy.types.Object:
    """A Gaussian object from a 3DGS PLY file, at the 3D cursor, read on this thread (scripts and tests; the
    Import operator reads in a worker thread and calls import_arrays from the pump)."""
    import os

    arrays = read_import(path)
    return import_arrays(scene, arrays, name or os.path.splitext(os.path.basename(path))[0], job_id)


def read_import(path: str) -> dict[str, np.ndarray]:
    """The arrays of a 3DGS PLY for import (no bpy: runs in a worker thread). Raises PLYError with one line."""
    arrays = plyio.read_gaussians(path)
    if len(arrays["x"]) == 0:
        raise plyio.PLYError("the file holds no Gaussians (element vertex 0)")
    return splat.with_display(arrays)


def import_arrays(scene: bpy.types.Scene, arrays: dict[str, np.ndarray], name: str,
                  job_id: str = "") -> bpy.types.Object:
    """Main thread: a new Gaussian object at the 3D cursor from arrays that read_import returned."""
    obj = create_object(scene, job_id or f"import:{name}", name, "gaussians")
    set_gaussians(obj.data, arrays)
    obj[STATE_KEY] = "imported"
    return obj


def finish_import(scene: bpy.types.Scene, data: dict) -> str:
    """The pump's half of an import read in a worker thread: the object from its arrays, or the reader's
    one-line error. Returns the sentence for the panel."""
    if "error" in data:
        return f"import failed: {data['error']}"
    obj = import_arrays(scene, data["payload"], data["name"])
    return f"imported {len(obj.data.vertices)} Gaussians as {obj.name}"


def export_gaussian_ply(obj: bpy.types.Object, path: str, apply_transform: bool = True) -> int:
    """Write a Gaussian object to a 3DGS PLY, in world space (its location, rotation and scale applied to
    positions, covariances and SH colours) unless `apply_transform` is False; returns the count."""
    if obj.type != "MESH" or not (obj.get(KIND_KEY) == "gaussians" or "opacity" in obj.data.attributes):
        raise ValueError(f"{obj.name} is not a Gaussian object (no opacity attribute)")
    if len(obj.data.vertices) == 0:
        raise ValueError(f"{obj.name} has no Gaussians to export")
    arrays = get_gaussians(obj.data)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    if apply_transform and not np.array_equal(matrix, np.eye(4)):
        arrays = transform.transform_gaussians(arrays, matrix)
    plyio.write_gaussians(path, arrays)
    return len(arrays["x"])


# ---------------------------------------------------------------------------------------------- seed shapes


def surface_points(obj: bpy.types.Object, depsgraph, count: int, seed: int = 0) -> np.ndarray:
    """[count, 3] world-space points sampled uniformly (by area) on the evaluated surface of a mesh object."""
    ev = obj.evaluated_get(depsgraph)
    m = np.array(ev.matrix_world, dtype=np.float64)
    mesh = ev.to_mesh()
    try:
        mesh.calc_loop_triangles()
        nv, nt = len(mesh.vertices), len(mesh.loop_triangles)
        if nt == 0:
            raise ValueError(f"{obj.name} has no faces to sample")
        co = np.empty(nv * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        tris = np.empty(nt * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tris)
    finally:
        ev.to_mesh_clear()
    co = co.reshape(-1, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    a, b, c = (co[tris.reshape(-1, 3)[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        raise ValueError(f"{obj.name} has no surface area")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(area), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return a[pick] + u[:, None] * (b[pick] - a[pick]) + v[:, None] * (c[pick] - a[pick])


def seed_points(obj: bpy.types.Object, depsgraph, center, front_azimuth_deg: float, count: int,
                seed: int = 0) -> tuple[list[list[float]], float]:
    """Surface points of `obj` in the backend's canonical frame (rounded for the wire) and the world scale of
    one canonical unit."""
    pts = surface_points(obj, depsgraph, count, seed)
    can, scale = convert.to_canonical(pts, np.asarray(center, float), front_azimuth_deg)
    return np.round(can, 3).tolist(), scale  # 1e-3 of a 0.5 radius; keeps the request small
