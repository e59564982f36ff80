"""Scene.distillery: the panel's settings and the read-only job state; `to_request()` is the ONE place where UI
state becomes a job request.

The settings of each preset (with the backend's defaults, ranges and help) come from `/v1/presets` at run
time, so they are registered dynamically: one PropertyGroup per preset, held by `Scene.distillery.values` (the
add-on's ONE Scene pointer is `Scene.distillery`; what was registered is kept in one object, `REG`). Their
values are ID properties of the scene, so they survive re-registration and file reloads. A setting the
user has not touched keeps the preset's exact default (Blender floats are single precision; defaults are not
round-tripped through them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import bpy
import numpy as np
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import reducer, request, runtime, scene_sync
from .client import convert

DEFAULT_PRESET = "gaussian-sds-quick"
PRESET_CHOICE = "PRESET"  # enum stand-in for "the preset's own" (an empty enum identifier is a separator)
INT32 = 2**31 - 1



@dataclass
class PresetRegistry:
    """The module's only state: what the newest /v1/presets answer registered (rebuilt by sync_presets)."""

    presets: list[dict] = field(default_factory=list)  # the newest /v1/presets answer
    idents: dict[str, dict[str, str]] = field(default_factory=dict)  # preset -> setting key -> property name
    group_attr: dict[str, str] = field(default_factory=dict)  # preset -> attribute of Scene.distillery.values
    dynamic: list[type] = field(default_factory=list)  # registered dynamic classes, container last
    enum_items: dict[str, list] = field(default_factory=dict)  # must outlive the callbacks that return them


REG = PresetRegistry()


def presets() -> list[dict]:
    return REG.presets


def find_preset(name: str) -> dict | None:
    for p in REG.presets:
        if p["name"] == name:
            return p
    return None


def _ident(key: str, used: set[str]) -> str:
    base = re.sub(r"[^0-9a-zA-Z_]", "_", key.replace("stages.", "s"))[:56]
    ident, i = base, 1
    while ident in used:
        ident, i = f"{base[:52]}_{i}", i + 1
    used.add(ident)
    return ident


def label_of(key: str, multi_stage: bool) -> str:
    parts = key.split(".")
    text = parts[-1].replace("_", " ").capitalize()
    if multi_stage and parts[0] == "stages":
        text = f"{text} (stage {int(parts[1]) + 1})"
    return text


def _tooltip(s: dict) -> str:
    unit = f" ({s['unit']})" if s.get("unit") else ""
    default = request.value_text(s["kind"], s["default"])
    return f"{s['help']}{unit}. Allowed: {s.get('allowed', '')}. Default: {default}. Setting: {s['key']}"


def _is_text_float(s: dict) -> bool:
    d = s["default"]
    return s["kind"] == "float" and isinstance(d, float) and d != 0.0 and abs(d) < 1e-4


def _prop_for(s: dict, multi_stage: bool):
    kind, name, desc, d = s["kind"], label_of(s["key"], multi_stage), _tooltip(s), s["default"]
    lo, hi = s.get("lo"), s.get("hi")
    if kind == "bool":
        return BoolProperty(name=name, description=desc, default=bool(d))
    if kind == "int":
        lo_i = max(-INT32, int(lo)) if lo is not None else -INT32
        hi_i = min(INT32, int(hi)) if hi is not None else INT32
        return IntProperty(name=name, description=desc, default=int(d), min=lo_i, max=hi_i)
    if kind == "float" and not _is_text_float(s):
        kw = {"min": float(lo)} if lo is not None else {}
        if hi is not None:
            kw["max"] = float(hi)
        return FloatProperty(name=name, description=desc, default=float(d), precision=4, **kw)
    if kind == "pair":
        kw = {"min": float(lo)} if lo is not None else {}
        if hi is not None:
            kw["max"] = float(hi)
        return FloatVectorProperty(name=name, description=desc, size=2, default=tuple(float(x) for x in d), **kw)
    if kind == "str" and s.get("choices"):
        items = [(c, c, s["help"]) for c in s["choices"]]
        return EnumProperty(name=name, description=desc, items=items, default=d)
    # str, schedule, and floats too small to show as numbers: text, checked when the request is built
    return StringProperty(name=name, description=desc, default=request.value_text(kind, d))


def sync_presets(preset_list: list[dict]) -> None:
    """(Re-)register one settings group per preset from a /v1/presets answer (main thread; the pump calls it)."""
    if preset_list == REG.presets and REG.dynamic:
        return
    _unregister_dynamic()
    REG.presets = list(preset_list)
    REG.idents.clear()
    REG.group_attr.clear()
    container_ann = {}
    used_attrs: set[str] = set()
    for i, p in enumerate(REG.presets):
        multi = request.stage_count(p["settings"]) > 1
        used: set[str] = set()
        ann, idents = {}, {}
        for s in request.editable_settings(p):
            ident = _ident(s["key"], used)
            idents[s["key"]] = ident
            ann[ident] = _prop_for(s, multi)
        cls = type(f"DISTILLERY_PG_preset_{i}", (bpy.types.PropertyGroup,), {"__annotations__": ann})
        bpy.utils.register_class(cls)
        REG.dynamic.append(cls)
        attr = _ident("p_" + p["name"], used_attrs)
        REG.idents[p["name"]] = idents
        REG.group_attr[p["name"]] = attr
        container_ann[attr] = PointerProperty(type=cls)
    container = type("DISTILLERY_PG_values", (bpy.types.PropertyGroup,), {"__annotations__": container_ann})
    bpy.utils.register_class(container)
    REG.dynamic.append(container)
    DISTILLERY_PG_settings.values = PointerProperty(type=container)


def _unregister_dynamic() -> None:
    if REG.dynamic:
        del DISTILLERY_PG_settings.values
    for cls in reversed(REG.dynamic):
        bpy.utils.unregister_class(cls)
    REG.dynamic.clear()


def preset_values(scene: bpy.types.Scene, preset_name: str):
    """The settings group of `preset_name` in `scene`, or None before the presets are known."""
    attr = REG.group_attr.get(preset_name)
    if attr is None or not REG.dynamic:
        return None
    return getattr(scene.distillery.values, attr)


def setting_ident(preset_name: str, key: str) -> str | None:
    return REG.idents.get(preset_name, {}).get(key)


def changed_values(scene: bpy.types.Scene, preset: dict) -> dict:
    """{key: value} of the settings the user set for this preset (untouched ones keep exact defaults)."""
    group = preset_values(scene, preset["name"])
    if group is None:
        return {}
    out = {}
    for s in request.editable_settings(preset):
        ident = REG.idents[preset["name"]].get(s["key"])
        if ident is None or not group.is_property_set(ident):
            continue
        v = getattr(group, ident)
        if s["kind"] == "pair":
            v = [float(v[0]), float(v[1])]
        elif s["kind"] == "schedule":
            v = request.coerce_text(s["key"], "schedule", v)
        elif _is_text_float(s):
            try:
                v = float(v)
            except ValueError:
                raise request.RequestError(s["key"], f"expected a number, got {v!r}") from None
        out[s["key"]] = v
    return out


def reset_values(scene: bpy.types.Scene, preset_name: str) -> None:
    group = preset_values(scene, preset_name)
    if group is not None:
        for ident in REG.idents.get(preset_name, {}).values():
            group.property_unset(ident)


# ---------------------------------------------------------------------------------------------- enums


def _preset_items(self, context):
    items = [(p["name"], p["name"], p.get("summary", ""), "", i) for i, p in enumerate(REG.presets)]
    if not items:
        items = [(DEFAULT_PRESET, DEFAULT_PRESET, "Start the backend to list its presets", "", 0)]
    REG.enum_items["preset"] = items
    return items


def _get_preset(self) -> int:
    items = REG.enum_items.get("preset") or _preset_items(self, None)
    for item in items:
        if item[0] == self.preset:
            return item[4]
    return 0


def _set_preset(self, value: int) -> None:
    items = REG.enum_items.get("preset") or _preset_items(self, None)
    for item in items:
        if item[4] == value:
            self.preset = item[0]


def _family_enum(family: str):
    def items(self, context):
        p = find_preset(self.preset)
        default = request.family_default(p, family) if p else ""
        out = [(PRESET_CHOICE, f"Preset ({default or 'per stage'})", f"The {family} the preset uses", "", 0)]
        for i, name in enumerate(request.family_choices(p, family) if p else []):
            out.append((name, name, f"Use the {name} {family} in every stage (with its own defaults)", "", i + 1))
        REG.enum_items[family] = out
        return out

    def get(self) -> int:
        for item in REG.enum_items.get(family) or items(self, None):
            if item[0] == (getattr(self, family) or PRESET_CHOICE):
                return item[4]
        return 0

    def set_(self, value: int) -> None:
        for item in REG.enum_items.get(family) or items(self, None):
            if item[4] == value:
                setattr(self, family, "" if item[0] == PRESET_CHOICE else item[0])

    return EnumProperty(name=family.capitalize(), items=items, get=get, set=set_,
                        description=f"The {family} of every stage; 'Preset' keeps the preset's choice")


def _mesh_poll(self, obj) -> bool:
    return obj.type == "MESH" and scene_sync.KIND_KEY not in obj


# ---------------------------------------------------------------------------------------------- groups


class DISTILLERY_PG_job(bpy.types.PropertyGroup):
    """One entry of the job history."""

    job_id: StringProperty(name="Job")
    prompt: StringProperty(name="Prompt")
    preset: StringProperty(name="Preset")
    state: StringProperty(name="State")
    created: FloatProperty(name="Created")
    step: IntProperty(name="Step")
    steps: IntProperty(name="Steps")
    count: IntProperty(name="Count", description="Gaussians, or mesh vertices")
    kind: StringProperty(name="Kind", description="gaussians or mesh")
    object_name: StringProperty(name="Object")
    error_code: StringProperty(name="Error")
    request_json: StringProperty(name="Request")
    placement_json: StringProperty(name="Placement")


class DISTILLERY_PG_settings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What to generate, e.g. 'a blue mug'")
    negative_prompt: StringProperty(name="Negative", description="What to steer away from")
    preset: StringProperty(name="Preset name", default=DEFAULT_PRESET)
    preset_enum: EnumProperty(name="Preset", items=_preset_items, get=_get_preset, set=_set_preset,
                              description="Named method settings (a paper's defaults) from the backend")
    prior: StringProperty(name="Prior name")
    method: StringProperty(name="Method name")
    representation: StringProperty(name="Representation name")
    prior_enum: _family_enum("prior")
    method_enum: _family_enum("method")
    representation_enum: _family_enum("representation")
    steps: IntProperty(name="Steps", default=0, min=0, max=100000,
                       description="Total optimisation steps (0 = the preset's); stages keep their proportions")
    seed: IntProperty(name="Seed", default=0, min=0, max=INT32, description="Same seed and settings, same asset")
    use_camera_front: BoolProperty(
        name="Front from camera", default=False,
        description="The active camera defines the asset's front: the result turns to face it")
    seed_object: PointerProperty(name="Seed shape", type=bpy.types.Object, poll=_mesh_poll,
                                 description="Start the Gaussians on the surface of this mesh object")
    seed_count: IntProperty(name="Seed points", default=1000, min=16, max=request.MAX_SEED_POINTS,
                            description="Points sampled on the seed shape's surface")
    show_settings: BoolProperty(name="Settings", default=False)
    show_advanced: BoolProperty(name="Advanced", default=False)

    # Job state: written by the pump, shown by the panel.
    job_id: StringProperty(name="Job")
    job_state: StringProperty(name="State")
    job_message: StringProperty(name="Status")
    job_step: IntProperty(name="Step")
    job_steps: IntProperty(name="Steps")
    job_progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    job_loss: StringProperty(name="Loss")
    job_eta: FloatProperty(name="ETA", unit="TIME_ABSOLUTE")
    job_error_code: StringProperty(name="Error")
    job_error_message: StringProperty(name="Error message")
    job_error_hint: StringProperty(name="Hint")
    job_error_field: StringProperty(name="Field at fault", description="The panel field or setting to highlight")
    job_kind: StringProperty(name="Kind", description="gaussians or mesh")
    job_count: IntProperty(name="Count", description="Gaussians, or mesh vertices, of the final asset")
    history: CollectionProperty(type=DISTILLERY_PG_job)
    history_index: IntProperty(name="Job", default=0)

    @property
    def job_running(self) -> bool:
        return self.job_state in reducer.RUNNING

    def to_request(self, context) -> tuple[dict, dict]:
        """(JobConfig dict, placement) from the panel: the ONE place UI state becomes a job request.

        placement: where the result goes (location, rotation about Z so its front faces the active camera,
        scale of a seeded shape, object name). Raises request.RequestError naming the field."""
        scene = self.id_data  # the scene that owns these settings (the pump may build it for another scene)
        preset = find_preset(self.preset)
        if preset is None:
            raise request.RequestError("preset", f"unknown preset {self.preset!r}" if REG.presets else
                                       "the presets are not loaded yet: start the backend")
        depsgraph = context.evaluated_depsgraph_get()  # up-to-date matrices of the camera and the seed
        cursor = np.array(scene.cursor.location, dtype=np.float64)
        placement = {"location": [float(x) for x in cursor], "rotation_z": 0.0, "scale": 1.0,
                     "name": scene_sync.object_name(self.prompt)}
        front = 0.0
        center = cursor
        init_points = None
        if self.seed_object is not None:
            center = _bounds_center(self.seed_object.evaluated_get(depsgraph))
            placement["location"] = [float(x) for x in center]
        if self.use_camera_front:
            cam = scene.camera
            if cam is None:
                raise request.RequestError("front from camera", "the scene has no active camera")
            try:
                front = convert.front_azimuth(np.array(cam.evaluated_get(depsgraph).matrix_world), center)
            except ValueError as exc:
                raise request.RequestError("front from camera", str(exc)) from None
            placement["rotation_z"] = convert.asset_rotation_z(front)
        if self.seed_object is not None:
            try:
                init_points, scale = scene_sync.seed_points(self.seed_object, depsgraph, center, front,
                                                            self.seed_count, self.seed)
            except ValueError as exc:
                raise request.RequestError("seed shape", str(exc)) from None
            placement["scale"] = scale
        config = request.build_config(
            preset, prompt=self.prompt, negative_prompt=self.negative_prompt, seed=self.seed, steps=self.steps,
            families={"prior": self.prior, "method": self.method, "representation": self.representation},
            values=changed_values(scene, preset), init_points=init_points)
        return config, placement


def _bounds_center(obj: bpy.types.Object) -> np.ndarray:
    corners = np.array([obj.matrix_world @ _vec(c) for c in obj.bound_box], dtype=np.float64)
    return 0.5 * (corners.min(axis=0) + corners.max(axis=0))


def _vec(c):
    from mathutils import Vector

    return Vector(c)


CLASSES = (DISTILLERY_PG_job, DISTILLERY_PG_settings)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.distillery = PointerProperty(type=DISTILLERY_PG_settings)
    if runtime.RUNTIME is not None:
        runtime.RUNTIME.on_presets = sync_presets


def unregister() -> None:
    _unregister_dynamic()
    REG.presets = []
    REG.idents.clear()
    REG.group_attr.clear()
    REG.enum_items.clear()
    if hasattr(bpy.types.Scene, "distillery"):
        del bpy.types.Scene.distillery
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
