"""POST /v1/meshes: a 3DGS PLY converted into a textured mesh as a job of the same queue, through the stdlib
client; bad uploads are refused before anything is queued."""

from __future__ import annotations

import numpy as np
import pytest

from addon.client import BackendError
from backend.io.ply import gaussian_ply_names, write_gaussian_ply

from .conftest import run_to_end
from .test_security import assert_error_body, raw, snapshot_state

pytestmark = pytest.mark.timeout(300)

SMALL = {"resolution": 32, "faces": 800, "texture_size": 128, "views": 4, "view_resolution": 64}
GREEN = (0.2, 0.7, 0.3)


def ball_ply(path, n=600) -> bytes:
    """A 3DGS PLY of opaque green Gaussians filling a ball of radius 0.4."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(n, 3))
    xyz = d / np.linalg.norm(d, axis=1, keepdims=True) * 0.4 * rng.random((n, 1)) ** (1 / 3)
    arrays = {k: np.zeros(n, np.float32) for k in gaussian_ply_names(0)}
    arrays.update(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], opacity=np.full(n, 2.2), rot_0=np.ones(n))
    for i in range(3):
        arrays[f"scale_{i}"] = np.full(n, np.log(0.05))
        arrays[f"f_dc_{i}"] = np.full(n, (GREEN[i] - 0.5) / 0.28209479177387814)
    write_gaussian_ply(path, {k: v.astype(np.float32) for k, v in arrays.items()})
    return path.read_bytes()


def test_a_converted_ply_comes_back_as_a_textured_glb(server, tmp_path):
    import trimesh

    s = server.session()
    handle = s.submit_mesh(ball_ply(tmp_path / "ball.ply"), SMALL)
    events = run_to_end(handle)
    assert events[-1]["state"] == "succeeded", events[-3:]
    result = next(e for e in events if e["type"] == "result")
    assert result["kind"] == "mesh" and result["artifacts"]["asset_glb"] == "asset.glb"
    job = s.job(handle.job_id)
    assert {"asset.glb", "asset.ply", "preview.png", "result.json"} <= set(job["artifacts"])
    assert "source.ply" not in job["artifacts"]  # the upload is never served
    assert job["config"]["task"] == "mesh" and job["config"]["gaussian_mesh"]["resolution"] == 32
    (tmp_path / "asset.glb").write_bytes(handle.download("asset.glb"))
    (geom,) = trimesh.load(tmp_path / "asset.glb").geometry.values()
    assert 0 < len(geom.faces) <= 800
    image = np.asarray(geom.visual.material.baseColorTexture.convert("RGB")) / 255.0
    assert image.shape == (128, 128, 3)
    assert np.abs(image - GREEN).max(axis=-1).mean() < 0.05
    # The same upload with the same id is the same job (a retried submit never runs twice).
    assert s.job(handle.job_id)["state"] == "succeeded"


def test_bad_uploads_are_refused_with_the_field_and_queue_nothing(server, tmp_path):
    s = server.session()
    before = snapshot_state(server)
    ply = ball_ply(tmp_path / "ball.ply", n=50)
    with pytest.raises(BackendError) as err:
        s.submit_mesh(ply, {"resolution": 5})
    assert err.value.code == "INVALID_CONFIG" and "resolution" in err.value.message and "16" in err.value.message
    with pytest.raises(BackendError) as err:
        s.submit_mesh(ply, {"colour": "red"})
    assert err.value.code == "INVALID_CONFIG" and "colour" in err.value.message
    with pytest.raises(BackendError) as err:
        s.submit_mesh(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    assert err.value.code == "INVALID_PLY"
    with pytest.raises(BackendError) as err:
        s.submit_mesh(b"not a ply at all")
    assert err.value.code == "INVALID_PLY"
    status, data = raw(server, "POST", "/v1/meshes", body=ply, token=False)
    assert status == 401 and assert_error_body(data, "UNAUTHORIZED")
    # The upload cap is announced by Content-Length and refused before the body is read.
    status, data = raw(server, "POST", "/v1/meshes", headers={"Content-Length": str(300 * 1024 * 1024)})
    assert status == 413 and assert_error_body(data, "TOO_LARGE")
    # Job requests keep their own small cap.
    status, data = raw(server, "POST", "/v1/jobs", body=b"{" + b" " * (70 * 1024) + b"}")
    assert status == 413
    assert snapshot_state(server) == before
