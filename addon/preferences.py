"""Add-on preferences: how to reach a backend, and the managed environment.

Three ways: launch the backend with a Python interpreter you choose; launch it from a managed virtual
environment that the add-on creates under its user extension directory and fills with pip when you press
Install; or connect to a URL (a backend started by hand, maybe on another machine through an SSH tunnel)
with its token file. Nothing here touches the network or starts a process in register().
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import launcher, runtime

MODES = [
    ("LAUNCH", "Python interpreter", "Launch the backend with a Python that has its packages (torch, ...)"),
    ("MANAGED", "Managed environment", "Launch it from a virtual environment the add-on creates and fills"),
    ("CONNECT", "Connect to URL", "Use a backend that is already running (give its URL and token file)"),
]
TORCH_VARIANTS = [
    ("DEFAULT", "Default", "PyTorch from the package index (CUDA build on Linux, CPU/MPS elsewhere)"),
    ("CPU", "CPU only", "The small CPU build (no GPU)"),
    ("CU121", "CUDA 12.1", "The CUDA 12.1 build"),
    ("CU124", "CUDA 12.4", "The CUDA 12.4 build"),
]


def user_dir() -> Path:
    """The add-on's writable folder (never inside the extension directory, which upgrades replace)."""
    try:
        return Path(bpy.utils.extension_path_user(__package__, create=True))
    except (ValueError, AttributeError):  # loaded as a legacy add-on (development checkout)
        path = Path(bpy.utils.user_resource("DATAFILES", path="distillery", create=True))
        return path


def prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def venv_dir() -> Path:
    return user_dir() / "venv"


def launch_spec(p) -> launcher.LaunchSpec:
    """The launch command the preferences describe (LAUNCH or MANAGED)."""
    base = user_dir()
    python = str(launcher.venv_python(venv_dir())) if p.mode == "MANAGED" else bpy.path.abspath(p.python_path)
    port = p.port or launcher.free_port()
    data = Path(bpy.path.abspath(p.data_dir)) if p.data_dir else base / "data"
    return launcher.LaunchSpec(python=python, port=port, token_file=base / "backend" / "token",
                               data_dir=data, log_file=base / "backend" / "backend.log",
                               model_cache=bpy.path.abspath(p.model_cache) if p.model_cache else "")


def start_backend(context) -> None:
    """Start (or connect to) the backend the preferences describe. Non-blocking."""
    p = prefs(context)
    rt = runtime.RUNTIME
    if rt is None or p is None:
        raise RuntimeError("the add-on is not registered")
    rt.link.timeout = p.request_timeout
    if p.mode == "CONNECT":
        rt.link.connect(p.url, bpy.path.abspath(p.token_file) if p.token_file else "")
        return
    spec = launch_spec(p)
    try:
        if p.mode == "MANAGED":
            launcher.check_managed(venv_dir())  # a half-made environment is not "installed"
        launcher.check_interpreter(spec.python)
    except launcher.LaunchError as exc:
        v = rt.view  # main thread: the panel shows the cause and its fix at once
        v.state, v.message, v.hint, v.code = "dead", str(exc), exc.hint, exc.code
        raise
    rt.link.launch(spec, startup_timeout=p.startup_timeout)


def online_access() -> bool:
    """Blender's "Allow Online Access" (tests replace this function; module mode has it off)."""
    return bool(getattr(bpy.app, "online_access", True))


def download_step(p, model: str) -> launcher.Step:
    """The backend's own download command for `model`, run with the backend's interpreter and environment
    (so HF_HOME is the model cache the backend reads)."""
    if p.mode == "CONNECT":
        raise launcher.LaunchError(f"the backend runs elsewhere: run `distillery models download {model}` there")
    spec = launch_spec(p)
    launcher.check_interpreter(spec.python)
    return launcher.Step(f"Download {model}", [spec.python, "-m", "backend", "models", "download", model],
                         spec.environment())


class DISTILLERY_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    mode: EnumProperty(name="Backend", items=MODES, default="LAUNCH")
    python_path: StringProperty(name="Python", subtype="FILE_PATH",
                                description="A Python 3.11+ interpreter with the backend's packages installed")
    url: StringProperty(name="URL", default="http://127.0.0.1:8765", description="Where the backend listens")
    token_file: StringProperty(name="Token file", subtype="FILE_PATH",
                               description="The 0600 file the backend wrote its session token into")
    port: IntProperty(name="Port", default=0, min=0, max=65535, description="Port to launch on (0 = any free port)")
    data_dir: StringProperty(name="Data folder", subtype="DIR_PATH",
                             description="Jobs, checkpoints and results (empty = the add-on's user folder)")
    model_cache: StringProperty(name="Model cache", subtype="DIR_PATH",
                                description="Where diffusion weights are cached (HF_HOME; empty = default)")
    request_timeout: FloatProperty(name="Request timeout", default=5.0, min=0.5, max=120.0, unit="TIME_ABSOLUTE",
                                   description="Timeout of each call to the backend (always off the main thread)")
    startup_timeout: FloatProperty(name="Start-up timeout", default=120.0, min=5.0, max=1800.0,
                                   unit="TIME_ABSOLUTE", description="How long a launched backend may take to answer")
    auto_start: BoolProperty(name="Start on Generate", default=True,
                             description="Generate starts the backend first when it is not running")
    base_python: StringProperty(name="Base Python", subtype="FILE_PATH", default="",
                                description="Interpreter that creates the managed environment (empty = Blender's)")
    torch_variant: EnumProperty(name="PyTorch", items=TORCH_VARIANTS, default="DEFAULT")
    pip_args: StringProperty(name="Extra pip arguments", default="",
                             description="e.g. --find-links /path/to/wheels for an offline install")
    show_log: BoolProperty(name="Show log", default=False)

    def draw(self, context):
        layout = self.layout
        rt = runtime.RUNTIME
        layout.prop(self, "mode", expand=True)
        col = layout.column()
        if self.mode == "LAUNCH":
            col.prop(self, "python_path")
        elif self.mode == "MANAGED":
            self._draw_managed(col, rt)
        else:
            col.prop(self, "url")
            col.prop(self, "token_file")
        if self.mode != "CONNECT":
            row = col.row()
            row.prop(self, "port")
            row.prop(self, "auto_start")
            col.prop(self, "data_dir")
        col.prop(self, "model_cache")
        row = col.row()
        row.prop(self, "request_timeout")
        row.prop(self, "startup_timeout")

        box = layout.box()
        draw_backend_status(box, rt, full=True)
        row = box.row(align=True)
        row.operator("distillery.backend_start", icon="PLAY")
        row.operator("distillery.backend_stop", icon="PAUSE")
        row.operator("distillery.backend_restart", icon="FILE_REFRESH")
        row.operator("distillery.show_log", icon="TEXT")

    def _draw_managed(self, col, rt) -> None:
        col.label(text=f"Environment: {venv_dir()}")
        installed = not launcher.missing_packages(venv_dir()) and launcher.venv_python(venv_dir()).is_file()
        row = col.row()
        row.prop(self, "torch_variant")
        row.prop(self, "base_python")
        col.prop(self, "pip_args")
        inst = rt.installer if rt else None
        snap = inst.snapshot() if inst else None
        if snap and snap["state"] == "running":
            col.progress(text=f"{snap['message']} ({snap['step'] + 1}/{snap['steps']})", factor=snap["progress"])
            col.operator("distillery.venv_cancel", icon="CANCEL")
        else:
            text = "Reinstall backend packages" if installed else "Install backend packages"
            col.operator("distillery.venv_install", text=text, icon="IMPORT")
            if snap:
                icon = {"succeeded": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}.get(snap["state"], "INFO")
                col.label(text=snap["message"], icon=icon)
        if snap and snap["log"]:
            col.prop(self, "show_log", text="Installer log", icon="TRIA_DOWN" if self.show_log else "TRIA_RIGHT",
                     emboss=False)
            if self.show_log:
                logbox = col.box().column(align=True)
                for line in snap["log"]:
                    logbox.label(text=line[:160])


def draw_backend_status(layout, rt, full: bool = False, brief: bool = False) -> None:
    """Backend state, and with `full` its versions, devices and renderers (from /v1/health). `brief`: the
    state line only (the panel's fix-it box states the cause)."""
    if rt is None:
        layout.label(text="Add-on not registered", icon="ERROR")
        return
    v = rt.view
    icon = {"alive": "CHECKMARK", "starting": "SORTTIME", "stopping": "SORTTIME", "unresponsive": "ERROR",
            "dead": "ERROR", "stopped": "RADIOBUT_OFF"}.get(v.state, "INFO")
    where = f" at {v.base_url}" if v.base_url and v.state != "stopped" else ""
    layout.label(text=f"Backend {v.state}{where}", icon=icon)
    if brief:
        return
    if v.message and v.state != "alive":
        layout.label(text=v.message)
    if v.hint and v.state != "alive":
        layout.label(text=v.hint, icon="INFO")
    h = v.health or {}
    if full and h and v.state == "alive":
        col = layout.column(align=True)
        for key, value in health_lines(h):
            row = col.row()
            row.label(text=key)
            row.label(text=value)
    if full and v.log_tail and v.state in ("dead", "unresponsive"):
        col = layout.box().column(align=True)
        for line in v.log_tail[-8:]:
            col.label(text=line[:160])


def health_lines(h: dict) -> list[tuple[str, str]]:
    """(label, text) rows of a /v1/health answer, whatever extra keys it carries."""
    rows = []
    for key in ("version", "versions", "protocol_version", "worker", "devices", "renderers", "queue_length",
                "running"):
        if key not in h:
            continue
        value = h[key]
        if isinstance(value, dict):
            text = ", ".join(f"{k} {_short(v)}" for k, v in value.items())
        elif isinstance(value, list):
            text = ", ".join(_short(x) for x in value)
        else:
            text = str(value)
        rows.append((key.replace("_", " ").capitalize(), text[:200]))
    return rows


def _short(v) -> str:
    if isinstance(v, dict):
        name = v.get("name") or v.get("device") or v.get("type")
        return str(name) if name else ", ".join(f"{k}={x}" for k, x in v.items())
    return str(v)


def installer_steps(p) -> list:
    base = bpy.path.abspath(p.base_python) if p.base_python else launcher.python_for_blender()
    return launcher.install_steps(venv_dir(), base, p.torch_variant, p.pip_args.split())


CLASSES = (DISTILLERY_AP_preferences,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
