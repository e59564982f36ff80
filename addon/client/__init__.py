"""The add-on's client for the generation server: standard library only (no bpy, no third-party imports), so
it runs inside Blender's Python and in plain scripts and tests.

    from addon.client import Session
    s = Session.from_token_file("http://127.0.0.1:8765", "~/.local/share/distillery/token")
    job = s.submit({"prompt": "a red duck", "stages.0.steps": 300})
    for event in job.poll_once(wait=5): ...          # synchronous
    thread = job.stream(on_event, stop_event)        # or a reader thread with reconnects

Every network call has a short timeout; nothing blocks forever. See docs/API.md.
"""

from .session import BackendError, JobHandle, Session

__all__ = ["BackendError", "JobHandle", "Session"]
