"""The event reducer: backend events -> the job state the panel shows. Pure functions, no bpy, no threads.

`JobView` holds exactly what the panel draws about one job (its fields are the `job_*` properties of
Scene.distillery, without the prefix); `reduce(view, event)` returns the next view. The pump (runtime.py)
keeps one view per job, reduces each event into it and copies the result into the scene's properties.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TERMINAL = ("succeeded", "failed", "cancelled")
RUNNING = ("waiting", "submitting", "queued", "running", "resumed", "cancelling")


@dataclass(frozen=True)
class JobView:
    state: str = ""  # "" | waiting | submitting | queued | running | resumed | cancelling | succeeded | failed | ...
    message: str = ""  # the status line
    step: int = 0  # global step
    steps: int = 0  # total steps
    progress: float = 0.0  # 0..1
    eta: float = 0.0  # seconds
    loss: str = ""  # up to three "name value" pairs
    error_code: str = ""  # failures.FIXES key
    error_message: str = ""
    error_hint: str = ""
    error_field: str = ""  # the setting or panel field at fault
    kind: str = ""  # "gaussians" | "mesh": of the newest geometry
    count: int = 0  # Gaussians or mesh vertices of the final asset
    faces: int = 0
    cancel_pending: bool = False  # cancel pressed while the backend was down: sent when it is back

    @property
    def running(self) -> bool:
        return self.state in RUNNING


FIELDS = tuple(f.name for f in dataclasses.fields(JobView))


def reduce(view: JobView, ev: dict) -> JobView:
    """The view after event `ev` (a backend event, or a link event: connection, submit_failed, waiting,
    submitted, cancel_deferred, cancel_sent)."""
    kind = ev.get("type")
    r = dataclasses.replace
    if kind == "status":
        state = ev.get("state", "") or view.state
        note = ev.get("message", "") or state
        if ev.get("renderer"):
            note = f"{state}: renderer {ev['renderer']} on {ev.get('device', '?')}, prior {ev.get('prior', '?')}"
        out = r(view, state=state, message=note)
        if state == "cancelling" and view.cancel_pending:
            out = r(out, message="cancelling (sent after the backend came back)")
        if state in TERMINAL:
            out = r(out, cancel_pending=False)
        if state == "succeeded":
            out = r(out, progress=1.0)
            if view.message.startswith("done:"):  # the result's summary says more than the final status
                out = r(out, message=view.message)
        return out
    if kind == "progress":
        total = max(1, int(ev.get("total_steps") or ev.get("steps") or 1))
        gstep = int(ev.get("global_step") or ev.get("step") or 0)
        losses = ev.get("losses") or {}
        state = "running" if view.state in ("", "waiting", "submitting", "queued") else view.state
        return r(view, state=state, step=gstep, steps=total, progress=min(1.0, gstep / total),
                 eta=float(ev.get("eta_s") or 0.0),
                 loss="  ".join(f"{k} {v:.4g}" for k, v in list(losses.items())[:3]))
    if kind == "snapshot":
        return r(view, kind=ev.get("kind", view.kind or "gaussians"))
    if kind == "warning":
        return r(view, message=f"warning: {ev.get('message', '')}")
    if kind in ("error", "submit_failed"):
        return r(view, state="failed", error_code=ev.get("code") or "INTERNAL", message=ev.get("message", ""),
                 error_message=ev.get("message", ""), error_hint=ev.get("hint", "") or "",
                 error_field=ev.get("field", "") or "", cancel_pending=False)
    if kind == "result":
        asset_kind = ev.get("kind") or view.kind or "gaussians"
        count = int(ev.get("count") or view.count)
        faces = int(ev.get("faces") or 0)
        secs = ev.get("seconds")
        what = f"a mesh of {count} vertices, {faces} faces" if asset_kind == "mesh" else f"{count} Gaussians"
        return r(view, state="succeeded", progress=1.0, kind=asset_kind, count=count, faces=faces,
                 message=f"done: {what}" + (f" in {secs:.0f} s" if secs else ""))
    if kind == "connection":
        lost = ev.get("state") == "lost"
        return r(view, message="connection lost; reconnecting" if lost else "connection restored")
    if kind == "waiting":
        return r(JobView(), state="waiting", message=ev.get("message", "waiting for the backend"))
    if kind == "submitted":
        return r(JobView(), state="queued", message="queued")
    if kind == "cancel_deferred":
        return r(view, state="cancelling", cancel_pending=True,
                 message="the backend is down: the cancel is sent when it is back")
    if kind == "cancel_sent":
        return r(view, cancel_pending=False, message="cancelling")
    return view
