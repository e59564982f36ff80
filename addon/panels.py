"""The N-panel (3D viewport sidebar, tab "Distillery"): draw() only.

Every known problem gets a fix-it box with the button that fixes it (`problems()` lists them; tests call it).
"""

from __future__ import annotations

from pathlib import Path

import bpy

from . import display, failures, launcher, operators, preferences, properties, request, runtime, scene_sync

Problem = failures.Problem
_MANAGED_CHECK: dict[str, tuple[float, str, str]] = {}  # venv -> (site-packages mtime, code, message)


def _managed_problem(venv: Path) -> tuple[str, str]:
    """(code, message) of a managed environment that cannot start the backend, ("", "") when it can. Cached
    by the site-packages folder's modification time: the panel draws often."""
    sites = launcher.site_packages(venv)
    stamp = max([p.stat().st_mtime for p in sites if p.exists()] + [0.0])
    cached = _MANAGED_CHECK.get(str(venv))
    if cached is not None and cached[0] == stamp and stamp:
        return cached[1], cached[2]
    try:
        launcher.check_managed(venv)
        out = ("", "")
    except launcher.LaunchError as exc:
        out = (exc.code, str(exc))
    _MANAGED_CHECK[str(venv)] = (stamp, *out)
    return out


def backend_problem(rt, p) -> Problem | None:
    """The backend's fix-it box, or None when it is ready (or starting)."""
    if rt is None or p is None or rt.view.state in ("alive", "starting", "stopping"):
        return None
    v = rt.view
    if p.mode == "LAUNCH" and not (p.python_path and Path(bpy.path.abspath(p.python_path)).is_file()):
        return failures.problem_for("BACKEND_NO_INTERPRETER", "Choose the backend's Python interpreter, or "
                                    "install the backend into the managed environment")
    if p.mode == "MANAGED":
        code, message = _managed_problem(preferences.venv_dir())
        if code:
            return failures.problem_for(code, message)
    if v.state in ("dead", "unresponsive"):
        code = v.code or ("BACKEND_UNRESPONSIVE" if v.state == "unresponsive" else "BACKEND_EXITED")
        return failures.problem_for(code, v.message, v.hint)
    prob = failures.problem_for("BACKEND_NOT_RUNNING")
    prob.icon = "INFO"
    return prob


def problems(context) -> list[Problem]:
    """Every problem the panel should show now, each with its cause (one line) and the actions that fix it."""
    out: list[Problem] = []
    rt = runtime.RUNTIME
    p = preferences.prefs(context)
    s = context.scene.distillery
    backend = backend_problem(rt, p)
    if backend is not None:
        out.append(backend)
    mismatch = protocol_mismatch(rt)
    if mismatch:
        out.append(failures.problem_for("PROTOCOL_MISMATCH", mismatch))
    if s.job_error_code and s.job_error_code != (backend.code if backend else ""):
        prob = failures.problem_for(s.job_error_code, s.job_error_message, s.job_error_hint, s.job_error_field)
        if s.job_error_code == "CUDA_OOM":
            lowered = operators.lowered_settings(context)
            if lowered:
                prob.cause = f"{prob.cause}; the fix lowers {lowered}"
        out.append(prob)
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


def draw_problem(box, prob: Problem) -> None:
    """A fix-it box: title, the cause in one line, the hint (e.g. a download command), the fixing buttons."""
    box.label(text=prob.title, icon=prob.icon)
    box.label(text=prob.cause)
    if prob.hint:
        box.label(text=prob.hint, icon="INFO")
    row = box.row(align=True)
    for action in prob.actions:
        op = row.operator(action.operator, text=action.button)
        for k, v in action.props:
            setattr(op, k, v)


def _field_row(layout, s, name: str):
    """A column whose widgets are drawn red when `name` is the field at fault."""
    col = layout.column(align=True)
    col.alert = s.job_error_field == name
    return col


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
            preferences.draw_backend_status(row.column(), rt, brief=True)
        row.operator("distillery.open_preferences", text="", icon="PREFERENCES")
        for prob in problems(context):
            draw_problem(layout.box(), prob)
        snap = rt.installer.snapshot() if rt is not None and rt.installer is not None else None
        if snap and snap["state"] == "running":  # an install or a model download started from a fix-it box
            row = layout.row(align=True)
            row.progress(text=snap["message"], factor=snap["progress"], type="BAR")
            row.operator("distillery.venv_cancel", text="", icon="CANCEL")

        col = layout.column()
        sub = _field_row(col, s, "prompt")
        if bpy.app.version >= (4, 1, 0):
            sub.prop(s, "prompt", text="", icon="FONT_DATA", placeholder="Prompt, e.g. a blue mug")
        else:
            sub.prop(s, "prompt", text="", icon="FONT_DATA")
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
        _field_row(col, s, "front from camera").prop(s, "use_camera_front")
        row = _field_row(col, s, "seed shape").row(align=True)
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
        if not s.show_advanced:
            advanced = [x for x in advanced if x["key"] == s.job_error_field]  # the setting at fault stays visible
        if advanced:
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
            row = layout.row()
            row.alert = bpy.context.scene.distillery.job_error_field == x["key"]  # the setting at fault
            row.prop(group, ident)


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
            if (getattr(item, "in_out", None) == "INPUT" and item.socket_type != "NodeSocketGeometry"
                    and item.name not in display.AUTOMATIC_INPUTS):
                col.prop(mod, f'["{item.identifier}"]', text=item.name)
        layout.prop(context.scene.distillery, "splat_blend")
        layout.label(text="Viewport: Ellipsoids. Camera renders: Camera Facing", icon="INFO")
        layout.label(text="Solid view colours: Camera Facing, Color: Attribute")
        for code, sentence in display.render_notes(context.scene):
            box = layout.box()
            _wrap(box, sentence)
            label = {"VIEW_TRANSFORM": f"Use {display.VIEW_TRANSFORMS[display.scene_blend(context.scene)]} "
                                       f"View Transform",
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
        detail = (f"{item.count} verts" if item.kind == "mesh" else f"{item.count}") if item.count else ""
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
