"""`distillery models`: what is cached, what each preset needs, and downloads (mocked: no network here)."""

from __future__ import annotations

import json

import pytest
from diffusers_fixtures import install_in_hf_cache, tiny_model

from backend import cli
from backend.priors import hub


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def test_models_lists_cache_and_preset_needs(hf_cache, capsys):
    install_in_hf_cache(hf_cache, "stabilityai/stable-diffusion-2-1-base", tiny_model("tiny-sd"))
    assert cli.main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["models"]}
    assert data["cache"] == str(hf_cache)
    assert rows["sd21-base"]["available"] and rows["sd21-base"]["size_bytes"] > 0
    assert {"gaussian-sds", "prolificdreamer", "esd", "asd"} <= set(rows["sd21-base"]["needed_by"])
    assert not rows["sd21"]["available"] and "prolificdreamer" in rows["sd21"]["needed_by"]
    assert not rows["if-i-xl"]["available"]
    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    assert "distillery models download sd21" in text and "gaussian-sds" in text


def test_download_uses_the_hub_client_with_patterns(hf_cache, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    def fake(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(install_in_hf_cache(hf_cache, repo_id, tiny_model("tiny-sd")))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert cli.main(["models", "download", "sd21-base"]) == 0
    (repo_id, kw), = calls
    assert repo_id == "stabilityai/stable-diffusion-2-1-base" and kw["cache_dir"] == hf_cache
    assert "unet/*.safetensors" in kw["allow_patterns"] and "*.fp16.*" in kw["ignore_patterns"]
    assert hub.resolve_model("sd21-base", hub.SD_COMPONENTS).is_dir()


def test_download_refuses_offline_and_generate_reports_missing_model(hf_cache, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["models", "download", "sd21"]) == 1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    code = cli.main(["generate", "a mug", "--preset", "gaussian-sds", "--device", "cpu", "--steps", "1",
                     "--out", str(hf_cache / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "distillery models download sd21-base" in err


def test_bench_random_prior_rejects_unknown_architectures(capsys):
    assert cli.main(["bench", "--preset", "gaussian-sds", "--random-prior", "sd99", "--steps", "2"]) == 2
    assert "sd21-base" in capsys.readouterr().err
