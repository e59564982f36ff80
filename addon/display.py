"""How Gaussians look in Blender: the "Distillery Gaussians" Geometry Nodes group and the splat materials.

A Gaussian object is a faceless mesh whose vertices carry the 3DGS PLY properties (scene_sync.py writes them).
The node group built here turns them into one of three displays, all with each Gaussian's exact colour:

- **Ellipsoids** (default; view-independent: the viewport, Cycles): an ico sphere per Gaussian, rotated by its
  quaternion and scaled so that it encloses the ellipsoid at `Size` standard deviations (3 by default). The
  material evaluates the Gaussian falloff alpha = opacity * exp(-1/2 d^T Sigma^-1 d) with d the ray's closest
  approach to the centre (as 3D Gaussian ray tracing does), on front faces only, so every Gaussian is counted
  once and its look does not depend on the proxy's facets. In the instance's own space the Gaussian is
  isotropic, so d comes from the hit point p and the ray direction r there: |d|^2 = k^2 (|p|^2 - (p . r)^2),
  k the proxy's extent in sigmas.
- **Camera-facing** (renders from the scene camera: EEVEE, and Cycles): one quad per Gaussian through its
  centre, spanning `Size` sigmas in the plane that is perpendicular to the view direction in the Gaussian's
  whitened space. That plane holds each ray's point of maximum response, so a ray meets the quads in the
  order of those points (3D Gaussian ray tracing's order) where an ellipsoid's front face sits up to `Size`
  sigmas early; the quad's sigma coordinates in `distillery_uv` give the same falloff in the material. The
  quads are sorted back to front for the active camera (Sort Elements) and realised into one mesh, which
  EEVEE's Blended mode draws in face order.
- **Points**: a point cloud, radius cbrt(sigma_0 sigma_1 sigma_2) * Size / 3; the cheapest.

Per-Gaussian values come from client/splat.py, computed where the PLY is decoded (off the main thread) and
stored by scene_sync: alpha, the unit quaternion, sigma, and the colour: SH DC to display sRGB (0.5 + C0 f_dc,
clamped, as the backend renders), then to linear with the exact sRGB curve, in the colour attribute
`distillery_color`. Shaders emit it, so a render with the Standard view transform shows the backend's
colours. Workbench's Solid view shows it with Attribute colouring on realised geometry (the camera-facing
quads: the mesh names it as its active colour); it cannot read instance attributes, so ellipsoids and points
show the material's grey there.

Nothing here holds `bpy` references across calls; everything is looked up by name.
"""

from __future__ import annotations

import bpy

from .client import splat

NODE_GROUP = "Distillery Gaussians"
NODE_GROUP_VERSION = 7
SPLAT_MATERIAL = "Distillery Splat"  # ellipsoids (instancer attributes, ray closest approach)
FLAT_MATERIAL = "Distillery Splat Flat"  # camera-facing quads and points (geometry attributes)
MESH_MATERIAL = "Distillery Mesh"
COLOR_ATTRIBUTE = splat.COLOR
ALPHA_ATTRIBUTE = splat.ALPHA
EXTENT_ATTRIBUTE = "distillery_extent"
UV_ATTRIBUTE = "distillery_uv"
ROTATION_ATTRIBUTE = splat.ROTATION
SIGMA_ATTRIBUTE = splat.SIGMA
DEFAULT_SIZE = 3.0  # sigmas: alpha at the proxy's edge is exp(-4.5) = 1.1% of the opacity
MIN_OPACITY = 1.0 / 255.0  # the backend's rasteriser skips Gaussians below this, too
# An ico sphere's faces lie inside its circumscribed sphere: scale it so that its inscribed sphere is the
# unit sphere, i.e. the proxy encloses the whole ellipsoid at Size sigmas.
ICO_INRADIUS = {1: 0.79464, 2: 0.93417, 3: 0.98224, 4: 0.99547}  # measured with bmesh, radius 1
TRANSPARENT_BOUNCES = 128  # Cycles: each Gaussian a ray passes costs one transparent bounce (its front face)
VIEW_TRANSFORM = "Standard"
MODES = ("ellipsoids", "camera", "points")


# ---------------------------------------------------------------------------------------------- node helpers


def _socket(sockets, name: str):
    """The enabled socket called `name` (nodes such as Store Named Attribute keep one hidden socket per type)."""
    for s in sockets:
        if s.name == name and getattr(s, "enabled", True):
            return s
    return sockets[name]


def _set(nodes, links, sock, value) -> None:
    if isinstance(value, int | float):
        sock.default_value = float(value)
    elif isinstance(value, tuple):
        sock.default_value = value
    else:
        links.new(value, sock)


def _math(nodes, links, op: str, a, b=None, c=None, clamp: bool = False):
    node = nodes.new("ShaderNodeMath")
    node.operation = op
    node.use_clamp = clamp
    for i, v in enumerate((a, b, c)):
        if v is not None:
            _set(nodes, links, node.inputs[i], v)
    return node.outputs[0]


def _vmath(nodes, links, op: str, a, b=None, scale=None, out: str = "Vector"):
    node = nodes.new("ShaderNodeVectorMath")
    node.operation = op
    for i, v in enumerate((a, b)):
        if v is not None:
            _set(nodes, links, node.inputs[i], v)
    if scale is not None:
        _set(nodes, links, _socket(node.inputs, "Scale"), scale)
    return node.outputs[out]


def _named(nodes, name: str, data_type: str = "FLOAT"):
    node = nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    return _socket(node.outputs, "Attribute")


def _store(nodes, links, geometry, name: str, value, data_type: str, domain: str = "POINT"):
    node = nodes.new("GeometryNodeStoreNamedAttribute")
    node.data_type = data_type
    node.domain = domain
    links.new(geometry, node.inputs["Geometry"])
    node.inputs["Name"].default_value = name
    _set(nodes, links, _socket(node.inputs, "Value"), value)
    return node.outputs["Geometry"]


def _xyz(nodes, links, x, y, z):
    node = nodes.new("ShaderNodeCombineXYZ")
    for i, v in enumerate((x, y, z)):
        _set(nodes, links, node.inputs[i], v)
    return node.outputs[0]


def _split(nodes, links, vec):
    node = nodes.new("ShaderNodeSeparateXYZ")
    links.new(vec, node.inputs[0])
    return node.outputs[0], node.outputs[1], node.outputs[2]


# ---------------------------------------------------------------------------------------------- materials


def _use_nodes(mat: bpy.types.Material) -> None:
    if bpy.app.version < (5, 0, 0):  # 5.0 materials always have a node tree (use_nodes is deprecated)
        mat.use_nodes = True


def _attr(nodes, name: str, kind: str):
    node = nodes.new("ShaderNodeAttribute")
    node.attribute_type = kind
    node.attribute_name = name
    return node


def _emit_with_alpha(nt, color, alpha) -> None:
    """Emission of `color` mixed with a transparent BSDF by `alpha` into the material output."""
    n, lk = nt.nodes, nt.links
    emission = n.new("ShaderNodeEmission")
    lk.new(color, emission.inputs["Color"])
    emission.inputs["Strength"].default_value = 1.0
    transparent = n.new("ShaderNodeBsdfTransparent")
    mix = n.new("ShaderNodeMixShader")
    lk.new(alpha, mix.inputs[0])
    lk.new(transparent.outputs[0], mix.inputs[1])
    lk.new(emission.outputs[0], mix.inputs[2])
    out = n.new("ShaderNodeOutputMaterial")
    lk.new(mix.outputs[0], out.inputs["Surface"])


def _build_splat_material(mat: bpy.types.Material) -> None:
    """Ellipsoid proxies: alpha = opacity exp(-1/2 |d|^2), d the ray's closest approach to the centre in sigma
    units, computed in the instance's space (where the Gaussian is isotropic); back faces are transparent."""
    _use_nodes(mat)
    nt = mat.node_tree
    nt.nodes.clear()
    n, lk = nt.nodes, nt.links
    coords = n.new("ShaderNodeTexCoord")
    geom = n.new("ShaderNodeNewGeometry")
    to_obj = n.new("ShaderNodeVectorTransform")
    to_obj.vector_type = "VECTOR"
    to_obj.convert_from, to_obj.convert_to = "WORLD", "OBJECT"
    lk.new(geom.outputs["Incoming"], to_obj.inputs[0])
    ray = _vmath(n, lk, "NORMALIZE", to_obj.outputs[0])
    p = coords.outputs["Object"]
    along = _vmath(n, lk, "DOT_PRODUCT", p, ray, out="Value")
    radial2 = _math(n, lk, "SUBTRACT", _vmath(n, lk, "DOT_PRODUCT", p, p, out="Value"),
                    _math(n, lk, "MULTIPLY", along, along))
    extent = _attr(n, EXTENT_ATTRIBUTE, "INSTANCER").outputs["Fac"]
    d2 = _math(n, lk, "MULTIPLY", _math(n, lk, "MAXIMUM", radial2, 0.0), _math(n, lk, "MULTIPLY", extent, extent))
    falloff = _math(n, lk, "EXPONENT", _math(n, lk, "MULTIPLY", d2, -0.5))
    alpha = _math(n, lk, "MULTIPLY", _attr(n, ALPHA_ATTRIBUTE, "INSTANCER").outputs["Fac"], falloff)
    front = _math(n, lk, "SUBTRACT", 1.0, geom.outputs["Backfacing"])
    alpha = _math(n, lk, "MULTIPLY", alpha, front, clamp=True)
    _emit_with_alpha(nt, _attr(n, COLOR_ATTRIBUTE, "INSTANCER").outputs["Color"], alpha)
    mat.diffuse_color = (0.5, 0.5, 0.5, 1.0)
    if hasattr(mat, "surface_render_method"):  # EEVEE (4.2+); ellipsoids are for Cycles, keep EEVEE stochastic
        mat.surface_render_method = "DITHERED"
    elif hasattr(mat, "blend_method"):
        mat.blend_method = "HASHED"
    mat.use_backface_culling = False


def _build_flat_material(mat: bpy.types.Material) -> None:
    """Camera-facing quads (and points): alpha = opacity exp(-1/2 |uv|^2) with uv the quad's sigma
    coordinates (0 on points: constant opacity); EEVEE blends them in their (back-to-front) face order."""
    _use_nodes(mat)
    nt = mat.node_tree
    nt.nodes.clear()
    n, lk = nt.nodes, nt.links
    uv = _attr(n, UV_ATTRIBUTE, "GEOMETRY").outputs["Vector"]
    d2 = _vmath(n, lk, "DOT_PRODUCT", uv, uv, out="Value")
    falloff = _math(n, lk, "EXPONENT", _math(n, lk, "MULTIPLY", d2, -0.5))
    alpha = _math(n, lk, "MULTIPLY", _attr(n, ALPHA_ATTRIBUTE, "GEOMETRY").outputs["Fac"], falloff, clamp=True)
    _emit_with_alpha(nt, _attr(n, COLOR_ATTRIBUTE, "GEOMETRY").outputs["Color"], alpha)
    mat.diffuse_color = (0.5, 0.5, 0.5, 1.0)
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "BLENDED"
        mat.use_transparency_overlap = True  # draw every overlapping quad, not only the nearest
    elif hasattr(mat, "blend_method"):
        mat.blend_method = "BLEND"
        mat.show_transparent_back = True
    mat.use_backface_culling = False


def _ensure_material(name: str, build) -> bpy.types.Material:
    mat = bpy.data.materials.get(name)
    if mat is not None and mat.get("distillery_version") == NODE_GROUP_VERSION:
        return mat
    mat = mat or bpy.data.materials.new(name)
    build(mat)
    mat["distillery_version"] = NODE_GROUP_VERSION
    return mat


def ensure_mesh_material() -> bpy.types.Material:
    """The material of mesh snapshots: a Principled BSDF coloured by the mesh's `Col` attribute."""
    def build(mat: bpy.types.Material) -> None:
        _use_nodes(mat)
        nt = mat.node_tree
        nt.nodes.clear()
        attr = _attr(nt.nodes, "Col", "GEOMETRY")
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        nt.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
        out = nt.nodes.new("ShaderNodeOutputMaterial")
        nt.links.new(bsdf.outputs[0], out.inputs["Surface"])

    return _ensure_material(MESH_MATERIAL, build)


# ---------------------------------------------------------------------------------------------- node group


def ensure_node_group() -> bpy.types.NodeTree:
    """The "Distillery Gaussians" Geometry Nodes group (built in Python, rebuilt when its version changes)."""
    ng = bpy.data.node_groups.get(NODE_GROUP)
    if ng is not None and ng.get("distillery_version") == NODE_GROUP_VERSION:
        return ng
    splat_mat = _ensure_material(SPLAT_MATERIAL, _build_splat_material)
    flat = _ensure_material(FLAT_MATERIAL, _build_flat_material)
    if ng is None:
        ng = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    ng.nodes.clear()
    ng.interface.clear()
    _build_node_group(ng, splat_mat, flat)
    ng["distillery_version"] = NODE_GROUP_VERSION
    return ng


def _interface(ng: bpy.types.NodeTree) -> None:
    iface = ng.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    s = iface.new_socket("Ellipsoids", in_out="INPUT", socket_type="NodeSocketBool")
    s.default_value = True
    s.description = "Splats (on) or round points (off, cheapest)"
    s = iface.new_socket("Camera Facing", in_out="INPUT", socket_type="NodeSocketBool")
    s.default_value = False
    s.description = ("Quads facing the active camera, sorted back to front (for EEVEE) instead of ellipsoids "
                     "(for Cycles)")
    s = iface.new_socket("Size", in_out="INPUT", socket_type="NodeSocketFloat")
    s.default_value, s.min_value, s.max_value = DEFAULT_SIZE, 0.5, 6.0
    s.description = "Extent of each splat in standard deviations (its falloff is the Gaussian's own)"
    s = iface.new_socket("Min Opacity", in_out="INPUT", socket_type="NodeSocketFloat")
    s.default_value, s.min_value, s.max_value = MIN_OPACITY, 0.0, 1.0
    s.description = "Hide Gaussians more transparent than this"
    s = iface.new_socket("Detail", in_out="INPUT", socket_type="NodeSocketInt")
    s.default_value, s.min_value, s.max_value = 1, 1, 4
    s.description = "Subdivisions of each ellipsoid proxy"
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")


def _build_node_group(ng: bpy.types.NodeTree, splat_mat: bpy.types.Material, flat: bpy.types.Material) -> None:
    _interface(ng)
    n, lk = ng.nodes, ng.links
    gin, gout = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    size = gin.outputs["Size"]

    # Per Gaussian, written by scene_sync from client/splat.py (computed off the main thread): alpha, the
    # linear colour, the unit quaternion and the standard deviations.
    geo = gin.outputs["Geometry"]
    # The raw PLY properties stay on the object's mesh; copying them onto every instance or quad corner
    # would dominate the evaluation (62 floats per Gaussian at SH degree 3).
    for pattern in ("f_*", "scale_*", "rot_*", "opacity", "nx", "ny", "nz"):
        rm = n.new("GeometryNodeRemoveAttribute")
        lk.new(geo, rm.inputs["Geometry"])
        rm.inputs["Pattern Mode"].default_value = "Wildcard" if "*" in pattern else "Exact"
        rm.inputs["Name"].default_value = pattern
        geo = rm.outputs["Geometry"]
    # Gaussians below Min Opacity are left out through the Selection inputs below (a Delete Geometry node
    # would copy every kept point's attributes first).
    visible = _math(n, lk, "GREATER_THAN", _named(n, ALPHA_ATTRIBUTE), gin.outputs["Min Opacity"])
    rotation = _named(n, ROTATION_ATTRIBUTE, "QUATERNION")
    sigma = _named(n, SIGMA_ATTRIBUTE, "FLOAT_VECTOR")

    ellipsoids = _ellipsoid_branch(n, lk, gin, geo, visible, rotation, sigma, size, splat_mat)
    camera = _camera_branch(n, lk, geo, visible, rotation, sigma, size, flat)
    points = _points_branch(n, lk, geo, visible, sigma, size, flat)

    which = n.new("GeometryNodeSwitch")
    which.input_type = "GEOMETRY"
    lk.new(gin.outputs["Camera Facing"], which.inputs["Switch"])
    lk.new(ellipsoids, _socket(which.inputs, "False"))
    lk.new(camera, _socket(which.inputs, "True"))
    switch = n.new("GeometryNodeSwitch")
    switch.input_type = "GEOMETRY"
    lk.new(gin.outputs["Ellipsoids"], switch.inputs["Switch"])
    lk.new(points, _socket(switch.inputs, "False"))
    lk.new(which.outputs[0], _socket(switch.inputs, "True"))
    lk.new(switch.outputs[0], gout.inputs["Geometry"])


def _ellipsoid_branch(n, lk, gin, geo, visible, rotation, sigma, size, material):
    ico = n.new("GeometryNodeMeshIcoSphere")
    lk.new(gin.outputs["Detail"], ico.inputs["Subdivisions"])
    # radius 1 / inradius(detail): the proxy's faces enclose the unit sphere at every detail level
    inr = [ICO_INRADIUS[d] for d in (1, 2, 3, 4)]
    cover = _math(n, lk, "DIVIDE", 1.0, _pick(n, lk, gin.outputs["Detail"], inr))
    lk.new(cover, ico.inputs["Radius"])
    setmat = n.new("GeometryNodeSetMaterial")
    lk.new(ico.outputs["Mesh"], setmat.inputs["Geometry"])
    setmat.inputs["Material"].default_value = material
    geo = _store(n, lk, geo, EXTENT_ATTRIBUTE, size, "FLOAT")  # sigmas per unit of the instance's space
    inst = n.new("GeometryNodeInstanceOnPoints")
    lk.new(geo, inst.inputs["Points"])
    lk.new(visible, inst.inputs["Selection"])
    lk.new(setmat.outputs["Geometry"], inst.inputs["Instance"])
    lk.new(rotation, inst.inputs["Rotation"])
    lk.new(_vmath(n, lk, "SCALE", sigma, scale=size), _socket(inst.inputs, "Scale"))
    return inst.outputs["Instances"]


def _pick(n, lk, index, values: list[float]):
    """values[index - 1] for an integer socket in 1..len(values) (a chain of comparisons)."""
    out = values[0]
    for i, v in enumerate(values[1:], start=2):
        ge = _math(n, lk, "GREATER_THAN", index, i - 0.5)
        out = _math(n, lk, "ADD", out, _math(n, lk, "MULTIPLY", ge, v - (values[i - 2])))
    return out


def _camera_branch(n, lk, geo, visible, rotation, sigma, size, material):
    """One quad per Gaussian facing the active camera, sorted back to front, realised."""
    cam = n.new("GeometryNodeInputActiveCamera")
    info = n.new("GeometryNodeObjectInfo")
    info.transform_space = "RELATIVE"  # the camera in the Gaussian object's own space
    lk.new(cam.outputs[0], info.inputs["Object"])
    pos = n.new("GeometryNodeInputPosition").outputs[0]
    view = _vmath(n, lk, "SUBTRACT", info.outputs["Location"], pos)
    # The view direction in the Gaussian's whitened space: S^-1 R^-1 v.
    inv = n.new("FunctionNodeInvertRotation")
    lk.new(rotation, inv.inputs[0])
    rot_back = n.new("FunctionNodeRotateVector")
    lk.new(view, rot_back.inputs["Vector"])
    lk.new(inv.outputs[0], rot_back.inputs["Rotation"])
    w = _vmath(n, lk, "NORMALIZE", _vmath(n, lk, "DIVIDE", rot_back.outputs[0], sigma))
    # An orthonormal pair (a, b) perpendicular to w; the helper axis avoids w's near-parallel case.
    _, _, wz = _split(n, lk, w)
    near_z = _math(n, lk, "GREATER_THAN", _math(n, lk, "ABSOLUTE", wz), 0.9)
    helper = _vmath(n, lk, "ADD", _vmath(n, lk, "SCALE", (0.0, 0.0, 1.0), scale=_math(n, lk, "SUBTRACT", 1.0, near_z)),
                    _vmath(n, lk, "SCALE", (1.0, 0.0, 0.0), scale=near_z))
    a = _vmath(n, lk, "NORMALIZE", _vmath(n, lk, "CROSS_PRODUCT", w, helper))
    b = _vmath(n, lk, "CROSS_PRODUCT", w, a)
    axes = []
    for v in (a, b, w):  # back to object space: R S v, times Size for the quad's half-extent
        rot = n.new("FunctionNodeRotateVector")
        lk.new(_vmath(n, lk, "MULTIPLY", v, sigma), rot.inputs["Vector"])
        lk.new(rotation, rot.inputs["Rotation"])
        axes.append(_vmath(n, lk, "SCALE", rot.outputs[0], scale=size))
    matrix = n.new("FunctionNodeCombineMatrix")
    columns = [*axes, pos]
    for col, vec in enumerate(columns):
        for row, comp in enumerate(_split(n, lk, vec)):
            lk.new(comp, matrix.inputs[col * 4 + row])
        matrix.inputs[col * 4 + 3].default_value = 1.0 if col == 3 else 0.0

    # Back to front: the farthest Gaussian first (Sort Elements sorts by ascending weight).
    sort = n.new("GeometryNodeSortElements")
    sort.domain = "POINT"
    lk.new(geo, sort.inputs["Geometry"])
    lk.new(_math(n, lk, "MULTIPLY", _vmath(n, lk, "LENGTH", view, out="Value"), -1.0), sort.inputs["Sort Weight"])

    grid = n.new("GeometryNodeMeshGrid")
    grid.inputs["Size X"].default_value = grid.inputs["Size Y"].default_value = 2.0
    grid.inputs["Vertices X"].default_value = grid.inputs["Vertices Y"].default_value = 2
    quad = _store(n, lk, grid.outputs["Mesh"], UV_ATTRIBUTE, n.new("GeometryNodeInputPosition").outputs[0],
                  "FLOAT_VECTOR")
    setmat = n.new("GeometryNodeSetMaterial")
    lk.new(quad, setmat.inputs["Geometry"])
    setmat.inputs["Material"].default_value = material
    inst = n.new("GeometryNodeInstanceOnPoints")
    lk.new(sort.outputs["Geometry"], inst.inputs["Points"])
    lk.new(visible, inst.inputs["Selection"])
    lk.new(setmat.outputs["Geometry"], inst.inputs["Instance"])
    settf = n.new("GeometryNodeSetInstanceTransform")
    lk.new(inst.outputs["Instances"], settf.inputs["Instances"])
    lk.new(matrix.outputs[0], settf.inputs["Transform"])
    realize = n.new("GeometryNodeRealizeInstances")
    lk.new(settf.outputs[0], realize.inputs["Geometry"])
    # uv in sigmas (the grid's corners are +-1)
    out = _store(n, lk, realize.outputs[0], UV_ATTRIBUTE,
                 _vmath(n, lk, "SCALE", _named(n, UV_ATTRIBUTE, "FLOAT_VECTOR"), scale=size), "FLOAT_VECTOR")
    return _keep_color_name(n, lk, out)


def _points_branch(n, lk, geo, visible, sigma, size, material):
    sx, sy, sz = _split(n, lk, sigma)
    mean_sigma = _math(n, lk, "POWER", _math(n, lk, "MULTIPLY", _math(n, lk, "MULTIPLY", sx, sy), sz), 1.0 / 3.0)
    to_points = n.new("GeometryNodeMeshToPoints")
    lk.new(geo, to_points.inputs["Mesh"])
    lk.new(visible, to_points.inputs["Selection"])
    lk.new(_math(n, lk, "MULTIPLY", mean_sigma, _math(n, lk, "DIVIDE", size, 3.0)), to_points.inputs["Radius"])
    setmat = n.new("GeometryNodeSetMaterial")
    lk.new(to_points.outputs["Points"], setmat.inputs["Geometry"])
    setmat.inputs["Material"].default_value = material
    return setmat.outputs["Geometry"]


def _keep_color_name(n, lk, realised):
    """Join the (face-less) input mesh in front of realised geometry: a joined mesh keeps the first mesh's
    active colour name, which Workbench's Attribute colouring reads (measured on 5.0.1)."""
    group_in = n.new("NodeGroupInput")
    one = n.new("GeometryNodeDeleteGeometry")  # one loose vertex of the input mesh (an empty mesh is dropped)
    one.domain = "POINT"
    lk.new(group_in.outputs["Geometry"], one.inputs["Geometry"])
    lk.new(_math(n, lk, "GREATER_THAN", n.new("GeometryNodeInputIndex").outputs[0], 0.5), one.inputs["Selection"])
    bare = n.new("GeometryNodeRemoveAttribute")  # without the 3DGS attributes, which the join would copy
    lk.new(one.outputs[0], bare.inputs["Geometry"])
    bare.inputs["Pattern Mode"].default_value = "Wildcard"
    bare.inputs["Name"].default_value = "*"
    join = n.new("GeometryNodeJoinGeometry")
    lk.new(realised, join.inputs[0])
    lk.new(bare.outputs[0], join.inputs[0])
    return join.outputs[0]


# ---------------------------------------------------------------------------------------------- object settings


def _modifier_input_id(ng: bpy.types.NodeTree, name: str) -> str:
    for item in ng.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(name)


def attach(obj: bpy.types.Object) -> None:
    """Give a Gaussian object its display modifier, and name the colour its Solid view shows."""
    mod = obj.modifiers.get("Distillery") or obj.modifiers.new("Distillery", "NODES")
    mod.node_group = ensure_node_group()
    name_active_color(obj.data)


def name_active_color(mesh: bpy.types.Mesh) -> None:
    """Make `distillery_color` (written by the node group) the mesh's active and render colour, so
    Workbench's Attribute colouring shows each Gaussian's colour."""
    attrs = mesh.color_attributes
    if attrs.get(COLOR_ATTRIBUTE) is None:
        attrs.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")  # empty until the node group fills it
    attrs.active_color_name = COLOR_ATTRIBUTE
    attrs.render_color_index = attrs.active_color_index


def set_display(obj: bpy.types.Object, mode: str | None = None, *, ellipsoids: bool | None = None,
                size: float | None = None, min_opacity: float | None = None) -> None:
    """Change the display of `obj`: mode "ellipsoids" (Cycles), "camera" (camera-facing quads, EEVEE) or
    "points"; `ellipsoids=False` is points, as before; size in sigmas."""
    mod = obj.modifiers.get("Distillery")
    if mod is None or mod.node_group is None:
        return
    if mode is not None and mode not in MODES:
        raise ValueError(f"display mode {mode!r}; expected one of {', '.join(MODES)}")
    values: dict[str, object] = {"Size": size, "Min Opacity": min_opacity}
    if mode is not None:
        values["Ellipsoids"] = mode != "points"
        values["Camera Facing"] = mode == "camera"
    elif ellipsoids is not None:
        values["Ellipsoids"] = ellipsoids
    for name, value in values.items():
        if value is not None:
            mod[_modifier_input_id(mod.node_group, name)] = value
    obj.update_tag()


# ---------------------------------------------------------------------------------------------- scene advice


def render_notes(scene: bpy.types.Scene) -> list[tuple[str, str]]:
    """(code, sentence) for each scene setting that keeps splats from looking like the backend's renders.
    Nothing is changed here: the panel shows these with a button (DISTILLERY_OT_splat_settings)."""
    notes = []
    view = scene.view_settings.view_transform
    if view != VIEW_TRANSFORM:
        notes.append(("VIEW_TRANSFORM", f"Colours are exact under the Standard view transform; this scene uses "
                                        f"{view}, which shifts them"))
    if scene.render.engine == "CYCLES":
        bounces = scene.cycles.transparent_max_bounces
        if bounces < TRANSPARENT_BOUNCES:
            notes.append(("TRANSPARENT_BOUNCES", f"Cycles stops after {bounces} transparent bounces; splats need "
                                                 f"about {TRANSPARENT_BOUNCES} or they show holes"))
    return notes


def apply_render_setting(scene: bpy.types.Scene, code: str) -> None:
    """Apply one of render_notes()'s fixes (only when the user asks)."""
    if code == "VIEW_TRANSFORM":
        scene.view_settings.view_transform = VIEW_TRANSFORM
        scene.view_settings.look = "None"
    elif code == "TRANSPARENT_BOUNCES":
        scene.cycles.transparent_max_bounces = max(scene.cycles.transparent_max_bounces, TRANSPARENT_BOUNCES)
    else:
        raise ValueError(f"unknown setting {code!r}; expected VIEW_TRANSFORM or TRANSPARENT_BOUNCES")

