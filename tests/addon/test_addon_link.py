"""The add-on's bpy-free parts with plain pytest: the event reducer (events -> the panel's job state), the
failure table (every protocol error code has a fix), the launcher's diagnoses, and the link's threads
(a backend that exits for a missing module, a cancel kept while the backend is down)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from addon import failures, launcher, link, reducer
from addon.client import protocol

ROOT = Path(__file__).resolve().parents[2]


def _run(events: list[dict]) -> reducer.JobView:
    view = reducer.JobView()
    for ev in events:
        view = reducer.reduce(view, ev)
    return view


def test_progress_then_a_mesh_result():
    view = _run([{"type": "submitted"},
                 {"type": "status", "state": "running", "renderer": "torch", "device": "cpu", "prior": "reference"},
                 {"type": "progress", "global_step": 20, "total_steps": 80, "eta_s": 12.0, "losses": {"sds": 0.25}},
                 {"type": "snapshot", "kind": "mesh", "step": 20}])
    assert (view.state, view.step, view.steps, view.progress, view.loss) == ("running", 20, 80, 0.25, "sds 0.25")
    assert view.message == "running: renderer torch on cpu, prior reference" and view.kind == "mesh"
    view = _run([{"type": "result", "kind": "mesh", "count": 5202, "faces": 10400, "seconds": 17.3},
                 {"type": "status", "state": "succeeded", "message": "done"}])
    assert (view.state, view.kind, view.count, view.faces, view.progress) == ("succeeded", "mesh", 5202, 10400, 1.0)
    assert view.message == "done: a mesh of 5202 vertices, 10400 faces in 17 s"


def test_an_error_keeps_its_code_hint_and_field():
    view = _run([{"type": "status", "state": "running"},
                 {"type": "error", "code": "INVALID_CONFIG", "message": "stages.0.camera.resolution: 9 is below 16",
                  "hint": "allowed: 16..1024", "field": "stages.0.camera.resolution"}])
    assert (view.state, view.error_code, view.error_field) == ("failed", "INVALID_CONFIG", "stages.0.camera.resolution")
    assert view.error_hint == "allowed: 16..1024" and not view.running


def test_a_deferred_cancel_is_shown_and_then_resolved():
    view = _run([{"type": "status", "state": "running"}, {"type": "cancel_deferred"}])
    assert view.state == "cancelling" and view.cancel_pending and "when it is back" in view.message
    view = reducer.reduce(reducer.reduce(view, {"type": "cancel_sent"}), {"type": "status", "state": "cancelled"})
    assert view.state == "cancelled" and not view.cancel_pending


def test_every_protocol_error_code_has_a_fix():
    for code in protocol.ERROR_CODES:
        fix = failures.FIXES[code]
        assert fix.title and fix.cause and fix.actions, code
    prob = failures.problem_for("MODEL_MISSING", "sd21 is not cached\nTraceback ...",
                                "run: distillery models download sd21")
    assert prob.cause == "sd21 is not cached"  # one line
    assert [a.operator for a in prob.actions] == ["distillery.download_model", "distillery.open_preferences"]
    assert failures.model_name_from_hint(prob.hint) == "sd21"
    # the backend's own MODEL_MISSING message names the command too
    from backend.priors.hub import ModelNotFoundError, short_name

    model = "stabilityai/stable-diffusion-2-1-base"
    message = str(ModelNotFoundError(model, "/cache", ["unet"]))
    assert failures.model_name_from_hint(message) == short_name(model)
    assert failures.problem_for("NO_SUCH_CODE").actions[0].button == "Retry"


def test_diagnose_names_the_missing_module():
    log = ["Traceback (most recent call last):", '  File "backend/__init__.py", line 3, in <module>',
           "    import torch", "ModuleNotFoundError: No module named 'torch'"]
    err = launcher.diagnose(log, "/usr/bin/python3", 1)
    assert err.code == "BACKEND_MISSING_PACKAGE" and str(err) == "No module named 'torch' in /usr/bin/python3"
    err = launcher.diagnose(["OSError: [Errno 98] address already in use"], "/usr/bin/python3", 1)
    assert err.code == "BACKEND_EXITED" and str(err).endswith("code 1: OSError: [Errno 98] address already in use")


def test_a_half_made_environment_is_not_installed(tmp_path):
    venv = tmp_path / "venv"
    py = launcher.venv_python(venv)
    py.parent.mkdir(parents=True)
    py.write_text("")
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "torch-2.13.0.dist-info").mkdir()
    missing = launcher.missing_packages(venv, ROOT)
    assert "torch" not in missing and {"fastapi", "numpy", "pytorch_optimizer"} <= set(missing)
    try:
        launcher.check_managed(venv, ROOT)
        raise AssertionError("a half-made environment passed")
    except launcher.LaunchError as exc:
        assert exc.code == "BACKEND_INCOMPLETE" and "fastapi" in str(exc)
    for req in launcher.requirements(ROOT):  # every package present: complete
        name = launcher._dist_name(req)
        (site / f"{name}-1.0.dist-info").mkdir(exist_ok=True)
    launcher.check_managed(venv, ROOT)


def test_a_backend_that_lacks_a_module_is_reported_with_its_name(tmp_path):
    embed = tmp_path / "embed" / "backend"
    embed.mkdir(parents=True)
    (embed / "__init__.py").write_text("")
    (embed / "__main__.py").write_text("import distillery_missing_module_for_test\n")
    spec = launcher.LaunchSpec(python=sys.executable, port=launcher.free_port(), token_file=tmp_path / "token",
                               data_dir=tmp_path / "data", log_file=tmp_path / "backend.log",
                               pythonpath=tmp_path / "embed")
    box = link.Mailbox()
    backend = link.BackendLink(box, link.default_session_factory)  # the real client: nothing answers
    backend.launch(spec, startup_timeout=60)
    dead = None
    for _ in range(600):
        for msg in box.drain():
            if msg.data.get("state") == "dead":
                dead = msg.data
        if dead:
            break
        threading.Event().wait(0.05)
    assert dead is not None
    assert dead["code"] == "BACKEND_MISSING_PACKAGE"
    assert dead["message"] == f"No module named 'distillery_missing_module_for_test' in {sys.executable}"


class _Handle:
    def __init__(self, server, job_id):
        self.server, self.job_id = server, job_id

    def cancel(self):
        if self.server.down:
            raise link_error("CONNECTION_REFUSED")
        self.server.cancelled.append(self.job_id)


class _Session:
    def __init__(self, server):
        self.server = server

    def handle(self, job_id, last_seq=0):
        return _Handle(self.server, job_id)


class link_error(Exception):  # stands in for client.BackendError
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def test_a_cancel_while_the_backend_is_down_is_sent_after_it_is_back():
    server = type("S", (), {"down": True, "cancelled": []})()
    rt = link.Runtime(lambda: None)
    job = "a" * 32
    assert rt.cancel(job, backend_alive=False) is False  # no session: kept, nothing sent
    rt.link.session = _Session(server)
    assert rt.cancel(job) is True  # a session, but the call fails: kept too
    for _ in range(200):
        if any(m.data.get("type") == "cancel_deferred" for m in rt.mailbox.drain()):
            break
        threading.Event().wait(0.01)
    assert rt.pending_cancels == {job} and server.cancelled == []
    server.down = False  # the backend is back
    assert rt.flush_cancels() == [job]
    for _ in range(200):
        if server.cancelled:
            break
        threading.Event().wait(0.01)
    assert server.cancelled == [job] and rt.pending_cancels == set()


def _mesh_bytes() -> bytes:
    from addon.client import ply

    verts = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    return ply.write_mesh(None, verts, [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])


def test_the_final_asset_is_decoded_by_the_result_kind():
    """A mesh job's asset.ply is read as a mesh (the result names its kind; an older server that does not is
    read by the kind of its last snapshot), never as Gaussians."""
    blob = _mesh_bytes()
    handle = type("H", (), {"download": lambda self, name: blob})()
    for result, snapshot_kind in (({"kind": "mesh"}, ""), ({}, "mesh")):
        rt = link.Runtime(lambda: None)
        w = link.Watcher("b" * 32, "Scene", handle, threading.Event(), kind=snapshot_kind)
        rt._on_event(w, {"type": "result", "artifacts": {"asset": "asset.ply"}, "count": 4, **result})
        geometry = rt.mailbox.take_geometry()[w.job_id].data
        verts, faces, _ = geometry["payload"]
        assert geometry["kind"] == "mesh" and geometry["final"] and verts.shape == (4, 3) and faces.shape == (4, 3)
        assert [m.data["type"] for m in rt.mailbox.drain()] == ["result"]  # no "could not read" warning
