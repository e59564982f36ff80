"""Wire types shared by the backend and its clients. Standard library only.

`addon/client/protocol.py` is a checked copy of this file (a test compares them), so the Blender add-on can
decode events without importing the backend.

Events are small JSON objects. Every event has `type`, `job_id` and `time` (Unix seconds); the job store adds
a per-job increasing `seq` when it records the event, and clients resume with `after=<last seq>`.

Event types and their fields:
- status:   state (one of JOB_STATES), message; the first status of a run also names `renderer`, `device`
            and `prior` so a fallback is never silent.
- progress: stage (index), stage_name, step (within the stage), steps (of the stage), global_step,
            total_steps, losses {name: float}, it_per_s, eta_s.
- preview:  artifact (file name of a PNG grid), step.
- snapshot: artifact (file name of a PLY), kind ("gaussians" | "mesh"), count, step. Clients apply only the
            newest snapshot per job (keep-latest).
- warning:  code, message (e.g. a skipped non-finite step).
- result:   artifacts {role: file name} (asset, preview, turntable, result), metrics {name: float}.
- error:    code (one of ERROR_CODES), message, hint.
"""

from __future__ import annotations

import time
from typing import Any

PROTOCOL_VERSION = 1

JOB_STATES = ("queued", "running", "resumed", "cancelling", "succeeded", "failed", "cancelled")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")

EVENT_TYPES = ("status", "progress", "preview", "snapshot", "warning", "result", "error")

ERROR_CODES = (
    "INVALID_CONFIG",  # a setting is out of range or unknown
    "UNKNOWN_PROMPT",  # the reference prior does not know the prompt
    "MODEL_MISSING",  # weights are not in the local cache
    "CUDA_OOM",  # out of GPU memory
    "OUT_OF_MEMORY",  # over the memory budget before it ran, or out of host memory while running
    "DIVERGED",  # non-finite losses persisted
    "CANCELLED",
    "WORKER_CRASHED",
    "INTERNAL",
)

SNAPSHOT_KINDS = ("gaussians", "mesh")


def make_event(type_: str, job_id: str = "", **fields: Any) -> dict[str, Any]:
    """A new event dict (without `seq`, which the job store assigns)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}; expected one of {', '.join(EVENT_TYPES)}")
    return {"type": type_, "job_id": job_id, "time": round(time.time(), 3), **fields}


def error_event(code: str, message: str, hint: str = "", job_id: str = "") -> dict[str, Any]:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return make_event("error", job_id, code=code, message=message, hint=hint)
