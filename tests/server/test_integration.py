"""The real server in a subprocess, driven by the stdlib client: streaming, downloads, reconnects, cancel,
queue order, delete, idempotent submit."""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import socket
import threading
import time

import pytest

from addon.client import BackendError
from backend.io.ply import read_gaussian_ply

from .conftest import quick_job, run_to_end, wait_for

pytestmark = pytest.mark.timeout(420)

RELIABLE = ("status", "progress", "warning", "result", "error")


def reliable(events):
    return [e for e in events if e["type"] in RELIABLE]


def collect_stream(handle, timeout=300.0):
    """Run JobHandle.stream to the end; returns the events in delivery order."""
    got: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = handle.stream(got.put, stop)
    thread.join(timeout)
    alive = thread.is_alive()
    stop.set()
    events = []
    while not got.empty():
        events.append(got.get())
    assert not alive, f"the stream did not end; last events {events[-3:]}"
    return events


def test_health_and_presets(server):
    s = server.session()
    h = s.health()
    assert h["status"] == "ok" and h["protocol_version"] == 1 and h["worker"] == "ready"
    assert h["devices"]["cuda"] is False and h["renderers"]["gaussians"] == ["torch"]
    presets = s.presets()
    quick = next(p for p in presets if p["name"] == "gaussian-sds-quick")
    assert quick["needs_gpu"] is False and quick["summary"]
    keys = {st["key"]: st for st in quick["settings"]}
    res = keys["stages.0.camera.resolution"]
    assert (res["kind"], res["lo"], res["hi"], res["default"]) == ("int", 16, 2048, 64) and res["help"]
    assert keys["stages.0.prior.name"]["choices"] == ["reference", "stable-diffusion", "deepfloyd-if"]
    assert keys["stages.0.prior.name"]["default"] == "reference"


def test_job_streams_to_completion_and_downloads(server, tmp_path):
    s = server.session()
    handle = s.submit(quick_job(steps=6))
    events = collect_stream(handle)
    assert events[0]["type"] == "status" and events[0]["state"] == "queued"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "events out of order or repeated"
    steps = [e["global_step"] for e in events if e["type"] == "progress"]
    assert steps == list(range(1, 7))
    running = [e for e in events if e["type"] == "status" and e["state"] == "running"]
    assert any(e.get("renderer") == "torch" and e.get("prior") == "reference" for e in running)
    snaps = [e for e in events if e["type"] == "snapshot"]
    assert snaps and all(isinstance(e["data"], bytes) for e in snaps)
    (tmp_path / "snap.ply").write_bytes(snaps[-1]["data"])
    assert len(read_gaussian_ply(tmp_path / "snap.ply")["x"]) == snaps[-1]["count"]
    previews = [e for e in events if e["type"] == "preview"]
    assert previews and previews[-1]["data"].startswith(b"\x89PNG")
    result = next(e for e in events if e["type"] == "result")
    assert events[-1]["type"] == "status" and events[-1]["state"] == "succeeded"

    asset = handle.download(result["artifacts"]["asset"])
    (tmp_path / "asset.ply").write_bytes(asset)
    assert len(read_gaussian_ply(tmp_path / "asset.ply")["x"]) == result["count"]
    job = s.job(handle.job_id)
    assert job["state"] == "succeeded" and job["step"] == 6 and job["attempt"] == 1 and not job["resumed"]
    assert {"asset.ply", "preview.png", "result.json"} <= set(job["artifacts"])
    assert job["result"]["artifacts"]["asset"] == "asset.ply" and job["config"]["stages"][0]["steps"] == 6
    assert result["kind"] == job["result"]["kind"] == "gaussians"  # how a client decodes asset.ply

    # Reconnecting with any last seq gives every later reliable event exactly once, and the newest snapshot.
    full = s.handle(handle.job_id).poll_once()
    assert reliable(full) == [{k: v for k, v in e.items() if k != "data"} for e in reliable(events)]
    assert [e["seq"] for e in full if e["type"] == "snapshot"] == [snaps[-1]["seq"]]
    for k in range(0, full[-1]["seq"] + 1):
        later = s.handle(handle.job_id, last_seq=k).poll_once()
        assert reliable(later) == [e for e in reliable(full) if e["seq"] > k], k


class DroppingProxy:
    """A loopback TCP proxy to the server that can drop every open connection and refuse new ones for a
    while (a flaky network). It rewrites the Host header to the server's, as a port forward would."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.refusing = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: like a connection reset
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.server_port))
        with self.lock:
            self.open += [client, upstream]
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            head = head.replace(f"Host: 127.0.0.1:{self.port}".encode(), f"Host: 127.0.0.1:{self.server_port}".encode())
            upstream.sendall(head)
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def drop(self, seconds: float) -> None:
        self.refusing.set()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.open.clear()
        time.sleep(seconds)
        self.refusing.clear()

    def close(self) -> None:
        self.listener.close()


def test_stream_survives_dropped_connections_without_gaps_or_duplicates(server):
    from addon.client import Session

    proxy = DroppingProxy(server.port)
    try:
        direct = server.session()
        via_proxy = Session(f"http://127.0.0.1:{proxy.port}", server.token)
        handle = via_proxy.submit(quick_job(steps=8, seed=1))
        got: queue.Queue = queue.Queue()
        stop = threading.Event()
        thread = handle.stream(got.put, stop)
        events: list[dict] = []

        def progress_seen(n):
            while not got.empty():
                events.append(got.get())
            return sum(e["type"] == "progress" for e in events) >= n

        wait_for(lambda: progress_seen(2), 240, what="2 progress events")
        proxy.drop(1.5)
        wait_for(lambda: progress_seen(5), 240, what="5 progress events")
        proxy.drop(1.5)
        thread.join(300)
        assert not thread.is_alive()
        progress_seen(0)
    finally:
        stop.set()
        proxy.close()
    connection = [e for e in events if e["type"] == "connection"]
    assert [e["state"] for e in connection][:2] == ["lost", "restored"], connection
    job_events = [e for e in events if e["type"] != "connection"]
    seqs = [e["seq"] for e in job_events]
    assert seqs == sorted(set(seqs)), "a reconnect repeated or reordered events"
    full = direct.handle(handle.job_id).poll_once()
    assert [e["seq"] for e in reliable(job_events)] == [e["seq"] for e in reliable(full)], "a reconnect lost events"
    assert job_events[-1]["state"] == "succeeded"


def test_cancel_mid_job_stops_at_the_next_step(server):
    s = server.session()
    handle = s.submit(quick_job(steps=400, seed=2))
    seen: list[dict] = []

    def progressed():
        seen.extend(handle.poll_once(wait=2))
        return [e for e in seen if e["type"] == "progress"]

    progress = wait_for(progressed, 240, what="the job to make progress")
    step_at_cancel = progress[-1]["global_step"]
    t0 = time.monotonic()
    handle.cancel()
    assert s.job(handle.job_id)["state"] in ("cancelling", "cancelled")
    events = run_to_end(handle, timeout=60)
    ack = time.monotonic() - t0
    final = events[-1]
    assert final["type"] == "status" and final["state"] == "cancelled", final
    # The loop checks the flag after every step: it stops within the step in flight, plus the one whose
    # progress may not have reached us yet, plus the steps that ran while the cancel travelled to the worker
    # (on a loaded machine a round trip can outlast a few fast steps; counted from the job's own speed).
    in_transit = math.ceil(ack * max(e.get("it_per_s") or 0.0 for e in progress))
    assert final["step"] <= step_at_cancel + 2 + in_transit, (final, step_at_cancel, in_transit)
    assert final["step"] < 400 - 1  # and far from the end: the cancel, not the job's end, stopped it
    print(f"cancel acknowledged after {ack:.2f} s at step {final['step']}")
    job = s.job(handle.job_id)
    assert job["state"] == "cancelled" and job["finished"] is not None


def test_queued_jobs_run_in_submission_order(server):
    s = server.session()
    handles = [s.submit(quick_job(steps=2, seed=10 + i)) for i in range(3)]
    positions = [s.job(h.job_id)["queue_position"] for h in handles]
    assert positions[1:] == sorted(positions[1:]) and positions[2] is not None  # the last waits behind the others
    for h in handles:
        run_to_end(h)
    jobs = [s.job(h.job_id) for h in handles]
    assert [j["state"] for j in jobs] == ["succeeded"] * 3
    for before, after in itertools.pairwise(jobs):
        assert before["finished"] <= after["started"], "a job started before the previous one finished"
    listed = [j["id"] for j in s.jobs()]
    assert [listed.index(h.job_id) for h in handles] == sorted(listed.index(h.job_id) for h in handles)


def test_resubmitting_a_job_id_returns_the_existing_job(server):
    s = server.session()
    body = {**quick_job(steps=2, seed=20), "job_id": "ab" * 16}
    first = s.transport.request("POST", "/v1/jobs", body=body)
    second = s.transport.request("POST", "/v1/jobs", body={**body, "seed": 21})
    assert (first.status, second.status) == (201, 200)
    assert first.json()["id"] == second.json()["id"] == "ab" * 16 and second.json()["config"]["seed"] == 20
    assert sum(j["id"] == "ab" * 16 for j in s.jobs()) == 1
    run_to_end(s.handle("ab" * 16))


def test_delete_removes_a_finished_job_and_refuses_a_running_one(server):
    s = server.session()
    done = s.handle("ab" * 16)
    assert s.job(done.job_id)["state"] == "succeeded"
    folder = server.data_dir / "jobs" / done.job_id
    assert (folder / "asset.ply").is_file()
    running = s.submit(quick_job(steps=400, seed=22))
    wait_for(lambda: s.job(running.job_id)["state"] in ("running", "resumed"), 120, what="the job to start")
    with pytest.raises(BackendError) as err:
        running.delete()
    assert err.value.status == 409 and err.value.code == "JOB_RUNNING"
    running.cancel()
    done.delete()
    assert not folder.exists()
    with pytest.raises(BackendError) as err:
        s.job(done.job_id)
    assert err.value.status == 404
    run_to_end(running, timeout=60)
    running.delete()
    assert running.job_id not in [j["id"] for j in s.jobs()]


def test_stream_reports_an_unresponsive_backend_and_its_return(server):
    import os
    import signal

    s = server.session()
    handle = s.submit(quick_job(steps=400, seed=23))
    wait_for(lambda: s.job(handle.job_id)["step"] >= 1, 240, what="the job to make progress")
    got: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = handle.stream(got.put, stop)
    events: list[dict] = []

    def seen(kind, state=None):
        while not got.empty():
            events.append(got.get())
        return [e for e in events if e["type"] == kind and (state is None or e.get("state") == state)]

    wait_for(lambda: seen("progress"), 60, what="progress through the stream")
    os.kill(server.proc.pid, signal.SIGSTOP)  # alive but silent: connections open, no answers
    t0 = time.monotonic()
    try:
        wait_for(lambda: seen("connection", "lost"), 30, what="the stream to report the backend lost")
        silent = time.monotonic() - t0
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    wait_for(lambda: seen("connection", "restored"), 60, what="the stream to report the backend back")
    print(f"unresponsive backend reported after {silent:.1f} s")
    handle.cancel()
    thread.join(120)
    stop.set()
    assert not thread.is_alive()
    assert seen("status", "cancelled")
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == sorted(set(seqs))


def test_stream_of_a_finished_job_ends_without_spinning(server):
    s = server.session()
    ended = [j for j in s.jobs() if j["state"] in ("succeeded", "failed", "cancelled")]
    if not ended:  # run alone: make one
        run_to_end(s.submit(quick_job(steps=1, seed=24)))
        ended = [j for j in s.jobs() if j["state"] == "succeeded"]
    done = ended[0]
    got: list[dict] = []
    stop = threading.Event()
    thread = s.handle(done["id"], last_seq=done["last_seq"]).stream(got.append, stop)
    thread.join(30)
    stop.set()
    assert not thread.is_alive() and got == []
