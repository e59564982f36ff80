"""GPU presets through the server: a representative set (SDS, VSD with its v-prediction particle model, ISM, JSD with
Perp-Neg, NeRF -> DMTet, DeepFloyd IF -> Stable Diffusion) runs to its final asset on tiny random diffusers models
standing in for the known models in the server's Hugging Face cache, and a job whose weights are missing fails with
MODEL_MISSING and the exact download command as its hint (what the add-on's "Model missing" box shows). Every GPU
preset runs through the CLI in tests/backend/test_gpu_presets_tiny.py."""

from __future__ import annotations

import shutil
import sys

import pytest

from backend import presets
from backend.io.ply import read_gaussian_ply
from backend.priors import hub

from .conftest import ROOT, Server, run_to_end

sys.path.insert(0, str(ROOT / "tests" / "backend"))
from diffusers_fixtures import install_known_models, tiny_run_overrides

REPRESENTATIVE = ["gaussian-sds", "prolificdreamer", "luciddreamer", "jsd", "magic3d", "stabledreamer"]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-presets")
    cache = root / "hub"
    install_known_models(cache)
    srv = Server(root / "data", env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}).start()
    srv.hf_cache = cache
    yield srv
    srv.stop()


def _request(name: str) -> dict:
    return {"preset": name, "prompt": "a blue mug", "seed": 0, **tiny_run_overrides(presets.get(name))}


def test_representative_gpu_presets_reach_their_final_asset(tiny_server, tmp_path):
    s = tiny_server.session(timeout=30)
    handles = {name: s.submit(_request(name)) for name in REPRESENTATIVE}  # queued, run in order
    for name, handle in handles.items():
        events = run_to_end(handle, timeout=300)
        final = events[-1]
        assert final["type"] == "status" and final["state"] == "succeeded", (name, events[-3:])
        result = next(e for e in events if e["type"] == "result")
        asset = tmp_path / f"{name}.ply"
        asset.write_bytes(handle.download(result["artifacts"]["asset"]))
        assert asset.read_bytes().startswith(b"ply")
        job = s.job(handle.job_id)
        assert job["step"] == 2 * len(presets.get(name).stages)
        if presets.get(name).stages[-1].representation.name == "gaussians":
            assert len(read_gaussian_ply(asset)["x"]) == result["count"] > 0


def test_missing_weights_fail_with_model_missing_and_the_download_command(tiny_server):
    # The server looks for weights when a job starts: take DeepFloyd IF out of its cache, then ask for it.
    shutil.rmtree(tiny_server.hf_cache / ("models--" + hub.KNOWN_MODELS["if-i-xl"].repo_id.replace("/", "--")))
    s = tiny_server.session(timeout=30)
    handle = s.submit({**_request("stabledreamer"), "seed": 1})  # its first stage needs DeepFloyd IF
    events = run_to_end(handle, timeout=300)
    error = next(e for e in events if e["type"] == "error")
    assert error["code"] == "MODEL_MISSING"
    assert error["hint"] == "distillery models download if-i-xl"
    assert "DeepFloyd/IF-I-XL-v1.0" in error["message"] and "not available locally" in error["message"]
    job = s.job(handle.job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "MODEL_MISSING"
    assert job["error"]["hint"] == "distillery models download if-i-xl"
