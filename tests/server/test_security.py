"""Security regression suite (docs/RELIABILITY.md §2 and §5.1-5.2): token, Host allow-list, Origin and
Sec-Fetch-Site, traversal, body caps, strict JSON, no leaks, loopback only."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys

import psutil
import pytest

from .conftest import ROOT, quick_job, run_to_end

pytestmark = pytest.mark.timeout(300)

DEFAULT = object()


def raw(server, method, path, *, headers=None, body=None, host=DEFAULT, token=True, chunked=False):
    """One request with exactly the headers given (http.client adds none of its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is DEFAULT:
            conn.putheader("Host", f"127.0.0.1:{server.port}")
        elif host is not None:
            conn.putheader("Host", host)
        if token is True:
            conn.putheader("Authorization", f"Bearer {server.token}")
        elif token:
            conn.putheader("Authorization", token)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for i in range(0, len(body), 8192):
                piece = body[i:i + 8192]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        elif body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        else:
            conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def finished_job(server):
    s = server.session()
    handle = s.submit(quick_job(steps=2, seed=30))
    run_to_end(handle)
    return handle.job_id


def routes(job_id):
    return [("GET", "/v1/presets"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("POST", "/v1/meshes"),
            ("GET", f"/v1/jobs/{job_id}"),
            ("GET", f"/v1/jobs/{job_id}/events?after=0"), ("POST", f"/v1/jobs/{job_id}/cancel"),
            ("GET", f"/v1/jobs/{job_id}/artifacts/asset.ply"), ("DELETE", f"/v1/jobs/{job_id}"),
            ("GET", "/v1/openapi.json"), ("GET", "/v1/nothing-here")]


def snapshot_state(server):
    s = server.session()
    return [(j["id"], j["state"]) for j in s.jobs()], sorted(os.listdir(server.data_dir / "jobs"))


def assert_error_body(body, code=None):
    data = json.loads(body)
    assert set(data) >= {"code", "message", "hint"}, data
    if code:
        assert data["code"] == code, data
    return data


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer ", "Basic abc", "bearer {t}", "Bearer {t}x",
                                  "{t}"])
def test_missing_or_wrong_token_is_401_on_every_route_before_any_state_change(server, finished_job, auth):
    before = snapshot_state(server)
    token = auth.format(t=server.token) if auth else None
    for method, path in routes(finished_job):
        body = json.dumps(quick_job(steps=2)).encode() if method == "POST" else None
        status, data = raw(server, method, path, token=token, body=body)
        assert status == 401, (method, path, status, data)
        assert_error_body(data, "UNAUTHORIZED")
    assert snapshot_state(server) == before


def test_health_needs_no_token_but_is_guarded_by_host_and_origin(server):
    status, data = raw(server, "GET", "/v1/health", token=None)
    assert status == 200 and json.loads(data)["status"] == "ok"
    assert raw(server, "GET", "/v1/health", token=None, host=f"evil.example:{server.port}")[0] == 403
    assert raw(server, "GET", "/v1/health", token=None, headers={"Origin": "null"})[0] == 403


BAD_HOSTS = ["evil.example:{p}", "", ":{p}", "localhost.evil.com:{p}", "127.0.0.1.nip.io:{p}", "127.0.0.1",
             "localhost", "127.0.0.1:{q}", "rebind.example:{p}", "127.0.0.1:{p}.evil.com", "LOCALHOST:{p}x"]


@pytest.mark.parametrize("host", BAD_HOSTS)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "OPTIONS"])
def test_host_outside_the_allow_list_is_403(server, finished_job, host, method):
    before = snapshot_state(server)
    value = host.format(p=server.port, q=server.port + 1)
    path = "/v1/jobs" if method in ("GET", "POST", "OPTIONS") else f"/v1/jobs/{finished_job}"
    body = json.dumps(quick_job(steps=2)).encode() if method in ("POST", "PUT") else None
    status, data = raw(server, method, path, host=value, body=body)
    assert status == 403, (value, method, status, data)
    assert_error_body(data, "FORBIDDEN_HOST")
    assert snapshot_state(server) == before


def test_allowed_hosts_are_served(server):
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}"):
        assert raw(server, "GET", "/v1/jobs", host=host)[0] == 200, host


ORIGINS = [{"Origin": "null"}, {"Origin": "http://evil.example"}, {"Origin": "http://127.0.0.1:{p}"},
           {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
           {"Origin": "http://rebind.example:{p}", "Host": "rebind.example:{p}"}]


@pytest.mark.parametrize("headers", ORIGINS, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()))
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "OPTIONS"])
def test_browser_origins_are_403_even_with_a_valid_token(server, finished_job, headers, method):
    before = snapshot_state(server)
    headers = {k: v.format(p=server.port) for k, v in headers.items()}
    host = headers.pop("Host", DEFAULT)
    path = {"GET": "/v1/jobs", "POST": "/v1/jobs", "OPTIONS": "/v1/jobs", "DELETE": f"/v1/jobs/{finished_job}"}
    body = json.dumps(quick_job(steps=2)).encode() if method == "POST" else None
    status, data = raw(server, method, path[method], headers=headers, host=host, body=body)
    assert status == 403, (headers, method, status, data)
    assert snapshot_state(server) == before


TRAVERSAL = ["../token", "..%2Ftoken", "..%2F..%2Fjobs.sqlite3", "%2e%2e%2ftoken", "%2e%2e", "..", ".",
             "%2Fetc%2Fpasswd", "..%5C..%5Ctoken", "C:%5Cwindows%5Cwin.ini", "%5C%5Cserver%5Cshare",
             "asset.ply%00.png", "asset.ply%2F..%2F..%2Ftoken", "ASSET.PLY", "snapshot-1.ply", "config.json",
             "checkpoints", "checkpoints%2Fckpt-00000001%2Fstate.pt", "result.json.tmp", "link.ply",
             "snapshot-000099.ply"]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_artifact_names_outside_the_allow_list_are_404(server, finished_job, name):
    folder = server.data_dir / "jobs" / finished_job
    link = folder / "snapshot-000099.ply"
    if not link.is_symlink():
        os.symlink(server.token_file, link)  # an escaping symlink with an allowed name
    status, data = raw(server, "GET", f"/v1/jobs/{finished_job}/artifacts/{name}")
    assert status == 404, (name, status, data)
    assert server.token.encode() not in data


def test_artifact_of_an_allowed_name_is_served_with_its_sha256(server, finished_job):
    import hashlib

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", f"/v1/jobs/{finished_job}/artifacts/asset.ply",
                 headers={"Authorization": f"Bearer {server.token}"})
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200 and hashlib.sha256(data).hexdigest() == resp.getheader("X-Content-SHA256")
    assert data == (server.data_dir / "jobs" / finished_job / "asset.ply").read_bytes()


def test_oversize_bodies_are_413_and_queue_nothing(server):
    before = snapshot_state(server)
    big = json.dumps({**quick_job(), "negative_prompt": "x" * (64 * 1024)}).encode()
    status, data = raw(server, "POST", "/v1/jobs", body=big)
    assert status == 413 and assert_error_body(data, "TOO_LARGE")
    status, data = raw(server, "POST", "/v1/jobs", body=big, chunked=True)
    assert status == 413 and assert_error_body(data, "TOO_LARGE")
    assert snapshot_state(server) == before


BAD_BODIES = [
    (b"{", 400, "INVALID_JSON", None),
    (b"", 400, "INVALID_JSON", None),
    (b"\xff\xfe", 400, "INVALID_JSON", None),
    (b'{"prompt": "a red duck", "seed": NaN}', 400, "INVALID_JSON", None),
    (b'{"prompt": "a red duck", "output": {"preview_every": Infinity}}', 400, "INVALID_JSON", None),
    (b'{"prompt": "a red duck", "stages.0.method.guidance_scale": -Infinity}', 400, "INVALID_JSON", None),
    (b'{"prompt": "a red duck", "stages.0.method.guidance_scale": 1e999}', 400, "INVALID_JSON", None),
    (b"[" * 5000 + b"]" * 5000, 400, "INVALID_JSON", None),
    (b"[]", 422, "INVALID_CONFIG", "request"),
    (b'"a red duck"', 422, "INVALID_CONFIG", "request"),
    (b'{"prompt": "a red duck", "bogus": 1}', 422, "INVALID_CONFIG", "bogus"),
    (b'{"prompt": "a red duck", "stages": [{"camera": {"resolution": 4096}}]}', 422, "INVALID_CONFIG",
     "stages.0.camera.resolution"),
    (b'{"prompt": "a red duck", "stages.0.camera.resolution": 4096}', 422, "INVALID_CONFIG",
     "stages.0.camera.resolution"),
    (b'{"prompt": "a red duck", "stages.0.steps": 200000}', 422, "INVALID_CONFIG", "stages.0.steps"),
    (b'{"prompt": "a red duck", "seed": -1}', 422, "INVALID_CONFIG", "seed"),
    (b'{"prompt": "a red duck", "seed": "seven"}', 422, "INVALID_CONFIG", "seed"),
    (b'{"prompt": "a red duck", "output": {"turntable_frames": [1]}}', 422, "INVALID_CONFIG",
     "output.turntable_frames"),
    (b'{"prompt": "a red duck", "stages": {}}', 422, "INVALID_CONFIG", "stages"),
    (b'{"prompt": "a red duck", "stages": [7]}', 422, "INVALID_CONFIG", "stages.0"),
    (b'{"prompt": "a red duck", "stages": [{"prior": {"name": "../../x"}}]}', 422, "INVALID_CONFIG",
     "stages.0.prior.name"),
    (b'{"prompt": "a red duck", "preset": "nope"}', 422, "INVALID_CONFIG", "preset"),
    (b'{"prompt": "a red duck", "job_id": "../../etc"}', 422, "INVALID_CONFIG", "job_id"),
    (b'{"prompt": "a red duck", "nope.deeper": 1}', 422, "INVALID_CONFIG", "nope.deeper"),
    (json.dumps({"prompt": "duck " * 1000}).encode(), 422, "INVALID_CONFIG", "prompt"),
    (b'{"prompt": ""}', 422, "INVALID_CONFIG", "prompt"),
    (b'{"prompt": "a spaceship"}', 422, "UNKNOWN_PROMPT", "prompt"),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_malformed_or_invalid_job_requests_get_a_structured_4xx_without_leaks(server, body, status, code, field):
    before = snapshot_state(server)
    got, data = raw(server, "POST", "/v1/jobs", body=body)
    assert got == status, (body[:80], got, data)
    err = assert_error_body(data, code)
    if field:
        assert err["field"] == field and field in err["message"], err
    text = data.decode()
    for leak in ("Traceback", "File \"", str(server.data_dir), str(ROOT), "site-packages"):
        assert leak not in text, (leak, text)
    assert snapshot_state(server) == before


@pytest.mark.parametrize("query", ["after=-1", "after=abc", "wait=nan", "wait=inf", "wait=1e999", "wait=31",
                                   "wait=-1", "limit=0"])
def test_bad_event_queries_are_422(server, finished_job, query):
    status, data = raw(server, "GET", f"/v1/jobs/{finished_job}/events?{query}")
    assert status == 422, (query, status, data)
    assert_error_body(data, "INVALID_PARAMETER")


@pytest.mark.parametrize("job_id", ["x", "0" * 31, "G" * 32, "A" * 32, "0" * 33])
def test_malformed_job_ids_are_refused(server, job_id):
    for method, path in [("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                         ("DELETE", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/events")]:
        status, _data = raw(server, method, path)
        assert status == 422, (method, path, status)
    assert raw(server, "GET", f"/v1/jobs/{'0' * 32}")[0] == 404


def test_server_listens_on_loopback_only(server):
    proc = psutil.Process(server.proc.pid)
    listening = [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip in ("127.0.0.1", "::1") for c in listening), listening
    worker = psutil.Process(server.worker_pid())
    assert not [c for c in worker.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for address in others:  # every non-loopback address this machine has
        with pytest.raises(OSError), socket.create_connection((address, server.port), timeout=2):
            pass


def test_widening_the_bind_needs_an_explicit_flag_and_tls(tmp_path):
    base = [sys.executable, "-m", "backend", "serve", "--data-dir", str(tmp_path)]
    for extra, words in ((["--host", "0.0.0.0"], "--allow-remote"),
                         (["--host", "0.0.0.0", "--allow-remote"], "--tls-cert")):
        run = subprocess.run(base + extra, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and words in run.stderr, (run.returncode, run.stderr)
    assert not (tmp_path / "token").exists()


def test_token_is_private_and_never_in_argv_logs_or_urls(server):
    mode = stat.S_IMODE(os.stat(server.token_file).st_mode)
    assert mode == 0o600, oct(mode)
    assert stat.S_IMODE(os.stat(server.data_dir / "server.json").st_mode) == 0o600
    token = server.token
    assert len(token) >= 43  # 32 random bytes, base64url
    for pid in (server.proc.pid, server.worker_pid()):
        assert token not in " ".join(psutil.Process(pid).cmdline())
        assert token not in json.dumps(psutil.Process(pid).environ())
    assert token not in server.log()
    assert token not in (server.data_dir / "server.json").read_text()
