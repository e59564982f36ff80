"""A fake backend behind the client API (Session / JobHandle) for driving the add-on deterministically:
scripted events, controllable failures, and a check that no network call happens on the main thread."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from pathlib import Path


def off_main_thread(what: str) -> None:
    assert threading.current_thread() is not threading.main_thread(), f"{what} called on Blender's main thread"


class FakeBackendError(Exception):
    def __init__(self, code: str, message: str, hint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint, self.status = code, message, hint, status


class FakeServer:
    """Shared state of one fake backend. `script(job_id, config)` returns the events of a job, in order; an
    event {"type": "_wait"} blocks the stream until `gate` is set (or the job is cancelled)."""

    def __init__(self, presets: list[dict], snapshots: list[bytes], final: bytes, kind: str = "gaussians") -> None:
        self.presets = presets
        self.snapshots = snapshots
        self.final = final
        self.kind = kind  # of the snapshots and the final asset: "gaussians" or "mesh"
        self.final_count = int(final.split(b"element vertex ")[1].split(b"\n")[0])
        self.down = False
        self.submitted: list[dict] = []
        self.cancelled: set[str] = set()
        self.deleted: set[str] = set()
        self.gate = threading.Event()
        self.script = self.default_script
        self.health_calls = 0

    def default_script(self, job_id: str, config: dict) -> list[dict]:
        evs: list[dict] = [{"type": "status", "state": "running", "renderer": "torch", "device": "cpu",
                            "prior": "reference", "message": "stage main from step 0"}]
        total = 100 * len(self.snapshots)
        for i, blob in enumerate(self.snapshots):
            step = 100 * (i + 1)
            evs.append({"type": "progress", "stage": 0, "stage_name": "main", "step": step, "steps": total,
                        "global_step": step, "total_steps": total, "losses": {"sds": 0.5 / (i + 1)},
                        "it_per_s": 10.0, "eta_s": (total - step) / 10.0})
            evs.append({"type": "snapshot", "artifact": f"snapshot-{step:06d}.ply", "kind": self.kind,
                        "count": 0, "step": step, "data": blob})
        artifacts = {"asset": "asset.ply", "result": "result.json"}
        if self.kind == "mesh":
            artifacts["asset_glb"] = "asset.glb"
        evs.append({"type": "result", "artifacts": artifacts, "kind": self.kind, "metrics": {},
                    "count": self.final_count, "seconds": 1.0})
        evs.append({"type": "status", "state": "succeeded", "message": "done"})
        return evs

    def session_class(self):
        server = self

        class Session(FakeSession):
            pass

        Session.server = server
        return Session


class FakeSession:
    server: FakeServer

    def __init__(self, base_url: str, token: str, timeout: float = 5.0) -> None:
        self.base_url, self.token, self.timeout = base_url, token, timeout

    @classmethod
    def from_token_file(cls, base_url: str, token_file, timeout: float = 5.0):
        off_main_thread("from_token_file")
        return cls(base_url, Path(token_file).read_text().strip(), timeout)

    def health(self) -> dict:
        off_main_thread("health")
        self.server.health_calls += 1
        if self.server.down:
            raise ConnectionRefusedError("connection refused")
        return {"versions": {"distillery": "0.1.0", "protocol": 1}, "devices": ["cpu"], "renderers": ["torch"],
                "queue_length": 0}

    def presets(self) -> list[dict]:
        off_main_thread("presets")
        return copy.deepcopy(self.server.presets)

    def submit(self, config: dict):
        off_main_thread("submit")
        if self.server.down:
            raise FakeBackendError("UNAVAILABLE", "backend down")
        self.server.submitted.append(copy.deepcopy(config))
        return FakeHandle(self, uuid.uuid4().hex, 0, config)

    def handle(self, job_id: str, last_seq: int = 0):
        return FakeHandle(self, job_id, last_seq, None)


class FakeHandle:
    def __init__(self, session: FakeSession, job_id: str, last_seq: int, config: dict | None) -> None:
        self.session, self.job_id, self.last_seq, self.config = session, job_id, last_seq, config

    def stream(self, on_event, stop: threading.Event) -> threading.Thread:
        server = self.session.server
        events = server.script(self.job_id, self.config or {})

        def run() -> None:
            for seq, ev in enumerate(events, start=1):
                if seq <= self.last_seq:
                    continue
                if ev["type"] == "_wait":
                    while not (server.gate.is_set() or self.job_id in server.cancelled or stop.is_set()):
                        time.sleep(0.01)
                    if self.job_id in server.cancelled:
                        on_event({"type": "status", "state": "cancelled", "job_id": self.job_id, "seq": seq})
                        return
                    continue
                if stop.is_set():
                    return
                self.last_seq = seq
                on_event({**ev, "job_id": self.job_id, "seq": seq})

        t = threading.Thread(target=run, name="distillery-fake-stream", daemon=True)
        t.start()
        return t

    def poll_once(self, wait: float = 0.0) -> list[dict]:
        raise NotImplementedError

    def cancel(self) -> None:
        off_main_thread("cancel")
        if self.session.server.down:
            raise FakeBackendError("CONNECTION_REFUSED", "nothing is listening")
        self.session.server.cancelled.add(self.job_id)

    def download(self, name: str) -> bytes:
        off_main_thread("download")
        assert name == "asset.ply"
        return self.session.server.final

    def delete(self) -> None:
        off_main_thread("delete")
        self.session.server.deleted.add(self.job_id)
