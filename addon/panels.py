"""The N-panel (3D viewport sidebar, tab "Distillery"): draw() only.

Every known problem gets a fix-it box with the button that fixes it (`problems()` lists them; tests call it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import display, launcher, preferences, properties, request, runtime, scene_sync


@dataclass
class Problem:
    title: str
    detail: str
    operator: str
    button: str
    icon: str = "ERROR"
    props: dict = field(default_factory=dict)


ERROR_FIXES = {
    "MODEL_MISSING": ("Model missing", "distillery.open_preferences", "Model Cache Settings", {}),
    "CUDA_OOM": ("Out of GPU memory", "distillery.fix", "Lower Resolution and Retry", {"action": "LOWER_RESOLUTION"}),
    "UNKNOWN_PROMPT": ("Prompt not known to this prior", "distillery.fix", "Dismiss", {"action": "CLEAR"}),
    "INVALID_CONFIG": ("Invalid setting", "distillery.reset_settings", "Reset Settings", {}),
    "DIVERGED": ("The optimisation diverged", "distillery.fix", "Retry with a New Seed", {"action": "NEW_SEED"}),
    "WORKER_CRASHED": ("The backend worker crashed", "distillery.backend_restart", "Restart Backend", {}),
    "BACKEND_NOT_INSTALLED": ("Backend not installed", "distillery.open_preferences", "Backend Preferences", {}),
    "CANCELLED": ("Cancelled", "distillery.fix", "Dismiss", {"action": "CLEAR"}),
}


def problems(context) -> list[Problem]:
    """Every problem the panel should show now, each with its fix."""
    out: list[Problem] = []
    rt = runtime.RUNTIME
    p = preferences.prefs(context)
    s = context.scene.distillery
    if rt is not None and p is not None and rt.view.state != "alive":
        v = rt.view
        missing = None
        if p.mode == "LAUNCH" and not (p.python_path and Path(bpy.path.abspath(p.python_path)).is_file()):
            missing = "Choose the backend's Python interpreter, or use the managed environment"
        if p.mode == "MANAGED" and not launcher.venv_python(preferences.venv_dir()).is_file():
            out.append(Problem("Backend not installed", "Install its packages into the managed environment",
                               "distillery.venv_install", "Install Backend"))
        elif missing:
            out.append(Problem("Backend not installed", missing, "distillery.open_preferences", "Backend Preferences"))
        elif v.state in ("dead", "unresponsive"):
            title = "Backend not responding" if v.state == "unresponsive" else "Backend stopped"
            out.append(Problem(title, v.message, "distillery.backend_restart", "Restart Backend"))
        elif v.state == "stopped":
            out.append(Problem("Backend not running", "Start it to generate", "distillery.backend_start",
                               "Start Backend", icon="INFO"))
    mismatch = protocol_mismatch(rt)
    if mismatch:
        out.append(Problem("Backend version differs", mismatch, "distillery.backend_restart", "Restart Backend"))
    if s.job_error_code:
        title, op, button, props = ERROR_FIXES.get(
            s.job_error_code, ("Job failed", "distillery.fix", "Retry", {"action": "RETRY"}))
        detail = s.job_error_message + (f" {s.job_error_hint}" if s.job_error_hint else "")
        out.append(Problem(title, detail, op, button, props=props))
    return out


def protocol_mismatch(rt) -> str:
    if rt is None or not rt.view.health:
        return ""
    try:
        from .client import protocol
    except ImportError:
        return ""
    h = rt.view.health
    theirs = h.get("protocol_version", (h.get("versions") or {}).get("protocol"))
    if theirs is not None and int(theirs) != protocol.PROTOCOL_VERSION:
        return f"the backend speaks protocol {theirs}, this add-on {protocol.PROTOCOL_VERSION}"
    return ""


def _wrap(layout, text: str, width: int = 48) -> None:
    col = layout.column(align=True)
    line = ""
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            col.label(text=line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        col.label(text=line)


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


class DISTILLERY_PT_main(bpy.types.Panel):
    bl_label = "Distillery"
    bl_idname = "DISTILLERY_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Distillery"

    def draw(self, context):
        layout = self.layout
        s = context.scene.distillery
        rt = runtime.RUNTIME
        row = layout.row()
        if rt is not None and rt.view.state == "alive":
            row.label(text=f"Backend ready{_queue_text(rt)}", icon="CHECKMARK")
        else:
            preferences.draw_backend_status(row.column(), rt)
        row.operator("distillery.open_preferences", text="", icon="PREFERENCES")
        for prob in problems(context):
            box = layout.box()
            box.label(text=prob.title, icon=prob.icon)
            if prob.detail:
                _wrap(box, prob.detail)
            op = box.operator(prob.operator, text=prob.button)
            for k, v in prob.props.items():
                setattr(op, k, v)

        col = layout.column()
        if bpy.app.version >= (4, 1, 0):
            col.prop(s, "prompt", text="", icon="FONT_DATA", placeholder="Prompt, e.g. a blue mug")
        else:
            col.prop(s, "prompt", text="", icon="FONT_DATA")
        col.prop(s, "negative_prompt", text="Negative")
        col.prop(s, "preset_enum", text="Preset")
        preset = properties.find_preset(s.preset)
        if preset is not None and preset.get("needs_gpu"):
            col.label(text="This preset needs a CUDA GPU", icon="INFO")
        sub = col.column(align=True)
        sub.prop(s, "prior_enum", text="Prior")
        sub.prop(s, "method_enum", text="Method")
        sub.prop(s, "representation_enum", text="Representation")
        row = col.row(align=True)
        row.prop(s, "steps")
        row.prop(s, "seed")
        col.prop(s, "use_camera_front")
        row = col.row(align=True)
        row.prop(s, "seed_object")
        row.operator("distillery.use_selected", text="", icon="EYEDROPPER")
        if s.seed_object is not None:
            col.prop(s, "seed_count")

        if s.job_running:
            frac = s.job_progress
            text = f"Step {s.job_step}/{s.job_steps}" if s.job_steps else s.job_state.capitalize()
            if s.job_eta > 0 and s.job_state == "running":
                text += f"  ETA {_eta(s.job_eta)}"
            row = layout.row(align=True)
            row.progress(text=text, factor=frac, type="BAR")
            row.operator("distillery.cancel", text="", icon="CANCEL")
            if s.job_loss:
                layout.label(text=s.job_loss)
        else:
            layout.operator("distillery.generate", icon="PLAY")
        if s.job_message:
            layout.label(text=s.job_message, icon="INFO")


def _queue_text(rt) -> str:
    h = rt.view.health if rt else None
    if not h:
        return ""
    q = h.get("queue_length", h.get("queue"))
    return f" ({q} queued)" if isinstance(q, int) and q else ""


class DISTILLERY_PT_settings(bpy.types.Panel):
    bl_label = "Settings"
    bl_idname = "DISTILLERY_PT_settings"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Distillery"
    bl_parent_id = "DISTILLERY_PT_main"
    bl_options = {"DEFAULT_CLOSED"}  # noqa: RUF012 - Blender's class attribute

    def draw(self, context):
        layout = self.layout
        s = context.scene.distillery
        preset = properties.find_preset(s.preset)
        group = properties.preset_values(context.scene, s.preset)
        if preset is None or group is None:
            layout.label(text="Start the backend to see the preset's settings", icon="INFO")
            layout.operator("distillery.refresh", icon="FILE_REFRESH")
            return
        switched = {f for f in request.FAMILIES if getattr(s, f)}
        settings = request.editable_settings(preset)
        basic = [x for x in settings if not x.get("advanced", True)]
        advanced = [x for x in settings if x.get("advanced", True)]
        col = layout.column()
        for x in basic:
            self._row(col, group, preset, x, switched)
        layout.prop(s, "show_advanced", icon="TRIA_DOWN" if s.show_advanced else "TRIA_RIGHT", emboss=False)
        if s.show_advanced:
            section = None
            box = None
            for x in advanced:
                key = x["key"]
                sec = ".".join(key.split(".")[:-1]) or "job"
                if sec != section:
                    section = sec
                    box = layout.box().column(align=True)
                    box.label(text=sec.replace("stages.", "stage ").replace(".", " / "))
                self._row(box, group, preset, x, switched)
            layout.operator("distillery.reset_settings", icon="LOOP_BACK")

    @staticmethod
    def _row(layout, group, preset, x, switched) -> None:
        parts = x["key"].split(".")
        if parts[0] == "stages" and len(parts) > 3 and parts[2] in switched:
            return  # that section now uses another kind's defaults
        ident = properties.setting_ident(preset["name"], x["key"])
        if ident:
            layout.prop(group, ident)


class DISTILLERY_PT_display(bpy.types.Panel):
    bl_label = "Display"
    bl_idname = "DISTILLERY_PT_display"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Distillery"
    bl_parent_id = "DISTILLERY_PT_main"

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.get(scene_sync.KIND_KEY) == "gaussians"

    def draw(self, context):
        obj = context.active_object
        mod = obj.modifiers.get("Distillery")
        layout = self.layout
        layout.label(text=f"{obj.name}: {len(obj.data.vertices)} Gaussians, step {obj.get(scene_sync.STEP_KEY, 0)}")
        if mod is None or mod.node_group is None:
            layout.label(text="The display modifier was removed", icon="ERROR")
            return
        col = layout.column()
        for item in mod.node_group.interface.items_tree:
            if getattr(item, "in_out", None) == "INPUT" and item.socket_type != "NodeSocketGeometry":
                col.prop(mod, f'["{item.identifier}"]', text=item.name)
        layout.label(text="Viewport: Ellipsoids. Camera renders: Camera Facing", icon="INFO")
        layout.label(text="Solid view colours: Camera Facing, Color: Attribute")
        for code, sentence in display.render_notes(context.scene):
            box = layout.box()
            _wrap(box, sentence)
            label = {"VIEW_TRANSFORM": "Use Standard View Transform",
                     "TRANSPARENT_BOUNCES": "Raise Transparent Bounces"}[code]
            op = box.operator("distillery.splat_settings", text=label)
            op.setting = code
        layout.operator("distillery.export_ply", icon="EXPORT")
        layout.operator("distillery.convert_to_mesh", icon="MESH_DATA")


class DISTILLERY_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        icon = {"succeeded": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL", "running": "PLAY",
                "queued": "SORTTIME"}.get(item.state, "DOT")
        row = layout.row()
        row.label(text=item.prompt or item.job_id[:8], icon=icon)
        detail = f"{item.count}" if item.count else ""
        if item.state not in runtime.TERMINAL and item.steps:
            detail = f"{item.step}/{item.steps}"
        row.label(text=detail)


class DISTILLERY_PT_history(bpy.types.Panel):
    bl_label = "History"
    bl_idname = "DISTILLERY_PT_history"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Distillery"
    bl_parent_id = "DISTILLERY_PT_main"
    bl_options = {"DEFAULT_CLOSED"}  # noqa: RUF012 - Blender's class attribute

    def draw(self, context):
        layout = self.layout
        s = context.scene.distillery
        layout.template_list("DISTILLERY_UL_jobs", "", s, "history", s, "history_index", rows=3)
        if 0 <= s.history_index < len(s.history):
            item = s.history[s.history_index]
            layout.label(text=f"{item.preset} · {item.state} · {item.job_id[:12]}")
            row = layout.row(align=True)
            for action, icon in (("SELECT", "RESTRICT_SELECT_OFF"), ("REIMPORT", "IMPORT"), ("CONTINUE", "PLAY"),
                                 ("DELETE", "TRASH")):
                op = row.operator("distillery.history", text=action.capitalize().replace("Reimport", "Re-import"),
                                  icon=icon)
                op.action = action
                op.index = s.history_index
        row = layout.row(align=True)
        row.operator("distillery.import_ply", icon="IMPORT")


CLASSES = (DISTILLERY_PT_main, DISTILLERY_PT_settings, DISTILLERY_PT_display, DISTILLERY_UL_jobs,
           DISTILLERY_PT_history)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
