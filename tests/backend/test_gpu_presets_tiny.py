"""Every GPU preset end to end on the CPU: the preset as shipped (method, guidance, stages, particle model),
with tiny random diffusers models standing in for the known models in a Hugging Face cache, two steps per
stage at 32 px, through the CLI to the final asset. The server runs a representative set in
tests/server/test_gpu_presets_server.py."""

from __future__ import annotations

import json

import pytest
from diffusers_fixtures import install_known_models, tiny_run_overrides

from backend import cli, presets
from backend.io.ply import read_gaussian_ply

GPU_PRESETS = [n for n in presets.names() if any(st.prior.name != "reference" for st in presets.get(n).stages)]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    install_known_models(cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")  # a job never downloads
        yield cache


def test_the_gpu_presets_are_the_ones_on_diffusers_priors():
    assert {"gaussian-sds", "prolificdreamer", "esd", "asd", "luciddreamer", "jsd", "jsd-surroundings",
            "stabledreamer", "dreamfusion", "magic3d", "real3d"} <= set(GPU_PRESETS)


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_preset_runs_end_to_end_on_tiny_priors(name, tiny_cache, tmp_path, capsys):
    cfg = presets.get(name)
    argv = ["generate", "a blue mug", "--preset", name, "--quiet", "--out", str(tmp_path / "out")]
    for k, v in tiny_run_overrides(cfg).items():
        argv += ["--set", f"{k}={v}"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    asset = tmp_path / "out" / result["artifacts"]["asset"]
    assert asset.is_file() and asset.stat().st_size > 0
    assert result["steps"] == 2 * len(cfg.stages)
    if cfg.stages[-1].representation.name == "gaussians":
        assert len(read_gaussian_ply(asset)["x"]) == result["count"] > 0
