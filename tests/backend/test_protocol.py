"""backend/protocol.py is the one home of every wire-level name: the engine, the job store, the server, the worker
and the add-on use its names, and nothing speaks a name it does not define."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backend import protocol
from backend.jobs import artifacts

ROOT = Path(__file__).resolve().parents[2]


def _calls(path: Path, func_name: str, arg: int) -> list[tuple[int, str]]:
    """(line, string) of every literal passed as argument `arg` to a call of `func_name` in `path`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == func_name \
                and len(node.args) > arg and isinstance(node.args[arg], ast.Constant) \
                and isinstance(node.args[arg].value, str):
            out.append((node.lineno, node.args[arg].value))
    return out


def test_every_final_artifact_and_intermediate_is_served_and_typed():
    for name in [*protocol.FINAL_NAMES, protocol.snapshot_name(12), protocol.preview_name(123_456_789)]:
        assert artifacts.valid_name(name), name
        assert Path(name).suffix in artifacts.MEDIA_TYPES, name
    assert artifacts.valid_name("asset.glb")  # meshes' GLB is a final artifact like the others
    for bad in ("../asset.ply", "asset.PLY", "snapshot-12.ply", "snapshot-000012.png", "result.json/", "x.glb"):
        assert not artifacts.valid_name(bad), bad


def test_events_carry_exactly_their_fields():
    ev = protocol.make_event("preview", "j", artifact=protocol.preview_name(3), step=3)
    assert set(ev) == {*protocol.EVENT_COMMON_FIELDS, *protocol.EVENT_FIELDS["preview"]}
    with pytest.raises(ValueError, match="missing"):
        protocol.make_event("result", "j", artifacts={}, metrics={}, count=1, seconds=1.0)  # no kind
    with pytest.raises(ValueError, match="unknown"):
        protocol.make_event("preview", "j", artifact="preview.png", step=1, colour="red")
    with pytest.raises(ValueError, match="error code"):
        protocol.error_event("OOPS", "message")
    assert set(protocol.EVENT_FIELDS) == set(protocol.EVENT_TYPES) == set(protocol.EVENT_OPTIONAL_FIELDS)


def test_the_presets_payload_has_the_protocol_fields():
    from backend import presets

    payload = presets.payload()
    assert [p["name"] for p in payload] == presets.names()
    assert all(tuple(p) == protocol.PRESET_FIELDS for p in payload)
    assert all(tuple(s) == protocol.SETTING_FIELDS for p in payload for s in p["settings"])


def test_the_addon_copy_is_the_backend_file():
    assert (ROOT / "addon/client/protocol.py").read_bytes() == (ROOT / "backend/protocol.py").read_bytes()


def test_backend_codes_are_the_protocol_codes():
    worker = _calls(ROOT / "backend/jobs/worker.py", "_failed", 0)
    assert worker and {c for _, c in worker} <= set(protocol.ERROR_CODES), worker
    server = _calls(ROOT / "backend/server/app.py", "_error", 1) + _calls(ROOT / "backend/server/auth.py",
                                                                       "_respond", 3)
    for node in ast.walk(ast.parse((ROOT / "backend/server/auth.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) > 1 \
                and isinstance(node.value.elts[1], ast.Constant):
            server.append((node.lineno, node.value.elts[1].value))
    assert len(server) > 10
    unknown = [(line, c) for line, c in server if c not in protocol.HTTP_ERROR_CODES]
    assert not unknown, unknown


def test_addon_codes_are_the_protocol_codes():
    known = {*protocol.ERROR_CODES, *protocol.HTTP_ERROR_CODES, *protocol.CLIENT_ERROR_CODES}
    panels = ast.parse((ROOT / "addon/panels.py").read_text(encoding="utf-8"))
    fixes = next(n.value for n in ast.walk(panels) if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "ERROR_FIXES" for t in n.targets))
    handled = {k.value for k in fixes.keys}
    assert handled <= known, handled - known
    # Every way a job can fail has its own fix-it button, except INTERNAL (a plain retry).
    assert set(protocol.ERROR_CODES) - {"INTERNAL"} <= handled, set(protocol.ERROR_CODES) - handled
    raised = _calls(ROOT / "addon/client/transport.py", "BackendError", 0) \
        + _calls(ROOT / "addon/operators.py", "_fail", 1)
    assert raised and {c for _, c in raised} <= known, raised
