"""Hostile and careless clients, storage faults and the memory budget at the server: every odd but valid JSON
body gets a 4xx naming the field (never a 5xx or a traceback); a job over the memory budget is refused before
it is queued with OUT_OF_MEMORY naming what to lower; a broken database is a JSON error or a one-line refusal
to start; health tells no job id; a half-sent request is disconnected."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from backend.jobs.manager import JobManager
from backend.server.app import create_app

from .conftest import ROOT, Server, quick_job

pytestmark = pytest.mark.timeout(300)

TOKEN = "t" * 43


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The real app (Guard included) in-process, without starting a worker: submit validates and queues."""
    mgr = JobManager(tmp_path_factory.mktemp("hardening") / "data")
    app = create_app(mgr, TOKEN, frozenset({"testserver"}))
    c = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {TOKEN}"})
    c.manager = mgr
    yield c
    mgr.store.close()


def post(client, body: bytes | str):
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})


def assert_clean_4xx(resp, field: str | None = None):
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert set(body) >= {"code", "message", "hint"}
    assert "Traceback" not in resp.text and "/work/" not in resp.text and "site-packages" not in resp.text
    if field is not None:
        assert body["field"] == field, body


ODD = {
    "309-digit seed": ('{"prompt": "a red duck", "seed": ' + "9" * 309 + "}", "seed"),
    "400-digit steps": ('{"prompt": "a red duck", "stages.0.steps": ' + "1" * 400 + "}", "stages.0.steps"),
    "huge float setting": ('{"prompt": "a red duck", "method.guidance_scale": -' + "7" * 320 + "}",
                           "method.guidance_scale"),
    "huge int in a pair": ('{"prompt": "a red duck", "camera.elevation_range": [' + "1" * 330 + ', 2]}',
                           "camera.elevation_range"),
    "lone surrogate in the prompt": ('{"prompt": "a red duck \\ud800"}', "prompt"),
    "lone surrogate in a key": ('{"prompt": "a red duck", "bo\\udc00gus": 1}', "request"),
    "lone surrogate deep inside": ('{"prompt": "a red duck", "stages": [{"camera": {"x\\udfff": 1}}]}',
                                   "stages.0.camera"),
    "superscript stage index": ('{"prompt": "a red duck", "stages.\u00b2.steps": 3}', "stages.\u00b2.steps"),
    "arabic-indic stage index": ('{"prompt": "a red duck", "stages.\u0661.steps": 3}', "stages.\u0661.steps"),
    "list as a prior name": ('{"prompt": "a red duck", "stages": [{"prior": {"name": ["x"]}}]}',
                             "stages.0.prior.name"),
    "object as a method name": ('{"prompt": "a red duck", "stages": [{"method": {"name": {"a": 1}}}]}',
                                "stages.0.method.name"),
    "list as a dotted family name": ('{"prompt": "a red duck", "prior.name": [1, 2]}', "prior.name"),
    "number as a representation name": ('{"prompt": "a red duck", "representation.name": 7}',
                                        "representation.name"),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_but_valid_json_is_a_4xx_naming_the_field(client, case):
    body, field = ODD[case]
    assert_clean_4xx(post(client, body), field)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_fuzzed_odd_json_never_gets_a_5xx_or_a_traceback(client, data):
    """Random requests built from the awkward corners of JSON: huge and negative integers, floats at the edge
    of overflow, lone surrogate escapes, other scripts' digits, containers where names belong, deep nesting."""
    atoms = (st.integers(-10**400, 10**400) | st.floats(allow_nan=False, allow_infinity=False)
             | st.sampled_from(["\\ud800", "\\udfff", "x\\udc80y", "\u00b2", "\u0663", "\x00", "", " " * 3])
             | st.text(max_size=6) | st.none() | st.booleans())
    values = st.recursive(atoms, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                       max_size=3), max_leaves=8)
    keys = st.sampled_from(["prompt", "seed", "preset", "device", "stages", "output", "stages.0.steps",
                            "stages.\u00b9.steps", "prior.name", "method.name", "representation.name",
                            "camera.resolution", "output.preview_resolution", "stages.0.prior",
                            "job_id", "x\\ud801"])
    request = data.draw(st.dictionaries(keys, values, max_size=4))
    request.setdefault("prompt", "a red duck")
    # Surrogate escapes must stay escapes in the JSON text: encode, then undo the doubled backslash.
    body = json.dumps(request, ensure_ascii=True).replace("\\\\u", "\\u")
    resp = post(client, body)
    assert resp.status_code < 500, resp.text[:300]
    assert "Traceback" not in resp.text
    if resp.status_code >= 400:
        assert resp.json()["message"]


def test_a_job_over_the_memory_budget_is_refused_before_it_is_queued(client, monkeypatch):
    from backend.engine import memory

    monkeypatch.setattr(memory, "available_host_bytes", lambda: 2 << 30)  # a 2 GiB machine
    before = len(client.manager.store.list())
    extreme = {**quick_job(), "output.preview_views": 16, "output.preview_resolution": 1024,
               "representation.init_count": 2_000_000, "representation.max_count": 2_000_000}
    resp = post(client, json.dumps(extreme))
    assert_clean_4xx(resp)
    body = resp.json()
    assert resp.status_code == 422 and body["code"] == "OUT_OF_MEMORY"
    assert "representation.init_count (now 2000000)" in body["hint"]
    assert "output.preview_resolution (now 1024)" in body["hint"]
    assert body["field"] in ("representation.init_count", "output.preview_resolution")
    assert len(client.manager.store.list()) == before  # nothing queued
    assert post(client, json.dumps(quick_job())).status_code == 201  # a small job still fits


def test_a_read_only_database_is_a_json_503_not_a_500(client):
    client.manager.store._db.execute("PRAGMA query_only=ON")  # every write now fails as on a read-only file
    try:
        resp = post(client, json.dumps(quick_job()))
    finally:
        client.manager.store._db.execute("PRAGMA query_only=OFF")
    assert resp.status_code == 503 and resp.json()["code"] == "STORAGE_ERROR"
    assert "Traceback" not in resp.text


def test_health_names_no_job_without_a_token(client):
    resp = client.get("/v1/health", headers={"Authorization": ""})
    assert resp.status_code == 200
    assert "running" not in resp.json() and isinstance(resp.json()["busy"], bool)


# ---------------------------------------------------------------------------------------------- processes


def serve(data_dir, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "backend", "serve", "--data-dir", str(data_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("fault", ["corrupt database", "data dir is a file"])
def test_a_storage_fault_refuses_to_start_with_one_line_and_leaves_no_connection_file(tmp_path, fault):
    data = tmp_path / "data"
    if fault == "corrupt database":
        data.mkdir()
        (data / "jobs.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    else:
        data.write_text("not a folder")
    proc = serve(data)
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (data / "server.json").exists() if data.is_dir() else True


def test_a_half_sent_request_is_disconnected(tmp_path):
    srv = Server(tmp_path / "data", extra_args=("--request-timeout", "1")).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(f"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n".encode())  # no blank line
            t0 = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server, with no response
            assert time.monotonic() - t0 < 25
        # a whole request on a fresh connection is still answered
        assert srv.session().health()["status"] == "ok"
    finally:
        srv.stop()


RUNAWAY = '''
import json, resource, sys
import psutil
from backend.config import to_dict
from backend.engine import memory
from backend.jobs import worker
from backend.jobs.requests import build_config

class Quiet:
    def send(self, message):
        pass

memory.check_budget = lambda *a, **k: None  # bypass the estimate: only the memory limit can stop this job
config = to_dict(build_config(json.loads(sys.argv[1])))
held = psutil.Process().memory_info().rss
resource.setrlimit(resource.RLIMIT_DATA, (held + (300 << 20), resource.RLIM_INFINITY))
outcome = worker.Worker(Quiet()).execute("0" * 32, config, __import__("pathlib").Path(sys.argv[2]))
print(json.dumps(outcome))
'''


def test_a_runaway_job_fails_alone_under_the_worker_memory_limit(tmp_path):
    job = {**quick_job(steps=2), "representation.init_count": 400_000, "representation.max_count": 400_000,
           "camera.resolution": 128, "camera.views": 4}
    proc = subprocess.run([sys.executable, "-c", RUNAWAY, json.dumps(job), str(tmp_path / "job")], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, env={**__import__("os").environ,
                                                                           "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["outcome"] == "failed" and outcome["error"]["code"] == "OUT_OF_MEMORY", outcome
    assert "representation.max_count (now 400000" in outcome["error"]["hint"]


# ---------------------------------------------------------------------------------------------- smaller items


def test_job_errors_carry_no_absolute_paths():
    from backend.jobs.worker import _failed, redact_paths

    out = _failed("INTERNAL", "No such file or directory: '/home/someone/data/jobs/x/asset.ply'",
                  "looked in /root/.cache/huggingface/hub and C:\\Users\\me\\models")
    text = json.dumps(out)
    assert "/home/" not in text and "/root/" not in text and "Users" not in text
    assert "asset.ply" in text  # the file's own name stays: it says what was missing
    assert redact_paths("see https://huggingface.co/x/y, ratio 1/2") == "see https://huggingface.co/x/y, ratio 1/2"


def test_a_missing_model_is_model_missing_without_the_cache_path(tmp_path, monkeypatch):
    from backend.config import to_dict
    from backend.jobs.requests import build_config
    from backend.jobs.worker import Worker

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = build_config({**quick_job(), "prior.name": "stable-diffusion"})

    class Quiet:
        def send(self, message):
            pass

    outcome = Worker(Quiet()).execute("1" * 32, to_dict(cfg), tmp_path / "job")
    assert outcome["outcome"] == "failed" and outcome["error"]["code"] == "MODEL_MISSING", outcome
    assert str(tmp_path) not in json.dumps(outcome)


def test_the_token_file_is_never_written_through_a_planted_link(tmp_path, monkeypatch):
    from backend.server import auth

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    monkeypatch.setattr(auth.secrets, "token_hex", lambda n: "fixed")
    target = tmp_path / "token"
    planted = target.with_name(f".token.tmp-{__import__('os').getpid()}-fixed")
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        auth.write_private(target, "secret\n")
    assert victim.read_text() == "keep me" and not target.exists()
