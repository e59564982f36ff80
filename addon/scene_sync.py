"""The only module that writes `bpy.data` heavily: Gaussian and mesh objects, their node group and materials.

Gaussians live on the vertices of a faceless mesh, one FLOAT point attribute per 3DGS PLY property with the
PLY's own name (positions in `position`), so attribute values are exactly the file's. A Geometry Nodes group
built here turns them into something visible:

- **Ellipsoids** (default): an ico sphere instanced per Gaussian, scaled by exp(scale_*) and rotated by the
  normalised quaternion (rot_0 = w). Each instance gets one of 27 palette materials chosen from its colour, so
  Workbench's solid view (which shows a material's viewport colour) looks right; EEVEE and Cycles read the
  exact colour and opacity from the instance attributes `distillery_color` and `distillery_alpha`.
- **Points**: a point cloud with a radius of exp(mean log scale); cheapest, exact colours in EEVEE/Cycles.

Everything is looked up by name or by the job id kept in `obj["distillery_job"]` on every call: nothing here
holds a `bpy` reference across calls (undo and file loads invalidate them). Arrays are written with float32
`foreach_set`; a snapshot with the same count updates the mesh in place.
"""

from __future__ import annotations

import bpy
import numpy as np

from .client import convert
from .client import ply as plyio

COLLECTION = "Distillery"
NODE_GROUP = "Distillery Gaussians"
NODE_GROUP_VERSION = 4
MESH_MATERIAL = "Distillery Mesh"
PALETTE_PREFIX = "Distillery Splat"
PALETTE_LEVELS = 3  # per channel: 27 materials
JOB_KEY = "distillery_job"
KIND_KEY = "distillery_kind"
STEP_KEY = "distillery_step"
STATE_KEY = "distillery_state"
SH_C0 = 0.28209479177387814
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


# ---------------------------------------------------------------------------------------------- node group


def _socket(sockets, name: str):
    """The enabled socket called `name` (nodes such as Store Named Attribute keep one hidden socket per type)."""
    for s in sockets:
        if s.name == name and getattr(s, "enabled", True):
            return s
    return sockets[name]


def _math(nodes, links, op: str, a, b=None, c=None, clamp: bool = False):
    node = nodes.new("ShaderNodeMath")
    node.operation = op
    node.use_clamp = clamp
    for i, v in enumerate((a, b, c)):
        if v is None:
            continue
        if isinstance(v, int | float):
            node.inputs[i].default_value = float(v)
        else:
            links.new(v, node.inputs[i])
    return node.outputs[0]


def _named(nodes, name: str, data_type: str = "FLOAT"):
    node = nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    return _socket(node.outputs, "Attribute")


def _store(nodes, links, geometry, name: str, value, data_type: str, domain: str):
    node = nodes.new("GeometryNodeStoreNamedAttribute")
    node.data_type = data_type
    node.domain = domain
    links.new(geometry, node.inputs["Geometry"])
    node.inputs["Name"].default_value = name
    links.new(value, _socket(node.inputs, "Value"))
    return node.outputs["Geometry"]


def palette_color(index: int) -> tuple[float, float, float]:
    """sRGB colour of palette entry `index` (levels per channel, red major)."""
    n = PALETTE_LEVELS
    r, g, b = index // (n * n), (index // n) % n, index % n
    return (r / (n - 1), g / (n - 1), b / (n - 1))


def _srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def ensure_palette() -> list[bpy.types.Material]:
    """The palette materials (created once; rebuilt if a user broke their node tree)."""
    mats = []
    for i in range(PALETTE_LEVELS**3):
        name = f"{PALETTE_PREFIX} {i:02d}"
        mat = bpy.data.materials.get(name)
        if mat is None or mat.get("distillery_version") != NODE_GROUP_VERSION:
            mat = mat or bpy.data.materials.new(name)
            _build_splat_material(mat, palette_color(i))
        mats.append(mat)
    return mats


def _build_splat_material(mat: bpy.types.Material, srgb: tuple[float, float, float]) -> None:
    """Emission of the splat colour mixed with transparency by its opacity. The colour and opacity come from
    the instance (ellipsoids) or the point (points); a missing attribute reads as 0, so summing both works."""
    mat.diffuse_color = (*(_srgb_to_linear(c) for c in srgb), 1.0)  # Workbench solid view
    _use_nodes(mat)
    nt = mat.node_tree
    nt.nodes.clear()
    n, lk = nt.nodes, nt.links
    col_i, col_g = n.new("ShaderNodeAttribute"), n.new("ShaderNodeAttribute")
    for node, kind in ((col_i, "INSTANCER"), (col_g, "GEOMETRY")):
        node.attribute_type = kind
        node.attribute_name = "distillery_color"
    alpha_i, alpha_g = n.new("ShaderNodeAttribute"), n.new("ShaderNodeAttribute")
    for node, kind in ((alpha_i, "INSTANCER"), (alpha_g, "GEOMETRY")):
        node.attribute_type = kind
        node.attribute_name = "distillery_alpha"
    add_col = n.new("ShaderNodeVectorMath")
    add_col.operation = "ADD"
    lk.new(col_i.outputs["Color"], add_col.inputs[0])
    lk.new(col_g.outputs["Color"], add_col.inputs[1])
    gamma = n.new("ShaderNodeGamma")  # the backend's colours are display (sRGB) values; shaders want linear
    gamma.inputs["Gamma"].default_value = 2.2
    lk.new(add_col.outputs[0], gamma.inputs["Color"])
    emission = n.new("ShaderNodeEmission")
    lk.new(gamma.outputs[0], emission.inputs["Color"])
    emission.inputs["Strength"].default_value = 1.0
    add_alpha = n.new("ShaderNodeMath")
    add_alpha.operation = "ADD"
    add_alpha.use_clamp = True
    lk.new(alpha_i.outputs["Fac"], add_alpha.inputs[0])
    lk.new(alpha_g.outputs["Fac"], add_alpha.inputs[1])
    transparent = n.new("ShaderNodeBsdfTransparent")
    mix = n.new("ShaderNodeMixShader")
    lk.new(add_alpha.outputs[0], mix.inputs[0])
    lk.new(transparent.outputs[0], mix.inputs[1])
    lk.new(emission.outputs[0], mix.inputs[2])
    out = n.new("ShaderNodeOutputMaterial")
    lk.new(mix.outputs[0], out.inputs["Surface"])
    # Stochastic transparency: EEVEE Next (4.2+) calls it dithered; older EEVEE hashed.
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "DITHERED"
    elif hasattr(mat, "blend_method"):
        mat.blend_method = "HASHED"
    mat["distillery_version"] = NODE_GROUP_VERSION


def _use_nodes(mat: bpy.types.Material) -> None:
    if bpy.app.version < (5, 0, 0):  # 5.0 materials always have a node tree (use_nodes is deprecated)
        mat.use_nodes = True


def ensure_node_group() -> bpy.types.NodeTree:
    """The "Distillery Gaussians" Geometry Nodes group (built in Python, rebuilt when its version changes)."""
    ng = bpy.data.node_groups.get(NODE_GROUP)
    if ng is not None and ng.get("distillery_version") == NODE_GROUP_VERSION:
        return ng
    palette = ensure_palette()
    if ng is None:
        ng = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    ng.nodes.clear()
    ng.interface.clear()
    _build_node_group(ng, palette)
    ng["distillery_version"] = NODE_GROUP_VERSION
    return ng


def _build_node_group(ng: bpy.types.NodeTree, palette: list[bpy.types.Material]) -> None:
    iface = ng.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    s = iface.new_socket("Ellipsoids", in_out="INPUT", socket_type="NodeSocketBool")
    s.default_value = True
    s.description = "Oriented ellipsoids (on) or round points (off, cheapest)"
    s = iface.new_socket("Size", in_out="INPUT", socket_type="NodeSocketFloat")
    s.default_value, s.min_value, s.max_value = 1.5, 0.0, 10.0
    s.description = "Splat radius in standard deviations of each Gaussian"
    s = iface.new_socket("Min Opacity", in_out="INPUT", socket_type="NodeSocketFloat")
    s.default_value, s.min_value, s.max_value = 0.05, 0.0, 1.0
    s.description = "Hide Gaussians more transparent than this"
    s = iface.new_socket("Detail", in_out="INPUT", socket_type="NodeSocketInt")
    s.default_value, s.min_value, s.max_value = 1, 1, 4
    s.description = "Subdivisions of each ellipsoid"
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    n, lk = ng.nodes, ng.links
    gin, gout = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    geo = gin.outputs["Geometry"]

    # alpha = sigmoid(opacity)
    neg = _math(n, lk, "MULTIPLY", _named(n, "opacity"), -1.0)
    alpha = _math(n, lk, "DIVIDE", 1.0, _math(n, lk, "ADD", _math(n, lk, "EXPONENT", neg), 1.0))
    # colour = clamp(0.5 + C0 f_dc), and its palette index for Workbench
    comb = n.new("FunctionNodeCombineColor")
    channels = []
    for i in range(3):
        c = _math(n, lk, "MULTIPLY_ADD", _named(n, f"f_dc_{i}"), SH_C0, 0.5, clamp=True)
        lk.new(c, comb.inputs[i])
        channels.append(_math(n, lk, "ROUND", _math(n, lk, "MULTIPLY", c, PALETTE_LEVELS - 1)))
    lvl = float(PALETTE_LEVELS)
    index = _math(n, lk, "MULTIPLY_ADD", _math(n, lk, "MULTIPLY_ADD", channels[0], lvl, channels[1]), lvl,
                  channels[2])
    geo = _store(n, lk, geo, "distillery_alpha", alpha, "FLOAT", "POINT")
    geo = _store(n, lk, geo, "distillery_color", comb.outputs["Color"], "FLOAT_COLOR", "POINT")
    geo = _store(n, lk, geo, "distillery_palette", index, "FLOAT", "POINT")
    delete = n.new("GeometryNodeDeleteGeometry")
    delete.domain = "POINT"
    lk.new(geo, delete.inputs["Geometry"])
    lk.new(_math(n, lk, "LESS_THAN", _named(n, "distillery_alpha"), gin.outputs["Min Opacity"]),
           delete.inputs["Selection"])
    geo = delete.outputs["Geometry"]

    # Ellipsoids: sigma = exp(scale) * Size, rotation = normalised (rot_0 = w, rot_1..3 = x, y, z)
    scale = n.new("ShaderNodeCombineXYZ")
    for i in range(3):
        lk.new(_math(n, lk, "MULTIPLY", _math(n, lk, "EXPONENT", _named(n, f"scale_{i}")), gin.outputs["Size"]),
               scale.inputs[i])
    q = [_named(n, f"rot_{i}") for i in range(4)]
    sq = _math(n, lk, "MULTIPLY_ADD", q[0], q[0], _math(n, lk, "MULTIPLY_ADD", q[1], q[1], _math(
        n, lk, "MULTIPLY_ADD", q[2], q[2], _math(n, lk, "MULTIPLY", q[3], q[3]))))
    norm = _math(n, lk, "MAXIMUM", _math(n, lk, "SQRT", sq), 1e-12)
    quat = n.new("FunctionNodeQuaternionToRotation")
    for i, name in enumerate(("W", "X", "Y", "Z")):
        lk.new(_math(n, lk, "DIVIDE", q[i], norm), quat.inputs[name])
    # One ico sphere per palette material, as instances 0..26; each Gaussian picks its palette entry.
    ico = n.new("GeometryNodeMeshIcoSphere")
    ico.inputs["Radius"].default_value = 1.0
    lk.new(gin.outputs["Detail"], ico.inputs["Subdivisions"])
    palette_instances = n.new("GeometryNodeGeometryToInstance")
    setmats = []
    for mat in palette:
        setmat = n.new("GeometryNodeSetMaterial")
        lk.new(ico.outputs["Mesh"], setmat.inputs["Geometry"])
        setmat.inputs["Material"].default_value = mat
        setmats.append(setmat)
    _link_in_instance_order(lk, [m.outputs["Geometry"] for m in setmats], palette_instances.inputs["Geometry"])
    inst = n.new("GeometryNodeInstanceOnPoints")
    lk.new(geo, inst.inputs["Points"])
    lk.new(palette_instances.outputs["Instances"], inst.inputs["Instance"])
    inst.inputs["Pick Instance"].default_value = True
    lk.new(_math(n, lk, "ROUND", _named(n, "distillery_palette")), _socket(inst.inputs, "Instance Index"))
    lk.new(quat.outputs["Rotation"], inst.inputs["Rotation"])
    lk.new(scale.outputs["Vector"], _socket(inst.inputs, "Scale"))
    ellipsoids = inst.outputs["Instances"]

    # Points: radius = exp(mean log scale) * Size
    mean_log = _math(n, lk, "DIVIDE", _math(n, lk, "ADD", _math(n, lk, "ADD", _named(n, "scale_0"),
                                                                  _named(n, "scale_1")), _named(n, "scale_2")), 3.0)
    to_points = n.new("GeometryNodeMeshToPoints")
    lk.new(geo, to_points.inputs["Mesh"])
    lk.new(_math(n, lk, "MULTIPLY", _math(n, lk, "EXPONENT", mean_log), gin.outputs["Size"]),
           to_points.inputs["Radius"])
    points_mat = n.new("GeometryNodeSetMaterial")
    lk.new(to_points.outputs["Points"], points_mat.inputs["Geometry"])
    points_mat.inputs["Material"].default_value = palette[len(palette) // 2]

    switch = n.new("GeometryNodeSwitch")
    switch.input_type = "GEOMETRY"
    lk.new(gin.outputs["Ellipsoids"], switch.inputs["Switch"])
    lk.new(points_mat.outputs["Geometry"], _socket(switch.inputs, "False"))
    lk.new(ellipsoids, _socket(switch.inputs, "True"))
    lk.new(switch.outputs[0], gout.inputs["Geometry"])


def _link_in_instance_order(links, outputs: list, multi_input) -> None:
    """Link `outputs` into a multi-input socket so that instance i comes from outputs[i]. The instance order
    follows the links' multi_input_sort_id, highest first (measured on 5.0.1); linking in reverse gives
    ascending instances, and the check below relinks in the other direction should a version differ."""
    for out in reversed(outputs):
        links.new(out, multi_input)
    order = [lnk.from_socket for lnk in sorted(multi_input.links, key=lambda lnk: -lnk.multi_input_sort_id)]
    if [s.node.name for s in order] != [o.node.name for o in outputs]:
        for lnk in list(multi_input.links):
            links.remove(lnk)
        for out in outputs:
            links.new(out, multi_input)


def _modifier_input_id(ng: bpy.types.NodeTree, name: str) -> str:
    for item in ng.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(name)


def set_display(obj: bpy.types.Object, ellipsoids: bool | None = None, size: float | None = None,
                min_opacity: float | None = None) -> None:
    """Change the Gaussians modifier's display inputs of `obj`."""
    mod = obj.modifiers.get("Distillery")
    if mod is None or mod.node_group is None:
        return
    for name, value in (("Ellipsoids", ellipsoids), ("Size", size), ("Min Opacity", min_opacity)):
        if value is not None:
            mod[_modifier_input_id(mod.node_group, name)] = value
    obj.update_tag()


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
        mod = obj.modifiers.new("Distillery", "NODES")
        mod.node_group = ensure_node_group()
    else:
        mesh.materials.append(ensure_mesh_material())
    return obj


def set_gaussians(mesh: bpy.types.Mesh, arrays: dict[str, np.ndarray]) -> None:
    """Write 3DGS arrays (PLY names -> float32 [N]) onto a faceless mesh: x y z as positions, every other
    property as a FLOAT point attribute of the same name. Same count: in place; else the geometry is rebuilt."""
    n = len(arrays["x"])
    names = [k for k in arrays if k not in ("x", "y", "z")]
    if len(mesh.vertices) != n or len(mesh.polygons) or len(mesh.edges):
        mesh.clear_geometry()
        mesh.vertices.add(n)
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
    stale = [a.name for a in mesh.attributes if _is_ply_name(a.name) and a.name not in wanted]
    for name in stale:  # e.g. f_rest_* after an SH degree change
        mesh.attributes.remove(mesh.attributes[name])
    mesh.update()


def _is_ply_name(name: str) -> bool:
    return name in ("nx", "ny", "nz", "opacity") or name.startswith(("f_dc_", "f_rest_", "scale_", "rot_"))


def get_gaussians(mesh: bpy.types.Mesh) -> dict[str, np.ndarray]:
    """The 3DGS arrays stored on `mesh`, in PLY order (inverse of set_gaussians)."""
    n = len(mesh.vertices)
    xyz = np.empty(n * 3, dtype=np.float32)
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


def ensure_mesh_material() -> bpy.types.Material:
    mat = bpy.data.materials.get(MESH_MATERIAL)
    if mat is not None and mat.get("distillery_version") == NODE_GROUP_VERSION:
        return mat
    mat = mat or bpy.data.materials.new(MESH_MATERIAL)
    _use_nodes(mat)
    nt = mat.node_tree
    nt.nodes.clear()
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = "Col"
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    nt.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(bsdf.outputs[0], out.inputs["Surface"])
    mat["distillery_version"] = NODE_GROUP_VERSION
    return mat


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
    """A Gaussian object from a 3DGS PLY file, at the 3D cursor."""
    import os

    arrays = plyio.read_gaussians(path)
    name = name or os.path.splitext(os.path.basename(path))[0]
    obj = create_object(scene, job_id or f"import:{name}", name, "gaussians")
    set_gaussians(obj.data, arrays)
    obj[STATE_KEY] = "imported"
    return obj


def export_gaussian_ply(obj: bpy.types.Object, path: str) -> int:
    """Write a Gaussian object's arrays (in its local frame, as stored) to a 3DGS PLY; returns the count."""
    if obj.type != "MESH" or "opacity" not in obj.data.attributes:
        raise ValueError(f"{obj.name} is not a Gaussian object (no opacity attribute)")
    arrays = get_gaussians(obj.data)
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
