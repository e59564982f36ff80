"""The add-on's link to the backend: threads, the client, and the queues they post to. No bpy.

Threads (a backend link's health monitor, one reader per watched job, short-lived workers for submit, cancel,
delete and downloads, the venv installer) never touch `bpy`: they decode, validate and post plain messages.
Reliable events go on a queue that never drops; decoded geometry goes into a one-slot mailbox per job that a
newer snapshot overwrites (keep-latest: a slow Blender never slows the backend). `runtime.pump()` drains both
on Blender's main thread. Everything here is tested with plain pytest (tests/addon/test_addon_link.py).

Two requests survive a backend that is down: Generate pressed while it starts (`pending_submit`, sent once it
answers) and Cancel pressed while it is stopped, dead or unreachable (`pending_cancels`, sent after the
restart, before the job's events are read again).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import launcher
from .client import ply as plyio
from .client import protocol, splat

HEALTH_EVERY = 2.0
DEAD_AFTER = 6.0  # no answer for this long: unresponsive (shown within 10 s with the monitor's 2 s period)
TERMINAL = protocol.TERMINAL_STATES
# protocol.CLIENT_ERROR_CODES that mean "unreachable now" (a call worth repeating once the backend is back)
CONNECTION_CODES = ("CONNECTION_REFUSED", "CONNECTION_LOST", "TIMEOUT", "CONNECTION_ERROR", "UNAVAILABLE")


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
    message: str = ""  # the cause, one line
    hint: str = ""
    code: str = ""  # failures.FIXES key of a dead/unresponsive backend (BACKEND_MISSING_PACKAGE, ...)
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
                             "hint": getattr(exc, "hint", ""), "code": getattr(exc, "code", "BACKEND_EXITED")})
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
                self._post_exit(gen, proc, code)
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
                                 "log": proc.log_tail(), "code": "BACKEND_START_TIMEOUT"})
            return
        self._attach(spec.token_file, gen)

    def _post_exit(self, gen: int, proc: launcher.BackendProcess, code: int | None) -> None:
        """The process exited: say why in one line (a missing package is named), with its fix's code."""
        log = proc.log_tail(60)
        why = launcher.diagnose(log, proc.spec.python, code)
        self._post(gen, {"state": "dead", "message": str(why), "hint": why.hint, "code": why.code,
                         "log": log[-20:]})

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
                             f"{_describe(exc)}", "hint": _hint(exc), "code": "BACKEND_UNREACHABLE"})
            return
        with self._lock:
            if not self._current(gen):
                return
            self.session = session
            stop = self._stop
        self._post(gen, {"state": "alive", "message": "connected", "health": health, "code": "",
                         "presets": presets, "session": session})
        _spawn(self._monitor, session, stop, gen, name="distillery-health")

    def _monitor(self, session, stop: threading.Event, gen: int) -> None:
        last_ok = time.monotonic()
        reported = "alive"
        while not stop.wait(HEALTH_EVERY):
            proc = self.process
            if proc is not None and proc.exit_code() is not None:
                self._post_exit(gen, proc, proc.exit_code())
                return
            try:
                health = session.health()
            except Exception as exc:
                silent = time.monotonic() - last_ok
                if silent >= DEAD_AFTER and reported != "unresponsive":
                    reported = "unresponsive"
                    self._post(gen, {"state": "unresponsive", "hint": "restart the backend",
                                     "code": "BACKEND_UNRESPONSIVE",
                                     "message": f"no answer for {silent:.0f} s ({_describe(exc)})"})
                continue
            last_ok = time.monotonic()
            reported = "alive"  # posted every time: health carries the queue length and devices
            self._post(gen, {"state": "alive", "health": health, "message": "connected", "code": ""})


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
    kind: str = ""  # of the newest snapshot: the result's kind when an older server does not name it


class Runtime:
    """The add-on's state while it is registered (`runtime.RUNTIME` holds the one instance): the backend link,
    the job watchers, the installer, and the requests waiting for the backend."""

    def __init__(self, session_factory: Callable = default_session_factory) -> None:
        self.mailbox = Mailbox()
        self.session_factory = session_factory
        self.link = BackendLink(self.mailbox, session_factory)
        self.view = BackendView()
        self.watchers: dict[str, Watcher] = {}
        self.installer: launcher.Installer | None = None
        self.placements: dict[str, dict] = {}  # job_id -> where its object goes (set at submit)
        self.reattach_pending = False
        self.pending_submit: dict | None = None  # {"scene", "config" (None: build when presets are known), ...}
        self.pending_cancels: set[str] = set()  # job ids whose cancel waits for the backend
        self._cancel_lock = threading.Lock()
        self.views: dict[str, Any] = {}  # job_id -> reducer.JobView (the pump's)
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
            code = getattr(exc, "code", "INTERNAL")
            if code in CONNECTION_CODES or code.startswith("HTTP_"):
                code = "SUBMIT_FAILED"
            self.mailbox.post("submit_failed", data={"scene": scene_name, "code": code, "message": _describe(exc),
                                                     "hint": _hint(exc), "field": getattr(exc, "field", "") or ""})
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
                w.kind = ev.get("kind", "gaussians")
                geometry = _decode(w.kind, data)
                w.last_step = int(ev.get("step", 0))
                self.mailbox.post_geometry(w.job_id, {"kind": ev.get("kind", "gaussians"), "payload": geometry,
                                                      "step": int(ev.get("step", 0)), "final": False})
                return
            if kind == "preview":
                return  # previews are PNG grids for other clients; the scene object is the live view
            if kind == "result":
                asset = (ev.get("artifacts") or {}).get("asset", "")
                if asset == protocol.ASSET_PLY:  # the final asset (Gaussians or a mesh) replaces the last snapshot
                    asset_kind = ev.get("kind") or w.kind or "gaussians"
                    geometry = _decode(asset_kind, w.handle.download(asset))
                    self.mailbox.post_geometry(w.job_id, {"kind": asset_kind, "payload": geometry,
                                                          "step": int(ev.get("step", w.last_step)), "final": True})
            clean = {k: v for k, v in ev.items() if k != "data"}
            self.mailbox.post("event", w.job_id, clean)
            if kind == "status" and ev.get("state") in TERMINAL:
                w.stop.set()
        except Exception as exc:  # a bad artifact becomes a message in the panel, not a dead thread
            self.mailbox.post("event", w.job_id, {"type": "warning", "code": "CLIENT",
                                                  "message": f"could not read {kind}: {_describe(exc)}"})

    def cancel(self, job_id: str, backend_alive: bool = True) -> bool:
        """Ask the backend to cancel the job. Returns False when the backend is down: the cancel is kept and
        sent after the restart (`flush_cancels`), so the job does not run on unasked."""
        session = self.session
        if session is None or not backend_alive:
            with self._cancel_lock:
                self.pending_cancels.add(job_id)
            return False
        _spawn(self._cancel_worker, job_id, session.handle(job_id), name="distillery-cancel")
        return True

    def _cancel_worker(self, job_id: str, handle) -> None:
        try:
            handle.cancel()
        except Exception as exc:
            if getattr(exc, "code", "") in CONNECTION_CODES or isinstance(exc, OSError):
                with self._cancel_lock:
                    self.pending_cancels.add(job_id)
                self.mailbox.post("event", job_id, {"type": "cancel_deferred"})
                return
            self.mailbox.post("event", job_id, {"type": "warning", "code": "CLIENT",
                                                "message": f"cancel failed: {_describe(exc)}"})

    def flush_cancels(self) -> list[str]:
        """Send the cancels kept while the backend was down (the pump calls this once it answers again)."""
        session = self.session
        if session is None:
            return []
        with self._cancel_lock:
            jobs, self.pending_cancels = sorted(self.pending_cancels), set()
        for job_id in jobs:
            _spawn(self._cancel_worker, job_id, session.handle(job_id), name="distillery-cancel")
            self.mailbox.post("event", job_id, {"type": "cancel_sent"})
        return jobs

    def delete(self, job_id: str) -> None:
        w = self.watchers.pop(job_id, None)
        if w is not None:
            w.stop.set()
        if self.session is not None:
            handle = self.session.handle(job_id)
            _spawn(self._call, job_id, "delete", handle.delete, name="distillery-delete")

    def reimport(self, job_id: str, scene_name: str, kind: str = "gaussians",
                 artifact: str = protocol.ASSET_PLY) -> None:
        if self.session is None:
            raise RuntimeError("the backend is not connected")
        handle = self.session.handle(job_id)

        def work() -> None:
            try:
                geometry = _decode(kind, handle.download(artifact))
            except Exception as exc:
                self.mailbox.post("event", job_id, {"type": "warning", "code": "CLIENT",
                                                    "message": f"re-import failed: {_describe(exc)}"})
                return
            self.mailbox.post("reimport", job_id, {"scene": scene_name, "payload": geometry, "kind": kind})
        _spawn(work, name="distillery-download")

    def import_ply(self, path: str, scene_name: str, reader: Callable[[str], dict]) -> None:
        """Read a 3DGS PLY in a worker thread with `reader` (numpy, no bpy: scene_sync.read_import); the pump
        creates the object."""
        _spawn(self._import_worker, path, scene_name, reader, name="distillery-import")

    def _import_worker(self, path: str, scene_name: str, reader: Callable[[str], dict]) -> None:
        name = Path(path).stem
        try:
            arrays = reader(path)
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
                or self.pending_submit is not None
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
