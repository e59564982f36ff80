"""The one timer pump: applies what the link's threads posted to the scene, on Blender's main thread.

The threads, the client and the queues live in `link.py` (no bpy); the event reducer that turns events into
the panel's job state lives in `reducer.py` (no bpy). `pump()` is a plain function that drains the mailbox,
reduces each event into its job's view, copies the view into Scene.distillery, applies the newest snapshot
per job through `scene_sync`, and sends what waited for the backend (a Generate pressed while it started, a
Cancel pressed while it was down). It becomes a persistent `bpy.app.timers` timer in `register()`. Tests call
it directly (timers never fire in module mode).

No call made on the main thread waits on the network: operators only post work to the link.
"""

from __future__ import annotations

import atexit
import json
import time
import traceback
from collections.abc import Callable

import bpy

from . import mesh_convert, reducer, scene_sync
from .link import (  # noqa: F401 - re-exported: the add-on's state types
    TERMINAL,
    BackendLink,
    BackendView,
    Mailbox,
    Msg,
    Runtime,
    default_session_factory,
)

PUMP_ACTIVE = 1.0 / 30.0
PUMP_IDLE = 0.5

RUNTIME: Runtime | None = None
JOB_PROPS = {name: f"job_{name}" for name in reducer.FIELDS if name not in ("faces", "cancel_pending")}


# ---------------------------------------------------------------------------------------------- the pump


def pump() -> float | None:
    """Drain the mailbox and apply it on the main thread. Returns the next timer interval (None when the add-on
    is unregistered, which removes the timer)."""
    rt = RUNTIME
    if rt is None:
        return None
    t0 = time.perf_counter()
    changed = False
    for msg in rt.mailbox.drain():
        try:
            changed |= _apply_message(rt, msg)
        except Exception:
            traceback.print_exc()
    for job_id, msg in rt.mailbox.take_geometry().items():
        try:
            _apply_geometry(rt, job_id, msg.data)
            changed = True
        except Exception:
            traceback.print_exc()
    if rt.installer is not None and rt.installer.state == "running":
        changed = True
    if rt.reattach_pending and rt.view.state == "alive":
        rt.reattach_pending = False
        rt.flush_cancels()  # before reading events again: the job must not run on
        _reattach(rt)
        changed = True
    if rt.pending_submit is not None:
        changed |= _pending_submit(rt)
    if changed:
        redraw()
    rt.pump_stats.append(time.perf_counter() - t0)
    del rt.pump_stats[:-600]
    return PUMP_ACTIVE if rt.busy() else PUMP_IDLE


def redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


# ---------------------------------------------------------------------------------------------- job views


def write_view(s, view: reducer.JobView) -> None:
    """Copy a reducer view into Scene.distillery's job_* properties (only the ones that changed)."""
    for name, prop in JOB_PROPS.items():
        value = getattr(view, name)
        if getattr(s, prop) != value:
            setattr(s, prop, value)


def read_view(s) -> reducer.JobView:
    """The view Scene.distillery shows now (the panel's properties are the truth after a file load)."""
    return reducer.JobView(**{name: getattr(s, prop) for name, prop in JOB_PROPS.items()})


def set_view(scene, job_id: str, view: reducer.JobView) -> None:
    """Store a job's new view: in the runtime, on its history entry, and in the panel if it is the current job."""
    rt = RUNTIME
    if rt is not None and job_id:
        rt.views[job_id] = view
    s = scene.distillery
    item = _history_entry(scene, job_id) if job_id else None
    if item is not None:
        if view.state and view.state not in ("waiting", "submitting"):
            item.state = view.state
        item.step, item.steps = view.step, view.steps
        if view.count:
            item.count = view.count
        if view.kind:
            item.kind = view.kind
        item.error_code = view.error_code
    if s.job_id == job_id:
        write_view(s, view)


def dispatch(scene, job_id: str, ev: dict) -> reducer.JobView:
    """Reduce one event into the job's view and store it (main thread)."""
    rt = RUNTIME
    s = scene.distillery
    view = rt.views.get(job_id) if rt is not None and job_id else None
    if view is None:
        view = read_view(s) if s.job_id == job_id else reducer.JobView()
    view = reducer.reduce(view, ev)
    set_view(scene, job_id, view)
    return view


def _apply_message(rt: Runtime, msg: Msg) -> bool:
    if msg.kind == "backend":
        d = msg.data
        if "generation" in d and d["generation"] != rt.link.generation:
            return False  # a retired monitor's last word
        v = rt.view
        v.state = d.get("state", v.state)
        v.message = d.get("message", "")
        v.hint = d.get("hint", "")
        v.code = d.get("code", v.code if v.state in ("dead", "unresponsive") else "")
        v.base_url = d.get("base_url", v.base_url)
        v.launched = d.get("launched", v.launched)
        if "log" in d:
            v.log_tail = d["log"]
        if "health" in d:
            v.health = d["health"]
            v.last_ok = time.time()
        if "presets" in d:
            v.presets = d["presets"]
            if rt.on_presets is not None:
                rt.on_presets(v.presets)
        if d.get("state") == "alive" and "session" in d:
            rt.reattach_pending = True
        return True
    if msg.kind == "submitted":
        _on_submitted(rt, msg)
        return True
    if msg.kind == "submit_failed":
        scene = bpy.data.scenes.get(msg.data["scene"])
        if scene is not None:
            s = scene.distillery
            write_view(s, reducer.reduce(read_view(s), {"type": "submit_failed", **msg.data}))
        return True
    if msg.kind == "event":
        scene = _scene_of(rt, msg.job_id)
        if scene is None:
            return False
        view = dispatch(scene, msg.job_id, msg.data)
        if view.state in TERMINAL:
            w = rt.watchers.get(msg.job_id)
            if w is not None:
                w.done = True
            obj = scene_sync.find_object(msg.job_id)
            if obj is not None:
                obj[scene_sync.STATE_KEY] = view.state
        return True
    if msg.kind in mesh_convert.MESSAGES:
        return mesh_convert.apply(msg)
    if msg.kind == "import":
        scene = bpy.data.scenes.get(msg.data["scene"]) or bpy.context.scene
        scene.distillery.job_message = scene_sync.finish_import(scene, msg.data)
        return True
    if msg.kind == "reimport":
        scene = bpy.data.scenes.get(msg.data["scene"]) or bpy.context.scene
        entry = _history_entry(scene, msg.job_id)
        name = scene_sync.object_name(entry.prompt if entry else msg.job_id)
        scene_sync.apply_snapshot(scene, msg.job_id + ":reimport", msg.data.get("kind", "gaussians"),
                                  msg.data["payload"], name=name, state="imported")
        return True
    return False


def _history_entry(scene, job_id: str):
    for item in scene.distillery.history:
        if item.job_id == job_id:
            return item
    return None


def _on_submitted(rt: Runtime, msg: Msg) -> None:
    d = msg.data
    scene = bpy.data.scenes.get(d["scene"])
    rt.placements[msg.job_id] = d["placement"]
    if scene is not None:
        s = scene.distillery
        s.job_id = msg.job_id
        item = _history_entry(scene, msg.job_id) or s.history.add()
        item.job_id = msg.job_id
        item.prompt = d["request"].get("prompt", "")
        item.preset = d["request"].get("preset", "")
        item.created = time.time()
        item.request_json = json.dumps(d["request"])
        item.placement_json = json.dumps(d["placement"])
        s.history_index = len(s.history) - 1
        rt.views.pop(msg.job_id, None)
        dispatch(scene, msg.job_id, {"type": "submitted"})
    rt.watch(msg.job_id, d["scene"], handle=d["handle"])


def _pending_submit(rt: Runtime) -> bool:
    """Generate was pressed while the backend was not ready: send it once the backend answers (building the
    request then if the presets were not known), or give up with the backend's cause if it failed to start."""
    p = rt.pending_submit
    scene = bpy.data.scenes.get(p["scene"])
    if scene is None:
        rt.pending_submit = None
        return False
    s = scene.distillery
    if rt.view.state in ("dead", "stopped"):
        rt.pending_submit = None
        write_view(s, reducer.JobView(message="not sent: the backend did not start (see the box above)"))
        return True
    if rt.view.state != "alive" or rt.session is None:
        return False
    rt.pending_submit = None
    config, placement = p.get("config"), p.get("placement")
    if config is None:
        from . import request

        try:
            config, placement = s.to_request(bpy.context)
        except request.RequestError as exc:
            write_view(s, reducer.reduce(read_view(s), request_failure(exc)))
            return True
    rt.submit(scene.name, config, placement)
    write_view(s, reducer.JobView(state="submitting", message="submitting"))
    return True


def request_failure(exc) -> dict:
    """A RequestError as a failure event for the reducer: its panel field picks the fix-it box."""
    from . import failures

    code = failures.FIELD_CODES.get(exc.field, "INVALID_CONFIG")
    return {"type": "submit_failed", "code": code, "message": str(exc), "hint": "", "field": exc.field}


def _scene_of(rt: Runtime, job_id: str):
    w = rt.watchers.get(job_id)
    if w is not None:
        scene = bpy.data.scenes.get(w.scene_name)
        if scene is not None:
            return scene
    for scene in bpy.data.scenes:
        if _history_entry(scene, job_id) is not None:
            return scene
    return None


def _apply_geometry(rt: Runtime, job_id: str, d: dict) -> None:
    scene = _scene_of(rt, job_id)
    if scene is None:
        return
    item = _history_entry(scene, job_id)
    placement = rt.placements.get(job_id)
    if placement is None and item is not None and item.placement_json:
        placement = json.loads(item.placement_json)
    name = (placement or {}).get("name") or scene_sync.object_name(item.prompt if item else job_id)
    state = "succeeded" if d["final"] else "running"
    obj = scene_sync.apply_snapshot(scene, job_id, d["kind"], d["payload"], name=name, step=d["step"],
                                    placement=placement, state=state)
    if item is not None:
        item.object_name = obj.name
        item.kind = d["kind"]
        if d["kind"] == "gaussians":
            item.count = len(d["payload"]["x"])
        else:
            item.count = len(d["payload"][0])


def _reattach(rt: Runtime) -> None:
    """After a (re)connect or a file load: watch every unfinished job again through the current session,
    resuming after the last event seen."""
    for job_id, w in list(rt.watchers.items()):
        if not w.done:
            rt.watch(job_id, w.scene_name, last_seq=int(getattr(w.handle, "last_seq", 0) or 0))
    for scene in bpy.data.scenes:
        for item in scene.distillery.history:
            if item.job_id and item.state not in TERMINAL and item.job_id not in rt.watchers:
                try:
                    rt.watch(item.job_id, scene.name)
                except Exception as exc:
                    item.state = "unknown"
                    print(f"Distillery: cannot watch job {item.job_id}: {exc}")


@bpy.app.handlers.persistent
def _on_load_post(*_args) -> None:
    rt = RUNTIME
    if rt is None:
        return
    for w in rt.watchers.values():
        w.stop.set()
    rt.watchers.clear()
    rt.placements.clear()
    rt.views.clear()
    rt.pending_submit = None
    rt.reattach_pending = True


def _at_exit() -> None:
    """Blender quits: stop the threads and signal a backend we launched (it checkpoints and exits)."""
    if RUNTIME is not None:
        RUNTIME.shutdown()


def register(session_factory: Callable = default_session_factory) -> Runtime:
    global RUNTIME
    RUNTIME = Runtime(session_factory)
    atexit.register(_at_exit)
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=PUMP_IDLE, persistent=True)
    if _on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_on_load_post)
    scene_sync.display.register()  # the display follows the render camera (its low-pass)
    return RUNTIME


def unregister() -> None:
    global RUNTIME
    rt, RUNTIME = RUNTIME, None
    if rt is not None:
        rt.shutdown()
    atexit.unregister(_at_exit)
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    scene_sync.display.unregister()
