"""The HTTP API (docs/API.md): thin routes over the JobManager.

Every error is a JSON object {code, message, hint} (plus `field` for a bad setting) with no traceback and no
file path; tracebacks go to the server log only. JSON bodies are parsed strictly: NaN, Infinity and numbers
that overflow to infinity are refused.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend import __version__, protocol
from backend.core.settings import is_valid_text
from backend.jobs.artifacts import MEDIA_TYPES, open_artifact, sha256_of
from backend.jobs.manager import JobConflict, JobManager, JobNotFound
from backend.jobs.store import JOB_ID_PATTERN
from backend.jobs.worker import redact_paths
from backend.protocol import JOB_STATES, PROTOCOL_VERSION
from backend.server.auth import PUBLIC_PATHS, BodyTooLarge, Guard

log = logging.getLogger("distillery.server")

MAX_WAIT_S = 30.0
MAX_EVENTS = 1000
NDJSON = "application/x-ndjson"


# ---------------------------------------------------------------------------------------------- schemas


class Error(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. INVALID_CONFIG, UNAUTHORIZED, NOT_FOUND")
    message: str = Field(description="What went wrong, for a person")
    hint: str = Field(description="What to do about it (allowed values, what to lower), may be empty")
    field: str | None = Field(None, description="The setting at fault (dotted key), for INVALID_CONFIG")


class JobError(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    hint: str


class Job(BaseModel):
    id: str = Field(pattern=JOB_ID_PATTERN)
    state: Literal[JOB_STATES]  # type: ignore[valid-type]
    attempt: int = Field(description="Times a worker has started the job (a resumed job counts again)")
    crashes: int = Field(description="Times the worker process died while running it")
    resumed: bool = Field(description="A run continued from a checkpoint")
    prompt: str
    preset: str
    step: int = Field(description="Last global step reported")
    total_steps: int
    created: float
    started: float | None
    finished: float | None
    error: JobError | None
    result: dict[str, Any] | None = Field(description="artifacts {role: name}, metrics, kind, count, faces, seconds")
    queue_position: int | None = Field(description="0 = runs next; null when not queued")
    last_seq: int = Field(description="Seq of the newest event")
    artifacts: list[str] = Field(description="Names of the files the job has now")


class JobDetail(Job):
    config: dict[str, Any] = Field(description="The full, validated JobConfig")


class Setting(BaseModel):
    key: str
    kind: str
    default: Any
    help: str
    lo: float | None
    hi: float | None
    choices: list[str] | None
    unit: str
    advanced: bool
    allowed: str


class Preset(BaseModel):
    name: str
    summary: str
    source: str
    needs_gpu: bool
    total_steps: int
    settings: list[Setting]


class Health(BaseModel):
    status: Literal["ok"]
    protocol_version: int
    version: str
    worker: str = Field(description="ready | starting | stopping")
    worker_restarts: int
    devices: dict[str, Any] | None = Field(description="What the worker found: CUDA devices, gsplat")
    renderers: dict[str, list[str]] | None = Field(description="Renderers available per representation")
    queue_length: int
    busy: bool = Field(description="A job is running (which one is not said: this route needs no token)")
    uptime_s: float


class Deleted(BaseModel):
    deleted: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed request", 401: "Missing or wrong token", 403: "Host, Origin or Sec-Fetch-Site refused",
            404: "No such job or artifact", 409: "The job is running", 413: "Body too large",
            422: "Invalid parameter or setting, or over the memory budget (OUT_OF_MEMORY)",
            503: "The job database or the data dir cannot be written (STORAGE_ERROR)"}
    return {c: {"model": Error, "description": text[c]} for c in codes}


JOB_REQUEST_SCHEMA = {
    "type": "object",
    "description": "Any subset of the JobConfig fields, merged over a preset (see docs/API.md). Dotted keys "
                   "such as `method.guidance_scale` or `stages.0.steps` apply like `--set`.",
    "properties": {
        "job_id": {"type": "string", "pattern": JOB_ID_PATTERN,
                   "description": "Optional id chosen by the client; resubmitting it returns the existing job"},
        "preset": {"type": "string", "description": "Base preset (default gaussian-sds-quick)"},
        "prompt": {"type": "string"},
        "negative_prompt": {"type": "string"},
        "seed": {"type": "integer"},
        "device": {"type": "string"},
        "stages": {"type": "array", "items": {"type": "object"}},
        "output": {"type": "object"},
    },
    "additionalProperties": True,
    "example": {"preset": "gaussian-sds-quick", "prompt": "a red duck", "seed": 3, "stages.0.steps": 300},
}


# ---------------------------------------------------------------------------------------------- app


def create_app(manager: JobManager, token: str, hosts: frozenset[str]) -> Any:
    """The FastAPI app wrapped in the Guard (Host, Origin, token and body-size checks)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        await manager.start()
        try:
            yield
        finally:
            await manager.stop()

    app = FastAPI(title="Distillery", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json",
                  description="Local text-to-3D generation server. Every route but /v1/health needs "
                              "`Authorization: Bearer <token>`; see docs/API.md.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        return _error(exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"),
                      "no such route" if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, "INVALID_PARAMETER", f"{where}: {first.get('msg', 'invalid')}",
                      "see the OpenAPI document for the allowed values", field=where)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_req: Request, _exc: BodyTooLarge) -> JSONResponse:
        return _error(413, "TOO_LARGE", "the request body is too large",
                      "a job request is at most 64 KiB, a PLY for /v1/meshes at most 256 MiB")

    @app.exception_handler(sqlite3.Error)
    async def storage_error(_req: Request, exc: sqlite3.Error) -> JSONResponse:
        log.error("job database error: %s", exc)
        return _error(503, "STORAGE_ERROR", f"the job database cannot be used ({exc.__class__.__name__}: "
                      f"{redact_paths(str(exc))})", "check the data dir's disk space and permissions; see the "
                      "server log")

    @app.exception_handler(OSError)
    async def disk_error(_req: Request, exc: OSError) -> JSONResponse:
        log.error("storage error: %s", exc)
        return _error(503, "STORAGE_ERROR", f"a file in the data dir cannot be used ({exc.strerror or 'error'})",
                      "check the data dir's disk space and permissions; see the server log")

    @app.exception_handler(Exception)
    async def internal(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "INTERNAL", "internal server error", "see the server log")

    job_id_param = Path(pattern=JOB_ID_PATTERN, description="A job id: 32 lower-case hex digits")

    @app.get("/v1/health", response_model=Health, tags=["server"], responses=_errors(403))
    async def health() -> JSONResponse:
        """Versions, the worker's devices and renderers, the queue. Needs no token."""
        return JSONResponse({"status": "ok", "protocol_version": PROTOCOL_VERSION, "version": __version__,
                             **manager.health()})

    @app.get("/v1/presets", response_model=list[Preset], tags=["jobs"], responses=_errors(401, 403))
    async def list_presets() -> JSONResponse:
        """Every preset with every setting: key, kind, default, range or choices, unit and one-line help."""
        return JSONResponse(_presets())

    @app.post("/v1/jobs", status_code=201, response_model=JobDetail, tags=["jobs"],
              responses={200: {"model": JobDetail, "description": "A job with this job_id already exists"},
                         **_errors(400, 401, 403, 413, 422, 503)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": JOB_REQUEST_SCHEMA}}}})
    async def submit(request: Request) -> JSONResponse:
        """Validate a job request and queue it. Returns the job (201), or the existing job (200) when
        `job_id` names one."""
        from backend.core.settings import ConfigError
        from backend.engine.memory import MemoryBudgetError
        from backend.priors.reference.prompts import UnknownPromptError

        body = await request.body()
        try:
            data = strict_json(body)
        except InvalidText as exc:
            return _error(422, "INVALID_CONFIG", str(exc), "send text without lone surrogates", field=exc.field)
        except ValueError as exc:
            return _error(400, "INVALID_JSON", f"the body is not valid JSON: {exc}",
                          "send a JSON object; NaN and Infinity are not allowed")
        if not isinstance(data, dict):
            return _error(422, "INVALID_CONFIG", "request: the body must be a JSON object", "see docs/API.md",
                          field="request")
        try:
            job, created = manager.submit(data)
        except MemoryBudgetError as exc:
            return _error(422, "OUT_OF_MEMORY", str(exc), f"lower {exc.allowed}" if exc.allowed else "",
                          field=exc.field)
        except ConfigError as exc:
            return _error(422, "INVALID_CONFIG", str(exc), f"allowed: {exc.allowed}" if exc.allowed else "",
                          field=exc.field)
        except UnknownPromptError as exc:
            return _error(422, "UNKNOWN_PROMPT", str(exc), "use a prompt the reference prior knows",
                          field="prompt")
        job["config"] = manager.store.config(job["id"])
        return JSONResponse(job, status_code=201 if created else 200)

    @app.post("/v1/meshes", status_code=201, response_model=JobDetail, tags=["jobs"],
              responses={200: {"model": JobDetail, "description": "A job with this job_id already exists"},
                         **_errors(400, 401, 403, 413, 422)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def submit_mesh(request: Request,
                          job_id: str | None = Query(None, pattern=JOB_ID_PATTERN,
                                                     description="Optional id chosen by the client")) -> JSONResponse:
        """Queue the conversion of a 3DGS PLY (the request body, at most 256 MiB) into a textured mesh. It runs
        in the job queue like a generation; its result lists asset.glb (and the mesh as asset.ply). Conversion
        settings are query parameters named as in `output.gaussian_mesh` (resolution, level, min_opacity,
        faces, texture_size, views, view_resolution)."""
        from backend.core.settings import ConfigError
        from backend.io.ply import PLYError

        settings = {k: v for k, v in request.query_params.items() if k != "job_id"}
        body = await request.body()
        if not body:
            return _error(422, "INVALID_PLY", "the body is empty", "send a 3DGS PLY file as the body",
                          field="body")
        try:
            job, created = manager.submit_mesh(body, settings, job_id)
        except ConfigError as exc:
            return _error(422, "INVALID_CONFIG", str(exc), f"allowed: {exc.allowed}" if exc.allowed else "",
                          field=exc.field)
        except PLYError as exc:
            return _error(422, "INVALID_PLY", f"the body is not a 3DGS PLY: {exc}",
                          "send a PLY with the 3DGS vertex properties (x, y, z, f_dc_*, opacity, scale_*, rot_*)",
                          field="body")
        job["config"] = manager.store.config(job["id"])
        return JSONResponse(job, status_code=201 if created else 200)

    @app.get("/v1/jobs", response_model=list[Job], tags=["jobs"], responses=_errors(401, 403))
    async def list_jobs() -> JSONResponse:
        """Every job, in submission order."""
        return JSONResponse(manager.list())

    @app.get("/v1/jobs/{job_id}", response_model=JobDetail, tags=["jobs"], responses=_errors(401, 403, 404, 422))
    async def get_job(job_id: str = job_id_param) -> JSONResponse:
        """One job, with its full config."""
        try:
            return JSONResponse(manager.get(job_id, with_config=True))
        except JobNotFound:
            return _not_found()

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], response_class=Response,
             responses={200: {"description": "Events as NDJSON: one JSON object per line, oldest first, each "
                                              "with `seq`", "content": {NDJSON: {"schema": {"type": "string"}}}},
                        **_errors(401, 403, 404, 422)})
    async def events(job_id: str = job_id_param,
                     after: int = Query(0, ge=0, le=2**53, description="Return events with seq > after"),
                     wait: float = Query(0.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False,
                                         description="Seconds to wait for a first event (long-poll)"),
                     limit: int = Query(MAX_EVENTS, ge=1, le=MAX_EVENTS)) -> Response:
        """Events after `after` (long-poll). Reconnecting with the last seq received misses nothing and
        repeats nothing; of the snapshot and preview events only the newest of each is returned."""
        try:
            items = await manager.events(job_id, after, wait, limit)
        except JobNotFound:
            return _not_found()
        body = "".join(json.dumps(e, allow_nan=False, separators=(",", ":")) + "\n" for e in items)
        return Response(body, media_type=NDJSON)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=Job, tags=["jobs"],
              responses=_errors(401, 403, 404, 422))
    async def cancel(job_id: str = job_id_param) -> JSONResponse:
        """Cancel a job. A queued job is cancelled at once; a running one becomes `cancelling` and stops at
        the end of its current step (a `cancelled` status event with the step follows)."""
        try:
            return JSONResponse(manager.cancel(job_id))
        except JobNotFound:
            return _not_found()

    @app.get("/v1/jobs/{job_id}/artifacts/{name}", tags=["jobs"], response_class=Response,
             responses={200: {"description": "The file; header X-Content-SHA256 holds its sha256",
                              "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                          for m in sorted(set(MEDIA_TYPES.values()))}},
                        **_errors(401, 403, 404, 422)})
    async def artifact(job_id: str = job_id_param,
                       name: str = Path(description="An artifact name the server lists: "
                                                    + ", ".join(protocol.FINAL_NAMES) + ", "
                                                    + protocol.snapshot_name(0).replace("000000", "NNNNNN") + ", "
                                                    + protocol.preview_name(0).replace("000000", "NNNNNN"))
                       ) -> Response:
        """Download an artifact by its server-chosen name."""
        try:
            manager.get(job_id)
        except JobNotFound:
            return _not_found()
        path = open_artifact(manager.jobs_root, job_id, name)
        if path is None:
            return _error(404, "NOT_FOUND", "no such artifact", "use a name from the job's `artifacts` list")
        try:
            data = path.read_bytes()
        except OSError:
            return _error(404, "NOT_FOUND", "no such artifact (it was replaced by a newer one)",
                          "use a name from the job's `artifacts` list")
        return Response(data, media_type=MEDIA_TYPES[path.suffix], headers={"X-Content-SHA256": sha256_of(data)})

    @app.delete("/v1/jobs/{job_id}", response_model=Deleted, tags=["jobs"],
                responses=_errors(401, 403, 404, 409, 422))
    async def delete(job_id: str = job_id_param) -> JSONResponse:
        """Delete a job that is not running, with its events and files."""
        try:
            manager.delete(job_id)
        except JobNotFound:
            return _not_found()
        except JobConflict:
            return _error(409, "JOB_RUNNING", "the job is running", "cancel it and wait for it to end first")
        return JSONResponse({"deleted": job_id})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in doc["paths"].items():
                for op in ops.values():
                    if path not in PUBLIC_PATHS:
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return Guard(app, token, hosts)


def strict_json(body: bytes) -> Any:
    """json.loads that refuses NaN, Infinity and numbers too large for a float."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{text[:20]} is too large")
        return value

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=no_constant, parse_float=finite_float)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    _check_text(data, "")
    return data


class InvalidText(ValueError):
    """Valid JSON holding text that UTF-8 cannot encode; `field` is where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _check_text(value: Any, where: str) -> None:
    """Refuse strings (keys included) that UTF-8 cannot encode: JSON's \\ud800 escapes decode to lone
    surrogates, which no database, file or response could hold."""
    if isinstance(value, str):
        if not is_valid_text(value):
            raise InvalidText(where or "request", "a string holds a lone surrogate (\\ud800-\\udfff)")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not is_valid_text(k):
                raise InvalidText(where or "request", "a key holds a lone surrogate (\\ud800-\\udfff)")
            _check_text(v, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, f"{where}.{i}" if where else str(i))


def _presets() -> list[dict[str, Any]]:
    from backend import presets

    return presets.payload()


def _error(status: int, code: str, message: str, hint: str = "", field: str | None = None) -> JSONResponse:
    body = {"code": code, "message": _printable(message), "hint": _printable(hint),
            "field": None if field is None else _printable(field)}
    return JSONResponse(body, status_code=status)


def _printable(text: str) -> str:
    """`text` with anything UTF-8 cannot encode (lone surrogates) escaped, so an error always renders."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _not_found() -> JSONResponse:
    return _error(404, "NOT_FOUND", "no such job", "list the jobs with GET /v1/jobs")
