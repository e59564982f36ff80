"""Session (the server) and JobHandle (one job): the API the Blender add-on and scripts use.

`JobHandle.poll_once()` is synchronous (tests, scripts). `JobHandle.stream()` runs a daemon reader thread that
long-polls, reconnects with the last seq after any error (with backoff), downloads the newest snapshot and
preview, and reports a dead backend. Callbacks run in that reader thread: a Blender add-on puts the events on
a queue.Queue and applies them from its timer on the main thread.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path

from .protocol import LOSSY_EVENT_TYPES, TERMINAL_STATES
from .transport import BackendError, Transport, strict_loads

__all__ = ["BackendError", "JobHandle", "Session"]

log = logging.getLogger("distillery.client")

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
LOSSY_TYPES = LOSSY_EVENT_TYPES


def _check_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a job id: {job_id!r} (32 lower-case hex digits)")
    return job_id


class Session:
    def __init__(self, base_url: str, token: str, timeout: float = 5.0) -> None:
        self.transport = Transport(base_url, token, timeout)
        self.timeout = float(timeout)

    @classmethod
    def from_token_file(cls, base_url: str, token_file: str | Path, timeout: float = 5.0) -> Session:
        """A session whose token is read from the server's token file (and read again if the server
        restarted with a new token)."""
        path = Path(token_file).expanduser()
        session = cls(base_url, path.read_text().strip(), timeout)
        session.transport.token_file = path
        return session

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def health(self) -> dict:
        """Versions, devices, worker state and queue length. Needs no token."""
        return self.transport.request("GET", "/v1/health", auth=False).json()

    def presets(self) -> list[dict]:
        """Every preset: {"name", "summary", "needs_gpu", "settings": [setting dicts]} (+ "source",
        "total_steps"). Each setting: key, kind, default, help, lo, hi, choices, unit, advanced, allowed."""
        return self.transport.request("GET", "/v1/presets").json()

    def submit(self, config: dict) -> JobHandle:
        """Queue a job. `config` is any subset of the JobConfig fields merged over its `preset`, and/or dotted
        keys (`"stages.0.steps": 300`). The client picks the job id, so a retry after a lost answer never
        queues the job twice. Raises BackendError (code INVALID_CONFIG with the field, UNKNOWN_PROMPT, ...)."""
        if not isinstance(config, dict):
            raise TypeError("config must be a dict")
        body = {**config, "job_id": uuid.uuid4().hex}
        for attempt in range(2):
            try:
                job = self.transport.request("POST", "/v1/jobs", body=body).json()
                return JobHandle(self, job["id"])
            except BackendError as exc:
                if attempt == 1 or exc.code not in ("CONNECTION_LOST", "TIMEOUT"):
                    raise
        raise AssertionError("unreachable")

    def submit_mesh(self, ply: bytes, settings: dict | None = None, timeout: float = 120.0) -> JobHandle:
        """Queue the conversion of a 3DGS PLY (its bytes) into a textured mesh; the job's result lists
        `asset.glb` (and `asset.ply`, the mesh with vertex colours). `settings` are conversion settings such as
        {"resolution": 96, "texture_size": 1024} (docs/API.md). Raises BackendError (INVALID_PLY,
        INVALID_CONFIG with the field, TOO_LARGE, ...)."""
        if not isinstance(ply, bytes):
            raise TypeError("ply must be bytes")
        query = {**{str(k): str(v) for k, v in (settings or {}).items()}, "job_id": uuid.uuid4().hex}
        for attempt in range(2):
            try:
                job = self.transport.request("POST", "/v1/meshes", query=query, body=ply, timeout=timeout).json()
                return JobHandle(self, job["id"])
            except BackendError as exc:
                if attempt == 1 or exc.code not in ("CONNECTION_LOST", "TIMEOUT"):
                    raise
        raise AssertionError("unreachable")

    def jobs(self) -> list[dict]:
        return self.transport.request("GET", "/v1/jobs").json()

    def job(self, job_id: str) -> dict:
        return self.transport.request("GET", f"/v1/jobs/{_check_id(job_id)}").json()

    def handle(self, job_id: str, last_seq: int = 0) -> JobHandle:
        """A handle on an existing job; events after `last_seq` are delivered next (e.g. after a restart of
        Blender, pass the last seq it applied)."""
        return JobHandle(self, _check_id(job_id), last_seq)


class JobHandle:
    POLL_WAIT_S = 3.0  # long-poll wait of the reader thread; an answer (maybe empty) comes at least this often
    LOST_AFTER_S = 10.0  # no answer for this long: {"type": "connection", "state": "lost"}

    def __init__(self, session: Session, job_id: str, last_seq: int = 0) -> None:
        self.session = session
        self.job_id = _check_id(job_id)
        self.last_seq = int(last_seq)

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r}, last_seq={self.last_seq})"

    # ------------------------------------------------------------------------------------------ events

    def _fetch(self, after: int, wait: float, timeout: float) -> list[dict]:
        resp = self.session.transport.request(
            "GET", f"/v1/jobs/{self.job_id}/events", query={"after": after, "wait": f"{wait:g}"}, timeout=timeout,
            max_bytes=64 << 20)
        events = []
        for line in resp.body.splitlines():
            if not line.strip():
                continue
            try:
                ev = strict_loads(line)
            except ValueError:
                raise BackendError("BAD_RESPONSE", "the server sent an invalid event line") from None
            if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int):
                raise BackendError("BAD_RESPONSE", "the server sent an event without a seq")
            if ev["seq"] > after:  # never deliver an event twice, whatever the server sends
                events.append(ev)
                after = ev["seq"]
        return events

    def poll_once(self, wait: float = 0.0) -> list[dict]:
        """The events after `last_seq` (waiting up to `wait` seconds for the first); advances `last_seq`.
        Snapshot and preview events are keep-latest: only the newest of each comes. Raises BackendError."""
        wait = max(0.0, min(float(wait), 30.0))
        events = self._fetch(self.last_seq, wait, wait + self.session.timeout)
        if events:
            self.last_seq = events[-1]["seq"]
        return events

    def stream(self, on_event: Callable[[dict], None], stop: threading.Event) -> threading.Thread:
        """Start a daemon reader thread that calls `on_event(event)` (in that thread) for every event after
        `last_seq` until `stop` is set or the job ends. Snapshot/preview events come with their file in
        event["data"] (bytes). Connection trouble is reported as {"type": "connection", "state": "lost" |
        "restored", "code", "message"}; "lost" with "fatal": True (job deleted, token refused) ends the thread."""
        thread = threading.Thread(target=self._stream, args=(on_event, stop), daemon=True,
                                  name=f"distillery-events-{self.job_id[:8]}")
        thread.start()
        return thread

    def _stream(self, on_event: Callable[[dict], None], stop: threading.Event) -> None:
        last_ok = time.monotonic()
        lost = False
        failing = False
        backoff = 0.25
        while not stop.is_set():
            silence = time.monotonic() - last_ok
            if failing and not lost:
                wait, timeout = 0.0, max(0.5, min(self.session.timeout, self.LOST_AFTER_S - silence))
            elif failing:
                wait, timeout = 0.0, self.session.timeout
            else:
                wait, timeout = self.POLL_WAIT_S, self.POLL_WAIT_S + self.session.timeout
            started = time.monotonic()
            try:
                events = self._fetch(self.last_seq, wait, timeout)
                if not events and wait and time.monotonic() - started < wait / 2 and self._ended():
                    return  # an empty answer before the wait ran out: the job ended before last_seq
            except BackendError as exc:
                if exc.status is not None and exc.status < 500 and exc.status != 429:
                    _call(on_event, self._connection_event("lost", exc, fatal=True))
                    return
                failing = True
                closed = exc.code in ("CONNECTION_REFUSED", "CONNECTION_LOST")
                if not lost and (closed or time.monotonic() - last_ok >= self.LOST_AFTER_S - 0.25):
                    lost = True
                    _call(on_event, self._connection_event("lost", exc))
                stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            last_ok = time.monotonic()
            failing = False
            backoff = 0.25
            if lost:
                lost = False
                _call(on_event, {"type": "connection", "state": "restored", "job_id": self.job_id,
                                 "time": round(time.time(), 3), "message": "connected again"})
            try:
                if self._deliver(events, on_event, stop):
                    return
            except BackendError as exc:  # a download failed: poll again from the last delivered event
                failing = True
                if exc.code in ("CONNECTION_REFUSED", "CONNECTION_LOST") and not lost:
                    lost = True
                    _call(on_event, self._connection_event("lost", exc))
                stop.wait(backoff)

    def _deliver(self, events: list[dict], on_event: Callable[[dict], None], stop: threading.Event) -> bool:
        """Deliver a batch (downloading the newest snapshot/preview); True once the job has ended. `last_seq`
        advances event by event, so an interrupted batch resumes exactly where it stopped."""
        newest = {ev["type"]: ev["seq"] for ev in events if ev.get("type") in LOSSY_TYPES}
        for ev in events:
            if stop.is_set():
                return True
            if ev.get("type") in LOSSY_TYPES:
                if ev["seq"] != newest[ev["type"]] or not isinstance(ev.get("artifact"), str):
                    self.last_seq = ev["seq"]
                    continue  # superseded in this batch: keep-latest
                try:
                    ev["data"] = self.download(ev["artifact"])
                except BackendError as exc:
                    if exc.status != 404:
                        raise
                    self.last_seq = ev["seq"]
                    continue  # already replaced by a newer file; its event follows
            _call(on_event, ev)
            self.last_seq = ev["seq"]
            if ev.get("type") == "status" and ev.get("state") in TERMINAL_STATES:
                return True
        return False

    def _ended(self) -> bool:
        return self.session.job(self.job_id)["state"] in TERMINAL_STATES

    def _connection_event(self, state: str, exc: BackendError, fatal: bool = False) -> dict:
        ev = {"type": "connection", "state": state, "job_id": self.job_id, "time": round(time.time(), 3),
              "code": exc.code, "message": exc.message, "hint": exc.hint}
        if fatal:
            ev["fatal"] = True
        return ev

    # ------------------------------------------------------------------------------------------ actions

    def status(self) -> dict:
        return self.session.job(self.job_id)

    def cancel(self) -> None:
        """Ask the job to stop; it stops at the end of its current step (a "cancelled" status event follows)."""
        self.session.transport.request("POST", f"/v1/jobs/{self.job_id}/cancel")

    def download(self, name: str) -> bytes:
        """An artifact by its server-chosen name (from an event or the job's `artifacts` list), checked
        against the sha256 the server sends."""
        if not isinstance(name, str) or not name or "/" in name or "\\" in name:
            raise ValueError(f"not an artifact name: {name!r}")
        resp = self.session.transport.request(
            "GET", f"/v1/jobs/{self.job_id}/artifacts/{urllib.parse.quote(name, safe='')}")
        expected = resp.headers.get("x-content-sha256")
        if expected and hashlib.sha256(resp.body).hexdigest() != expected:
            raise BackendError("CORRUPT_DOWNLOAD", f"{name}: the bytes do not match their sha256",
                               "download it again")
        return resp.body

    def delete(self) -> None:
        """Delete the job and its files (refused with code JOB_RUNNING while it runs)."""
        self.session.transport.request("DELETE", f"/v1/jobs/{self.job_id}")


def _call(on_event: Callable[[dict], None], event: dict) -> None:
    try:
        on_event(event)
    except Exception:  # a failing callback must not end the reader thread
        log.exception("event callback failed for %s", event.get("type"))
