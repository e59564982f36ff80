"""Operators: short execute()s that read the scene, post work to runtime threads, and return at once.

('INVOKE_DEFAULT' runs execute() in module mode, so no logic lives in invoke()/modal().)
"""

from __future__ import annotations

import json
import os
import random

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import display, failures, launcher, mesh_convert, preferences, properties, reducer, request, runtime, scene_sync
from .client import ply as plyio


def _rt(op) -> runtime.Runtime | None:
    if runtime.RUNTIME is None:
        op.report({"ERROR"}, "Distillery is not registered")
    return runtime.RUNTIME


class DISTILLERY_OT_generate(bpy.types.Operator):
    """Send the prompt and settings to the backend and show the result live at the 3D cursor"""

    bl_idname = "distillery.generate"
    bl_label = "Generate"

    def execute(self, context):
        rt = _rt(self)
        if rt is None:
            return {"CANCELLED"}
        s = context.scene.distillery
        config = placement = None
        if properties.presets():  # check the panel now; before the presets are known, once they arrive
            try:
                config, placement = s.to_request(context)
            except request.RequestError as exc:
                runtime.write_view(s, reducer.reduce(reducer.JobView(), runtime.request_failure(exc)))
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
        if rt.view.state == "alive" and config is not None:
            rt.submit(context.scene.name, config, placement)
            runtime.write_view(s, reducer.JobView(state="submitting", message="submitting"))
            return {"FINISHED"}
        # Not ready: start the backend if it is not starting, and send the job once it answers (the pump).
        if rt.view.state != "starting":
            p = preferences.prefs(context)
            if p is None or not p.auto_start:
                runtime.write_view(s, reducer.reduce(reducer.JobView(), {
                    "type": "submit_failed", "code": "BACKEND_NOT_RUNNING", "message": "the backend is not running"}))
                return {"CANCELLED"}
            try:
                preferences.start_backend(context)
            except (launcher.LaunchError, RuntimeError) as exc:
                runtime.write_view(s, reducer.reduce(reducer.JobView(), {
                    "type": "submit_failed", "code": getattr(exc, "code", "BACKEND_NOT_INSTALLED"),
                    "message": str(exc), "hint": getattr(exc, "hint", "")}))
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
        rt.pending_submit = {"scene": context.scene.name, "config": config, "placement": placement}
        runtime.write_view(s, reducer.reduce(reducer.JobView(), {
            "type": "waiting", "message": "starting the backend; the job is sent when it is ready"}))
        return {"FINISHED"}


class DISTILLERY_OT_cancel(bpy.types.Operator):
    """Stop the running job (the backend keeps its last checkpoint)"""

    bl_idname = "distillery.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        rt = _rt(self)
        s = context.scene.distillery
        if rt is None:
            return {"CANCELLED"}
        if s.job_state == "waiting":  # not sent yet: forget it
            rt.pending_submit = None
            runtime.write_view(s, reducer.JobView(message="not sent: cancelled"))
            return {"FINISHED"}
        if not s.job_id:
            return {"CANCELLED"}
        if rt.cancel(s.job_id, backend_alive=rt.view.state == "alive"):
            runtime.dispatch(context.scene, s.job_id, {"type": "status", "state": "cancelling"})
        else:
            runtime.dispatch(context.scene, s.job_id, {"type": "cancel_deferred"})
            self.report({"WARNING"}, "The backend is down: the cancel is sent when it is back")
        return {"FINISHED"}


class DISTILLERY_OT_backend_start(bpy.types.Operator):
    """Start the backend (or connect to it) as the add-on preferences say"""

    bl_idname = "distillery.backend_start"
    bl_label = "Start"

    def execute(self, context):
        try:
            preferences.start_backend(context)
        except (launcher.LaunchError, RuntimeError) as exc:
            self.report({"ERROR"}, f"{exc}. {getattr(exc, 'hint', '')}".strip())
            return {"CANCELLED"}
        return {"FINISHED"}


class DISTILLERY_OT_backend_stop(bpy.types.Operator):
    """Stop the launched backend (its running job resumes from its checkpoint next time); frees GPU memory"""

    bl_idname = "distillery.backend_stop"
    bl_label = "Stop"

    def execute(self, context):
        rt = _rt(self)
        if rt is None:
            return {"CANCELLED"}
        rt.link.stop()
        return {"FINISHED"}


class DISTILLERY_OT_backend_restart(bpy.types.Operator):
    """Stop and start the backend again"""

    bl_idname = "distillery.backend_restart"
    bl_label = "Restart"

    def execute(self, context):
        # Starting again stops the process launched before (waiting for it, off the main thread).
        return bpy.ops.distillery.backend_start()


class DISTILLERY_OT_show_log(bpy.types.Operator):
    """Open the backend log (and the installer log) in a Text Editor block"""

    bl_idname = "distillery.show_log"
    bl_label = "Show Log"

    def execute(self, context):
        base = preferences.user_dir()
        lines = []
        for path in (base / "backend" / "backend.log", base / "install.log"):
            if path.exists():
                lines.append(f"# {path}")
                lines.extend(launcher.read_tail(path, 400))
        text = bpy.data.texts.get("Distillery log") or bpy.data.texts.new("Distillery log")
        text.clear()
        text.write("\n".join(lines) if lines else "No log yet.")
        self.report({"INFO"}, "The log is in the Text Editor as 'Distillery log'")
        return {"FINISHED"}


class DISTILLERY_OT_open_preferences(bpy.types.Operator):
    """Open the add-on's preferences"""

    bl_idname = "distillery.open_preferences"
    bl_label = "Backend Preferences"

    def execute(self, context):
        try:
            bpy.ops.preferences.addon_show(module=__package__)
        except RuntimeError:
            return {"CANCELLED"}
        return {"FINISHED"}


class DISTILLERY_OT_venv_install(bpy.types.Operator):
    """Create the managed environment and install the backend's packages with pip (needs online access)"""

    bl_idname = "distillery.venv_install"
    bl_label = "Install Backend Packages"

    use_managed: BoolProperty(name="Use it", default=False,
                              description="Switch the preferences to the managed environment first")

    def execute(self, context):
        rt = _rt(self)
        p = preferences.prefs(context)
        if rt is None or p is None:
            return {"CANCELLED"}
        if self.use_managed:
            p.mode = "MANAGED"
        if not preferences.online_access() and "--find-links" not in p.pip_args and "--no-index" not in p.pip_args:
            self.report({"ERROR"}, "Online access is off (Preferences > System > Network); or give pip "
                                   "--no-index --find-links to a folder of wheels")
            return {"CANCELLED"}
        if rt.installer is not None and rt.installer.state == "running":
            return {"CANCELLED"}
        try:
            steps = preferences.installer_steps(p)
        except (launcher.LaunchError, OSError, KeyError) as exc:
            self.report({"ERROR"}, f"cannot prepare the installation: {exc}")
            return {"CANCELLED"}
        rt.installer = launcher.Installer(steps, preferences.venv_dir(), preferences.user_dir() / "install.log")
        rt.installer.start()
        return {"FINISHED"}


class DISTILLERY_OT_download_model(bpy.types.Operator):
    """Download the missing model with the backend's own command (`distillery models download NAME`), in the
    background, into the model cache; then run the job again"""

    bl_idname = "distillery.download_model"
    bl_label = "Download Model"

    model: StringProperty(name="Model", description="Short name or Hugging Face id (default: the one the error names)")

    def execute(self, context):
        rt = _rt(self)
        p = preferences.prefs(context)
        s = context.scene.distillery
        if rt is None or p is None:
            return {"CANCELLED"}
        name = (self.model or failures.model_name_from_hint(s.job_error_hint)
                or failures.model_name_from_hint(s.job_error_message))  # "... distillery models download NAME"
        if not name:
            self.report({"ERROR"}, "The error names no model; see 'distillery models' for the list")
            return {"CANCELLED"}
        if not preferences.online_access():
            self.report({"ERROR"}, "Online access is off (Preferences > System > Network): turn it on to download")
            return {"CANCELLED"}
        if rt.installer is not None and rt.installer.state == "running":
            return {"CANCELLED"}
        try:
            step = preferences.download_step(p, name)
        except (launcher.LaunchError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        rt.installer = launcher.Installer([step], preferences.venv_dir(), preferences.user_dir() / "install.log")
        rt.installer.start()
        s.job_message = f"downloading {name}; press Generate when it is done"
        return {"FINISHED"}


class DISTILLERY_OT_venv_cancel(bpy.types.Operator):
    """Stop the installation"""

    bl_idname = "distillery.venv_cancel"
    bl_label = "Cancel Installation"

    def execute(self, context):
        rt = _rt(self)
        if rt is None or rt.installer is None:
            return {"CANCELLED"}
        rt.installer.cancel()
        return {"FINISHED"}


class DISTILLERY_OT_refresh_presets(bpy.types.Operator):
    """Reconnect and reload the presets and health from the backend"""

    bl_idname = "distillery.refresh"
    bl_label = "Refresh"

    def execute(self, context):
        return bpy.ops.distillery.backend_start()


class DISTILLERY_OT_reset_settings(bpy.types.Operator):
    """Put every setting of this preset back to the backend's default"""

    bl_idname = "distillery.reset_settings"
    bl_label = "Reset Settings"

    def execute(self, context):
        s = context.scene.distillery
        properties.reset_values(context.scene, s.preset)
        s.prior = s.method = s.representation = ""
        s.steps = 0
        return {"FINISHED"}


class DISTILLERY_OT_fix(bpy.types.Operator):
    """Apply the suggested fix and try again"""

    bl_idname = "distillery.fix"
    bl_label = "Fix"

    action: EnumProperty(items=[
        ("LOWER_RESOLUTION", "Lower resolution", "Halve the render resolution and the Gaussian cap, then retry"),
        ("NEW_SEED", "New seed", "Try another random seed"),
        ("RETRY", "Retry", "Submit the same settings again"),
        ("RESET_FIELD", "Reset setting", "Put the setting at fault back to the preset's default"),
        ("NO_CAMERA_FRONT", "Cursor front", "Turn off 'Front from camera' and retry"),
        ("CLEAR_SEED", "Clear seed shape", "Start from the preset's own initialisation and retry"),
        ("CLEAR", "Dismiss", "Hide this message"),
    ])

    @classmethod
    def description(cls, context, props):
        return {"LOWER_RESOLUTION": "Halve the render resolution and the Gaussian cap, then retry",
                "NEW_SEED": "Try another random seed", "RETRY": "Submit the same settings again",
                "RESET_FIELD": "Put the setting at fault back to the preset's default",
                "NO_CAMERA_FRONT": "Turn off 'Front from camera' and retry",
                "CLEAR_SEED": "Clear the seed shape and retry", "CLEAR": "Hide this message"}[props.action]

    def execute(self, context):
        s = context.scene.distillery
        if self.action == "LOWER_RESOLUTION":
            self._lower(context)
        elif self.action == "NEW_SEED":
            s.seed = random.randrange(0, 2**31 - 1)
        elif self.action == "RESET_FIELD":
            self._reset_field(context, s.job_error_field)
        elif self.action == "NO_CAMERA_FRONT":
            s.use_camera_front = False
        elif self.action == "CLEAR_SEED":
            s.seed_object = None
        s.job_error_code = s.job_error_message = s.job_error_hint = s.job_error_field = ""
        if self.action in ("CLEAR", "RESET_FIELD"):
            if not s.job_running:
                s.job_state = ""
            return {"FINISHED"}
        return bpy.ops.distillery.generate()

    @staticmethod
    def _reset_field(context, key: str) -> None:
        s = context.scene.distillery
        group = properties.preset_values(context.scene, s.preset)
        ident = properties.setting_ident(s.preset, key)
        if group is not None and ident is not None:
            group.property_unset(ident)
        elif key in request.FAMILIES:
            setattr(s, key, "")

    def _lower(self, context) -> None:
        group = properties.preset_values(context.scene, context.scene.distillery.preset)
        for ident, _key, _old, new in lower_plan(context):
            setattr(group, ident, new)


def lower_plan(context) -> list[tuple[str, str, int, int]]:
    """(property, setting key, value now, value after) of what "Lower Resolution" halves: each stage's render
    resolution and Gaussian cap, never below the setting's minimum."""
    s = context.scene.distillery
    preset = properties.find_preset(s.preset)
    group = properties.preset_values(context.scene, s.preset)
    if preset is None or group is None:
        return []
    out = []
    for setting in preset["settings"]:
        key = setting["key"]
        ident = properties.setting_ident(s.preset, key)
        if ident is None:
            continue
        if key.endswith(".camera.resolution") or key.endswith(".representation.max_count"):
            lo = int(setting.get("lo") or 1)
            now = getattr(group, ident)
            if max(lo, now // 2) != now:
                out.append((ident, key, now, max(lo, now // 2)))
    return out


def lowered_settings(context) -> str:
    """The settings "Lower Resolution" changes, named for the fix-it box: "stages.0.camera.resolution 64 -> 32"."""
    return ", ".join(f"{key} {now} -> {new}" for _i, key, now, new in lower_plan(context))


class DISTILLERY_OT_history_action(bpy.types.Operator):
    """Act on a job of the history"""

    bl_idname = "distillery.history"
    bl_label = "Job"

    action: EnumProperty(items=[
        ("REIMPORT", "Re-import", "Download the job's final asset again as a new object"),
        ("CONTINUE", "Continue", "Watch the job again if it still runs, else run its settings again"),
        ("DELETE", "Delete", "Delete the job and its files on the backend (the scene object stays)"),
        ("SELECT", "Select", "Select the job's object"),
    ])
    index: IntProperty(default=-1)

    @classmethod
    def description(cls, context, props):
        return {"REIMPORT": "Download the job's final asset again as a new object",
                "CONTINUE": "Watch the job again if it still runs; otherwise submit its settings again",
                "DELETE": "Delete the job on the backend and remove it from this list",
                "SELECT": "Select the job's object"}[props.action]

    def execute(self, context):
        rt = _rt(self)
        s = context.scene.distillery
        index = self.index if self.index >= 0 else s.history_index
        if rt is None or not (0 <= index < len(s.history)):
            return {"CANCELLED"}
        item = s.history[index]
        job_id = item.job_id
        try:
            if self.action == "REIMPORT":
                rt.reimport(job_id, context.scene.name, item.kind or "gaussians")
            elif self.action == "CONTINUE":
                if item.state in runtime.TERMINAL:
                    if rt.session is None:
                        raise RuntimeError("the backend is not connected")
                    rt.submit(context.scene.name, json.loads(item.request_json), json.loads(item.placement_json))
                    s.job_state, s.job_message = "submitting", "submitting"
                else:
                    rt.watch(job_id, context.scene.name)
                    s.job_id, s.job_state = job_id, item.state
            elif self.action == "DELETE":
                rt.delete(job_id)
                s.history.remove(index)
                s.history_index = min(s.history_index, max(0, len(s.history) - 1))
                if s.job_id == job_id:
                    s.job_id, s.job_state, s.job_message = "", "", ""
            elif self.action == "SELECT":
                obj = scene_sync.find_object(job_id)
                if obj is None:
                    raise RuntimeError("the job's object is no longer in the file")
                for o in context.view_layer.objects:
                    o.select_set(False)
                obj.select_set(True)
                context.view_layer.objects.active = obj
        except (RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class DISTILLERY_OT_use_selected(bpy.types.Operator):
    """Use the active mesh object as the seed shape"""

    bl_idname = "distillery.use_selected"
    bl_label = "Use Selected"

    def execute(self, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or scene_sync.KIND_KEY in obj:
            self.report({"ERROR"}, "Select a mesh object (not a generated one)")
            return {"CANCELLED"}
        context.scene.distillery.seed_object = obj
        return {"FINISHED"}


class DISTILLERY_OT_import_ply(bpy.types.Operator, ImportHelper):
    """Import a 3D Gaussian Splatting PLY file as a Gaussian object at the 3D cursor"""

    bl_idname = "distillery.import_ply"
    bl_label = "Import 3DGS PLY"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 - Blender's class attribute

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})

    def execute(self, context):
        rt = runtime.RUNTIME
        if rt is None:  # not registered through the add-on (scripts): read here
            try:
                obj = scene_sync.import_gaussian_ply(context.scene, self.filepath)
            except (plyio.PLYError, OSError) as exc:
                self.report({"ERROR"}, f"{os.path.basename(self.filepath)}: {exc}")
                return {"CANCELLED"}
            self.report({"INFO"}, f"Imported {len(obj.data.vertices)} Gaussians")
            return {"FINISHED"}
        if not os.path.isfile(self.filepath):
            self.report({"ERROR"}, f"{self.filepath}: no such file")
            return {"CANCELLED"}
        rt.import_ply(self.filepath, context.scene.name, scene_sync.read_import)  # a thread reads; the pump adds
        context.scene.distillery.job_message = f"importing {os.path.basename(self.filepath)}"
        self.report({"INFO"}, f"Importing {os.path.basename(self.filepath)} in the background")
        return {"FINISHED"}


class DISTILLERY_OT_export_ply(bpy.types.Operator, ExportHelper):
    """Export the active Gaussian object as a 3D Gaussian Splatting PLY file, in world space"""

    bl_idname = "distillery.export_ply"
    bl_label = "Export 3DGS PLY"

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "MESH" and "opacity" in obj.data.attributes

    def execute(self, context):
        try:
            n = scene_sync.export_gaussian_ply(context.active_object, self.filepath)
        except (plyio.PLYError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {n} Gaussians to {self.filepath}")
        return {"FINISHED"}


class DISTILLERY_OT_convert_to_mesh(bpy.types.Operator):
    """Turn the active Gaussian object into a textured mesh, made by the backend (a new object beside it)"""

    bl_idname = "distillery.convert_to_mesh"
    bl_label = "Convert to mesh"

    @classmethod
    def poll(cls, context):
        return mesh_convert.is_gaussian_object(context.active_object)

    def execute(self, context):
        rt = _rt(self)
        if rt is None:
            return {"CANCELLED"}
        if rt.session is None or rt.view.state != "alive":
            self.report({"ERROR"}, "The backend is not running: start it in the Distillery panel first")
            return {"CANCELLED"}
        obj = context.active_object
        try:
            mesh_convert.start(rt.mailbox, rt.session, context.scene.name, obj)
        except (plyio.PLYError, ValueError) as exc:
            self.report({"ERROR"}, f"{obj.name}: {exc}")
            return {"CANCELLED"}
        context.scene.distillery.job_message = f"uploading {obj.name} for conversion to a mesh"
        self.report({"INFO"}, f"Converting {obj.name} to a mesh")
        return {"FINISHED"}


class DISTILLERY_OT_splat_settings(bpy.types.Operator):
    """Change a scene setting so that splats look as the backend renders them"""

    bl_idname = "distillery.splat_settings"
    bl_label = "Splat Render Setting"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 - Blender's class attribute

    setting: EnumProperty(items=[
        ("VIEW_TRANSFORM", "Use Exact View Transform",
         "Set the view transform that shows the splats' colours exactly: Raw when colours blend as trained, "
         "Standard when they blend in linear light"),
        ("TRANSPARENT_BOUNCES", "More Transparent Bounces", "Raise Cycles' transparent bounces (no holes)"),
    ])

    def execute(self, context):
        display.apply_render_setting(context.scene, self.setting)
        return {"FINISHED"}


def _menu_import(self, context):
    self.layout.operator(DISTILLERY_OT_import_ply.bl_idname, text="3D Gaussian Splatting (.ply)")


def _menu_export(self, context):
    self.layout.operator(DISTILLERY_OT_export_ply.bl_idname, text="3D Gaussian Splatting (.ply)")


CLASSES = (
    DISTILLERY_OT_generate, DISTILLERY_OT_cancel, DISTILLERY_OT_backend_start, DISTILLERY_OT_backend_stop,
    DISTILLERY_OT_backend_restart, DISTILLERY_OT_show_log, DISTILLERY_OT_open_preferences,
    DISTILLERY_OT_venv_install, DISTILLERY_OT_venv_cancel, DISTILLERY_OT_download_model, DISTILLERY_OT_refresh_presets,
    DISTILLERY_OT_reset_settings, DISTILLERY_OT_fix, DISTILLERY_OT_history_action, DISTILLERY_OT_use_selected,
    DISTILLERY_OT_import_ply, DISTILLERY_OT_export_ply, DISTILLERY_OT_splat_settings, DISTILLERY_OT_convert_to_mesh,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister() -> None:
    mesh_convert.unregister()
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
