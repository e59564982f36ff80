"""Every wire-level name the backend and its clients share, in one place. Standard library only.

`addon/client/protocol.py` is a checked copy of this file (tests/server/test_worker.py compares them), so the
Blender add-on decodes events and names artifacts without importing the backend. Change a name here, copy the
file, and every side (engine, job store, server, worker, add-on, tests) follows. docs/DESIGN.md §4 describes
the protocol as a whole; docs/API.md the HTTP routes.

Events are small JSON objects. Every event has `type`, `job_id` and `time` (Unix seconds); the job store adds
a per-job increasing `seq` when it records the event, and clients resume with `after=<last seq>`. Each type's
fields are in EVENT_FIELDS (required) and EVENT_OPTIONAL_FIELDS:
- status:   state (one of JOB_STATES), message; the first status of a run also names `renderer`, `device`
            and `prior` so a fallback is never silent.
- progress: stage (index), stage_name, step (within the stage), steps (of the stage), global_step,
            total_steps, losses {name: float}, it_per_s, eta_s.
- preview:  artifact (file name of a PNG grid), step.
- snapshot: artifact (file name of a PLY), kind (one of RESULT_KINDS), count, step; meshes add faces.
            Clients apply only the newest snapshot per job (keep-latest, LOSSY_EVENT_TYPES).
- warning:  code (one of WARNING_CODES), message.
- result:   artifacts {role: file name} (FINAL_ARTIFACTS' roles), metrics {name: float}, kind (how to read
            asset.ply), count, seconds; meshes add faces.
- error:    code (one of ERROR_CODES), message, hint; INVALID_CONFIG adds `field` (the dotted setting key).
"""

from __future__ import annotations

import re
import time
from typing import Any

PROTOCOL_VERSION = 1

# ---------------------------------------------------------------------------------------------- jobs and events

JOB_STATES = ("queued", "running", "resumed", "cancelling", "succeeded", "failed", "cancelled")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")

EVENT_TYPES = ("status", "progress", "preview", "snapshot", "warning", "result", "error")
EVENT_COMMON_FIELDS = ("type", "job_id", "time")  # every event; the job store adds "seq"
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "status": ("state", "message"),
    "progress": ("stage", "stage_name", "step", "steps", "global_step", "total_steps", "losses", "it_per_s",
                 "eta_s"),
    "preview": ("artifact", "step"),
    "snapshot": ("artifact", "kind", "count", "step"),
    "warning": ("code", "message"),
    "result": ("artifacts", "metrics", "kind", "count", "seconds"),
    "error": ("code", "message", "hint"),
}
EVENT_OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "status": ("renderer", "renderer_note", "device", "prior", "step", "attempt", "code"),
    "progress": ("count",),
    "preview": (),
    "snapshot": ("faces",),
    "warning": ("step",),
    "result": ("faces",),
    "error": ("free", "total", "field"),
}
LOSSY_EVENT_TYPES = ("snapshot", "preview")  # a client may skip all but the newest of these

# What a job's representation produces: the layout of its snapshots and of asset.ply.
RESULT_KINDS = ("gaussians", "mesh")
SNAPSHOT_KINDS = RESULT_KINDS

# ---------------------------------------------------------------------------------------------- codes

ERROR_CODES = (  # why a job failed (error events, and the job's `code`)
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

WARNING_CODES = (  # warning events
    "NON_FINITE",  # a step had non-finite losses or gradients and was skipped
    "ROLLBACK",  # non-finite values persisted; the job went back to its last good state
    "STALLED",  # no event from the running job for a while
    "CHECKPOINT_SKIPPED",  # a damaged or non-finite checkpoint was skipped for an older good one
    "CHECKPOINT_FAILED",  # a new checkpoint did not verify; the older good one was kept
    "CLIENT",  # the add-on could not read an artifact (raised on the client side only)
    "MESH_EMPTY",  # a Gaussian job's density has no surface at output.gaussian_mesh.level: no asset.glb
    "MESH_FAILED",  # a Gaussian job's conversion to a mesh failed: no asset.glb (the Gaussians are kept)
)

HTTP_ERROR_CODES = (  # the `code` of an HTTP error body {"code", "message", "hint", "field"}
    "BAD_REQUEST",
    "INVALID_JSON",
    "INVALID_PARAMETER",
    "INVALID_CONFIG",
    "UNKNOWN_PROMPT",
    "OUT_OF_MEMORY",  # the job's estimated peak memory exceeds the budget (422)
    "UNAUTHORIZED",
    "FORBIDDEN_HOST",
    "FORBIDDEN_ORIGIN",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "JOB_RUNNING",
    "TOO_LARGE",
    "STORAGE_ERROR",  # the job database or the data dir cannot be written (503)
    "INVALID_PLY",  # POST /v1/meshes: the body is not a 3DGS PLY
    "HTTP_ERROR",
    "INTERNAL",
)

CLIENT_ERROR_CODES = (  # raised inside a client, never sent by the server
    "CONNECTION_REFUSED",  # nothing listens: the backend is not running
    "CONNECTION_LOST",  # the connection closed mid-request
    "TIMEOUT",  # no answer in time
    "CONNECTION_ERROR",
    "BAD_RESPONSE",  # the answer is not what the protocol says
    "BACKEND_NOT_INSTALLED",  # the add-on has no backend to start
    # the add-on's own diagnoses (addon/failures.py): each has a fix-it box
    "BACKEND_NOT_RUNNING",  # stopped: start it
    "BACKEND_NO_INTERPRETER",  # no Python set for the backend, or it does not exist
    "BACKEND_MISSING_PACKAGE",  # the backend's Python lacks a package ("No module named 'torch'")
    "BACKEND_INCOMPLETE",  # the managed environment lacks some of the backend's packages
    "BACKEND_EXITED",  # the launched process exited
    "BACKEND_START_TIMEOUT",  # it did not answer within the start-up timeout
    "BACKEND_UNRESPONSIVE",  # it stopped answering
    "BACKEND_UNREACHABLE",  # nothing answers at the URL given
    "PROTOCOL_MISMATCH",  # the backend speaks another PROTOCOL_VERSION
    "SUBMIT_FAILED",  # the job could not be sent
    "EMPTY_PROMPT",  # panel fields the add-on checks before sending
    "NO_CAMERA",
    "BAD_SEED_SHAPE",
    "PRESETS_NOT_LOADED",
)

# ---------------------------------------------------------------------------------------------- artifacts
# Server-chosen file names: a client names an artifact by one of these, never by a path.

ASSET_PLY = "asset.ply"  # Gaussians in the 3DGS layout, or a mesh (positions, normals, uchar colours, faces)
ASSET_GLB = "asset.glb"  # the asset as a textured/coloured mesh, glTF binary (meshes; Gaussians unless output.mesh
# is off; mesh conversion jobs of POST /v1/meshes, whose asset.ply is that mesh)
PREVIEW_PNG = "preview.png"  # a grid of views
TURNTABLE_GIF = "turntable.gif"  # the turntable, looping
TURNTABLE_PNG = "turntable.png"  # a contact sheet of the turntable frames
RESULT_JSON = "result.json"  # config, seed, timings, counts, evaluation

# result event / result.json "artifacts": role -> file name (asset_glb when a mesh was written, turntables only
# when output.turntable_frames > 0).
FINAL_ARTIFACTS: dict[str, str] = {
    "asset": ASSET_PLY,
    "asset_glb": ASSET_GLB,
    "preview": PREVIEW_PNG,
    "turntable": TURNTABLE_GIF,
    "turntable_sheet": TURNTABLE_PNG,
    "result": RESULT_JSON,
}
FINAL_NAMES = tuple(FINAL_ARTIFACTS.values())

# Intermediates: the step number, zero-padded to at least 6 digits. Only the newest few are kept.
SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX = "snapshot", ".ply"
PREVIEW_PREFIX, PREVIEW_SUFFIX = "preview", ".png"
_ARTIFACT_NAME = re.compile(
    "^(?:" + "|".join(re.escape(n) for n in FINAL_NAMES)
    + rf"|{SNAPSHOT_PREFIX}-[0-9]{{6,9}}\{SNAPSHOT_SUFFIX}|{PREVIEW_PREFIX}-[0-9]{{6,9}}\{PREVIEW_SUFFIX})$")


def snapshot_name(step: int) -> str:
    return f"{SNAPSHOT_PREFIX}-{step:06d}{SNAPSHOT_SUFFIX}"


def preview_name(step: int) -> str:
    return f"{PREVIEW_PREFIX}-{step:06d}{PREVIEW_SUFFIX}"


def is_artifact_name(name: Any) -> bool:
    """Whether `name` is one a job may write: a final artifact or a numbered snapshot or preview."""
    return isinstance(name, str) and _ARTIFACT_NAME.fullmatch(name) is not None


# ---------------------------------------------------------------------------------------------- presets payload
# GET /v1/presets: a list of presets in menu order, each with these fields; "settings" is a list of settings
# with SETTING_FIELDS (backend/core/settings.py SettingInfo.to_json). Built by backend.presets.payload().

PRESET_FIELDS = ("name", "summary", "source", "needs_gpu", "notes", "total_steps", "settings")
SETTING_FIELDS = ("key", "kind", "default", "help", "lo", "hi", "choices", "unit", "advanced", "allowed")


# ---------------------------------------------------------------------------------------------- constructors


def make_event(type_: str, job_id: str = "", **fields: Any) -> dict[str, Any]:
    """A new event dict (without `seq`, which the job store assigns). Every required field of the type must be
    given, and nothing but its required and optional fields."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}; expected one of {', '.join(EVENT_TYPES)}")
    missing = [k for k in EVENT_FIELDS[type_] if k not in fields]
    unknown = [k for k in fields if k not in EVENT_FIELDS[type_] and k not in EVENT_OPTIONAL_FIELDS[type_]]
    if missing or unknown:
        raise ValueError(f"{type_} event: missing {missing}, unknown {unknown}")
    return {"type": type_, "job_id": job_id, "time": round(time.time(), 3), **fields}


def error_event(code: str, message: str, hint: str = "", job_id: str = "", **extra: Any) -> dict[str, Any]:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return make_event("error", job_id, code=code, message=message, hint=hint, **extra)


def warning_event(code: str, message: str, job_id: str = "", **extra: Any) -> dict[str, Any]:
    if code not in WARNING_CODES:
        raise ValueError(f"unknown warning code {code!r}")
    return make_event("warning", job_id, code=code, message=message, **extra)
