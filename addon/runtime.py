"""The one timer pump, and the threads that feed it.

Threads (a backend link's health monitor, one reader per watched job, short-lived workers for submit, cancel,
delete and downloads, the venv installer) never touch `bpy`: they decode, validate and post plain messages.
Reliable events go on a queue that never drops; decoded geometry goes into a one-slot mailbox per job that a
newer snapshot overwrites (keep-latest: a slow Blender never slows the backend). `pump()` is a plain function
that drains both on the main thread and applies the newest snapshot per job through `scene_sync`; it becomes a
persistent `bpy.app.timers` timer in `register()`. Tests call it directly (timers never fire in module mode).

No call made on the main thread waits on the network: operators only post work here.
"""

from __future__ import annotations

import atexit
import json
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import launcher, mesh_convert, scene_sync
from .client import ply as plyio
from .client import protocol, splat

PUMP_ACTIVE = 1.0 / 30.0
PUMP_IDLE = 0.5
HEALTH_EVERY = 2.0
DEAD_AFTER = 6.0  # no answer for this long: unresponsive (shown within 10 s with the monitor's 2 s period)
TERMINAL = protocol.TERMINAL_STATES


@dataclass
class Msg:
    kind: str
    job_id: str = ""
    data: Any = None


class Mailbox:
    """Thread -> pump. `events`: reliable, ordered, never dropped. `geometry`: one slot per job, newest wins."""

    def __init__(self) -> None:
        self.events: queue.Queue[Msg] = queue.Queue()
        self._latest: dict[str, Msg] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def post(self, kind: str, job_id: str = "", data: Any = None) -> None:
        self.events.put(Msg(kind, job_id, data))

    def post_geometry(self, job_id: str, data: dict) -> None:
        with self._lock:
            if job_id in self._latest:
                self.dropped += 1
            self._latest[job_id] = Msg("geometry", job_id, data)

    def take_geometry(self) -> dict[str, Msg]:
        with self._lock:
            out, self._latest = self._latest, {}
        return out

    def drain(self, limit: int = 10000) -> list[Msg]:
        out = []
        for _ in range(limit):
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def pending(self) -> bool:
        with self._lock:
            has_geometry = bool(self._latest)
        return has_geometry or not self.events.empty()


def default_session_factory():
    """The real client (addon/client/session.py); tests replace `Runtime.session_factory`."""
    from .client.session import Session

    return Session


def _spawn(target: Callable, *args: Any, name: str = "distillery-worker") -> threading.Thread:
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------------------------------------- backend link


@dataclass
class BackendView:
    """What the panel shows about the backend; written only by the pump (main thread)."""

    state: str = "stopped"  # stopped | starting | alive | unresponsive | dead | stopping
    message: str = ""
    hint: str = ""
    base_url: str = ""
    health: dict | None = None
    presets: list[dict] = field(default_factory=list)
    launched: bool = False
    last_ok: float = 0.0
    log_tail: list[str] = field(default_factory=list)


class BackendLink:
    """One backend: launched here (with a process) or connected to (URL + token file). Its monitor thread
    checks health every 2 s and posts the result; a process that exits or a server that stops answering is
    reported within 10 s."""

    def __init__(self, mailbox: Mailbox, session_factory: Callable, timeout: float = 5.0) -> None:
        self.mailbox = mailbox
        self.session_factory = session_factory
        self.timeout = timeout
        self.process: launcher.BackendProcess | None = None
        self.session = None
        self.base_url = ""
        self.generation = 0  # bumps on every start/stop so stale monitor threads retire
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def launch(self, spec: launcher.LaunchSpec, startup_timeout: float = 120.0) -> None:
        """Start the backend process (in a worker thread) and begin monitoring it. A process launched before
        is stopped first, in that thread (one server per data folder: a restart must wait for it)."""
        previous = self.process
        self._retire()
        gen = self.generation
        self.base_url = spec.base_url
        self._post(gen, {"state": "starting", "message": f"starting {spec.python}",
                         "base_url": spec.base_url, "launched": True})
        _spawn(self._launch_worker, spec, startup_timeout, gen, previous, name="distillery-launch")

    def connect(self, base_url: str, token_file: str) -> None:
        """Use a backend someone else started (e.g. through an SSH tunnel)."""
        previous = self.process
        self._retire()
        if previous is not None:
            _spawn(previous.stop, name="distillery-stop")
        gen = self.generation
        self.base_url = base_url.rstrip("/")
        self._post(gen, {"state": "starting", "message": f"connecting to {self.base_url}",
                         "base_url": self.base_url, "launched": False})
        _spawn(self._connect_worker, token_file, gen, name="distillery-connect")

    def stop(self) -> None:
        """Stop monitoring, and stop the process if we launched it (in a worker thread)."""
        proc = self.process
        self._retire()
        gen = self.generation
        self._post(gen, {"state": "stopping" if proc else "stopped", "message": "stopping"})
        if proc is not None:
            def _stop() -> None:
                code = proc.stop()
                self._post(gen, {"state": "stopped", "message": f"stopped (exit code {code})"})
            _spawn(_stop, name="distillery-stop")

    def shutdown(self) -> None:
        """unregister()/exit: signal the process and return at once."""
        proc = self.process
        self._retire()
        if proc is not None:
            proc.signal_stop()

    def _retire(self) -> None:
        with self._lock:
            self.generation += 1
            self._stop.set()
            self._stop = threading.Event()
            self.process = None
            self.session = None

    def _post(self, gen: int, data: dict) -> None:
        """A state change for the pump, tagged with the link generation it belongs to."""
        self.mailbox.post("backend", data={"generation": gen, **data})

    def _current(self, gen: int) -> bool:
        return gen == self.generation

    def _launch_worker(self, spec: launcher.LaunchSpec, startup_timeout: float, gen: int,
                       previous: launcher.BackendProcess | None = None) -> None:
        if previous is not None:
            previous.stop()
        try:
            proc = launcher.BackendProcess(spec)
        except (launcher.LaunchError, OSError) as exc:
            self._post(gen, {"state": "dead", "message": f"cannot start the backend: {exc}",
                             "hint": getattr(exc, "hint", "")})
            return
        with self._lock:
            if not self._current(gen):
                proc.signal_stop()
                return
            self.process = proc
        probe = self.session_factory()(spec.base_url, "", timeout=min(self.timeout, 2.0))
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and self._current(gen):
            code = proc.exit_code()
            if code is not None:
                self._post(gen, {"state": "dead", "message": f"the backend exited with code {code}",
                                 "hint": "see the backend log", "log": proc.log_tail()})
                return
            if spec.token_file.exists():
                try:
                    probe.health()
                    break
                except Exception:
                    pass
            time.sleep(0.25)
        else:
            if self._current(gen):
                proc.signal_stop()
                message = f"the backend did not answer within {startup_timeout:.0f} s"
                self._post(gen, {"state": "dead", "hint": "see the backend log", "message": message,
                                 "log": proc.log_tail()})
            return
        self._attach(spec.token_file, gen)

    def _connect_worker(self, token_file: str, gen: int) -> None:
        self._attach(Path(token_file) if token_file else None, gen)

    def _attach(self, token_file: Path | None, gen: int) -> None:
        Session = self.session_factory()
        try:
            if token_file is not None:
                session = Session.from_token_file(self.base_url, token_file, timeout=self.timeout)
            else:
                session = Session(self.base_url, "", timeout=self.timeout)
            health = session.health()
            presets = session.presets()
        except Exception as exc:
            self._post(gen, {"state": "dead", "message": f"cannot reach {self.base_url}: "
                             f"{_describe(exc)}", "hint": _hint(exc)})
            return
        with self._lock:
            if not self._current(gen):
                return
            self.session = session
            stop = self._stop
        self._post(gen, {"state": "alive", "message": "connected", "health": health,
                         "presets": presets, "session": session})
        _spawn(self._monitor, session, stop, gen, name="distillery-health")

    def _monitor(self, session, stop: threading.Event, gen: int) -> None:
        last_ok = time.monotonic()
        reported = "alive"
        while not stop.wait(HEALTH_EVERY):
            proc = self.process
            if proc is not None and proc.exit_code() is not None:
                self._post(gen, {"state": "dead", "log": proc.log_tail(),
                                 "message": f"the backend exited with code {proc.exit_code()}",
                                 "hint": "restart it; the running job resumes from its checkpoint"})
                return
            try:
                health = session.health()
            except Exception as exc:
                silent = time.monotonic() - last_ok
                if silent >= DEAD_AFTER and reported != "unresponsive":
                    reported = "unresponsive"
                    self._post(gen, {"state": "unresponsive", "hint": "restart the backend",
                                     "message": f"no answer for {silent:.0f} s ({_describe(exc)})"})
                continue
            last_ok = time.monotonic()
            reported = "alive"  # posted every time: health carries the queue length and devices
            self._post(gen, {"state": "alive", "health": health, "message": "connected"})


def _describe(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return msg


def _hint(exc: BaseException) -> str:
    return getattr(exc, "hint", "") or ""


# ---------------------------------------------------------------------------------------------- jobs


@dataclass
class Watcher:
    job_id: str
    scene_name: str
    handle: Any
    stop: threading.Event
    thread: threading.Thread | None = None
    done: bool = False
    last_step: int = 0


class Runtime:
    """Module state of the add-on while it is registered (RUNTIME below)."""

    def __init__(self, session_factory: Callable = default_session_factory) -> None:
        self.mailbox = Mailbox()
        self.session_factory = session_factory
        self.link = BackendLink(self.mailbox, session_factory)
        self.view = BackendView()
        self.watchers: dict[str, Watcher] = {}
        self.installer: launcher.Installer | None = None
        self.placements: dict[str, dict] = {}  # job_id -> where its object goes (set at submit)
        self.reattach_pending = False
        self.pump_stats: list[float] = []  # seconds per pump call (last 600)
        self.on_presets: Callable[[list[dict]], None] | None = None

    def use_session_factory(self, factory: Callable) -> None:
        """Which client class to use (tests pass a fake); applies to the next start or connect."""
        self.session_factory = factory
        self.link.session_factory = factory

    # -- operations posted by operators (main thread) ------------------------------------------------------

    @property
    def session(self):
        return self.link.session

    def submit(self, scene_name: str, request: dict, placement: dict) -> None:
        session = self.session
        if session is None:
            raise RuntimeError("the backend is not connected")
        _spawn(self._submit_worker, session, scene_name, request, placement, name="distillery-submit")

    def _submit_worker(self, session, scene_name: str, request: dict, placement: dict) -> None:
        try:
            handle = session.submit(request)
        except Exception as exc:
            self.mailbox.post("submit_failed", data={"scene": scene_name, "code": getattr(exc, "code", "INTERNAL"),
                                                     "message": _describe(exc), "hint": _hint(exc)})
            return
        self.mailbox.post("submitted", handle.job_id, {"scene": scene_name, "request": request,
                                                       "placement": placement, "handle": handle})

    def watch(self, job_id: str, scene_name: str, handle=None, last_seq: int = 0) -> None:
        """Start a reader thread for a job (main thread; the thread does the network work)."""
        old = self.watchers.pop(job_id, None)
        if old is not None:
            old.stop.set()
        if handle is None:
            if self.session is None:
                return
            handle = self.session.handle(job_id, last_seq)
        w = Watcher(job_id, scene_name, handle, threading.Event())
        w.thread = handle.stream(lambda ev, w=w: self._on_event(w, ev), w.stop)
        self.watchers[job_id] = w

    def _on_event(self, w: Watcher, ev: dict) -> None:
        """Runs in the job's reader thread: decode, validate, post. Never touches bpy."""
        kind = ev.get("type")
        try:
            if kind == "snapshot":
                data = ev.get("data")
                if data is None:
                    return
                geometry = _decode(ev.get("kind", "gaussians"), data)
                w.last_step = int(ev.get("step", 0))
                self.mailbox.post_geometry(w.job_id, {"kind": ev.get("kind", "gaussians"), "payload": geometry,
                                                      "step": int(ev.get("step", 0)), "final": False})
                return
            if kind == "preview":
                return  # previews are PNG grids for other clients; the scene object is the live view
            if kind == "result":
                asset = (ev.get("artifacts") or {}).get("asset", "")
                if asset == protocol.ASSET_PLY:  # the final asset replaces the last snapshot, in its own layout
                    result_kind = ev.get("kind", "gaussians")
                    geometry = _decode(result_kind, w.handle.download(asset))
                    self.mailbox.post_geometry(w.job_id, {"kind": result_kind, "payload": geometry,
                                                          "step": int(ev.get("step", w.last_step)), "final": True})
            clean = {k: v for k, v in ev.items() if k != "data"}
            self.mailbox.post("event", w.job_id, clean)
            if kind == "status" and ev.get("state") in TERMINAL:
                w.stop.set()
        except Exception as exc:  # a bad artifact becomes a message in the panel, not a dead thread
            self.mailbox.post("event", w.job_id, {"type": "warning", "code": "CLIENT",
                                                  "message": f"could not read {kind}: {_describe(exc)}"})

    def cancel(self, job_id: str) -> None:
        w = self.watchers.get(job_id)
        handle = w.handle if w else (self.session.handle(job_id) if self.session else None)
        if handle is None:
            raise RuntimeError("the backend is not connected")
        _spawn(self._call, job_id, "cancel", handle.cancel, name="distillery-cancel")

    def delete(self, job_id: str) -> None:
        w = self.watchers.pop(job_id, None)
        if w is not None:
            w.stop.set()
        if self.session is not None:
            handle = self.session.handle(job_id)
            _spawn(self._call, job_id, "delete", handle.delete, name="distillery-delete")

    def reimport(self, job_id: str, scene_name: str, artifact: str = protocol.ASSET_PLY) -> None:
        if self.session is None:
            raise RuntimeError("the backend is not connected")
        handle = self.session.handle(job_id)

        def work() -> None:
            try:
                geometry = _decode("gaussians", handle.download(artifact))
            except Exception as exc:
                self.mailbox.post("event", job_id, {"type": "warning", "code": "CLIENT",
                                                    "message": f"re-import failed: {_describe(exc)}"})
                return
            self.mailbox.post("reimport", job_id, {"scene": scene_name, "payload": geometry})
        _spawn(work, name="distillery-download")

    def import_ply(self, path: str, scene_name: str) -> None:
        """Read a 3DGS PLY in a worker thread (numpy, no bpy); the pump creates the object (scene_sync)."""
        _spawn(self._import_worker, path, scene_name, name="distillery-import")

    def _import_worker(self, path: str, scene_name: str) -> None:
        name = Path(path).stem
        try:
            arrays = scene_sync.read_import(path)
        except (plyio.PLYError, OSError) as exc:
            self.mailbox.post("import", data={"scene": scene_name, "name": name, "error": f"{Path(path).name}: {exc}"})
            return
        self.mailbox.post("import", data={"scene": scene_name, "name": name, "payload": arrays})

    def _call(self, job_id: str, what: str, fn: Callable) -> None:
        try:
            fn()
        except Exception as exc:
            self.mailbox.post("event", job_id, {"type": "warning", "code": "CLIENT",
                                                "message": f"{what} failed: {_describe(exc)}"})

    def busy(self) -> bool:
        return (any(not w.done for w in self.watchers.values()) or self.view.state in ("starting", "stopping")
                or (self.installer is not None and self.installer.state == "running") or self.mailbox.pending())

    def shutdown(self) -> None:
        for w in self.watchers.values():
            w.stop.set()
        self.watchers.clear()
        if self.installer is not None:
            self.installer.cancel()
        self.link.shutdown()


def _decode(kind: str, data: bytes) -> Any:
    """PLY bytes -> arrays, in the reader thread (numpy; sizes checked before allocating)."""
    if kind == "mesh":
        return plyio.read_mesh(data)
    return splat.with_display(plyio.read_gaussians(data))  # the display's maths off the main thread


RUNTIME: Runtime | None = None


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
        _reattach(rt)
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


def _apply_message(rt: Runtime, msg: Msg) -> bool:
    if msg.kind == "backend":
        d = msg.data
        if "generation" in d and d["generation"] != rt.link.generation:
            return False  # a retired monitor's last word
        v = rt.view
        v.state = d.get("state", v.state)
        v.message = d.get("message", "")
        v.hint = d.get("hint", "")
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
            s.job_state = "failed"
            s.job_error_code, s.job_error_message, s.job_error_hint = (msg.data["code"], msg.data["message"],
                                                                      msg.data["hint"])
            s.job_message = msg.data["message"]
        return True
    if msg.kind == "event":
        _on_event(rt, msg.job_id, msg.data)
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
        obj = scene_sync.create_object(scene, msg.job_id + ":reimport", name, "gaussians")
        scene_sync.set_gaussians(obj.data, msg.data["payload"])
        obj[scene_sync.STATE_KEY] = "imported"
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
        s.job_state = "queued"
        s.job_message = "queued"
        s.job_error_code = s.job_error_message = s.job_error_hint = ""
        item = _history_entry(scene, msg.job_id) or s.history.add()
        item.job_id = msg.job_id
        item.prompt = d["request"].get("prompt", "")
        item.preset = d["request"].get("preset", "")
        item.state = "queued"
        item.created = time.time()
        item.request_json = json.dumps(d["request"])
        item.placement_json = json.dumps(d["placement"])
        s.history_index = len(s.history) - 1
    rt.watch(msg.job_id, d["scene"], handle=d["handle"])


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


def _on_event(rt: Runtime, job_id: str, ev: dict) -> None:
    scene = _scene_of(rt, job_id)
    if scene is None:
        return
    s = scene.distillery
    item = _history_entry(scene, job_id)
    current = s.job_id == job_id
    kind = ev.get("type")
    if kind == "status":
        state = ev.get("state", "")
        if item is not None:
            item.state = state
        if current:
            s.job_state = state
            note = ev.get("message", "")
            if ev.get("renderer"):
                note = f"{state}: renderer {ev['renderer']} on {ev.get('device', '?')}, prior {ev.get('prior', '?')}"
            s.job_message = note or state
        if state in TERMINAL:
            w = rt.watchers.get(job_id)
            if w is not None:
                w.done = True
            obj = scene_sync.find_object(job_id)
            if obj is not None:
                obj[scene_sync.STATE_KEY] = state
    elif kind == "progress" and current:
        total = max(1, int(ev.get("total_steps") or ev.get("steps") or 1))
        gstep = int(ev.get("global_step") or ev.get("step") or 0)
        s.job_step, s.job_steps = gstep, total
        s.job_progress = min(1.0, gstep / total)
        s.job_eta = float(ev.get("eta_s") or 0.0)
        losses = ev.get("losses") or {}
        s.job_loss = "  ".join(f"{k} {v:.4g}" for k, v in list(losses.items())[:3])
        if s.job_state in ("queued", "", "submitting"):
            s.job_state = "running"
        if item is not None:
            item.step, item.steps = gstep, total
    elif kind == "warning" and current:
        s.job_message = f"warning: {ev.get('message', '')}"
    elif kind == "error":
        if item is not None:
            item.state = "failed"
            item.error_code = ev.get("code", "")
        if current:
            s.job_state = "failed"
            s.job_error_code = ev.get("code", "INTERNAL")
            s.job_error_message = ev.get("message", "")
            s.job_error_hint = ev.get("hint", "")
            s.job_message = ev.get("message", "")
    elif kind == "result":
        if item is not None:
            item.count = int(ev.get("count") or item.count)
            item.state = "succeeded"
        if current:
            s.job_state = "succeeded"
            s.job_progress = 1.0
            secs = ev.get("seconds")
            s.job_message = f"done: {ev.get('count', '?')} Gaussians" + (f" in {secs:.0f} s" if secs else "")
    elif kind == "connection" and current:
        s.job_message = ("connection lost; reconnecting" if ev.get("state") == "lost" else "connection restored")


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
        if d["kind"] == "gaussians":
            item.count = len(d["payload"]["x"])


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
                    print(f"Distillery: cannot watch job {item.job_id}: {_describe(exc)}")


@bpy.app.handlers.persistent
def _on_load_post(*_args) -> None:
    rt = RUNTIME
    if rt is None:
        return
    for w in rt.watchers.values():
        w.stop.set()
    rt.watchers.clear()
    rt.placements.clear()
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
