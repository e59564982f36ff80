"""The DeepFloyd IF stage I prior on a tiny random IF (T5 tokenizer trained by the test, saved in diffusers format):
pixel space, the first 3 of 6 output channels, T5 embeddings cached on disk so the encoder loads at most once."""

from __future__ import annotations

import pytest
import torch
from diffusers_fixtures import tiny_model

from backend.config import DeepFloydIFPriorConfig, GaussiansConfig, SDSConfig
from backend.core.cameras import orbit_cameras
from backend.methods.sds import SDS
from backend.priors import diffusers_base
from backend.priors.deepfloyd_if import DeepFloydIFPrior, embedding_cache_dir
from backend.renderers.gaussians_torch import TorchGaussianRenderer
from backend.representations.gaussians import Gaussians

PROMPT = "a blue mug"


def _cams():
    return orbit_cameras(torch.tensor([10.0, 20.0]), torch.tensor([0.0, 170.0]), 2.0, 40.0, 32)


@pytest.fixture(scope="module")
def if_prior(tmp_path_factory):
    import os

    before = os.environ.get("DISTILLERY_CACHE")
    os.environ["DISTILLERY_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # embeddings go to a fresh folder
    p = DeepFloydIFPrior(DeepFloydIFPriorConfig(model=str(tiny_model("tiny-if"))), "cpu")
    p.prepare(PROMPT, "")
    yield p
    if before is None:
        os.environ.pop("DISTILLERY_CACHE", None)
    else:
        os.environ["DISTILLERY_CACHE"] = before


def test_pixel_space_eps_is_the_first_three_channels(if_prior):
    p = if_prior
    assert p.image_size == 16 and p.unet.config.out_channels == 6
    cond = p.condition(PROMPT, "", _cams())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 800])
    with torch.no_grad():
        out_c = p.unet(x, t, encoder_hidden_states=cond.data["cond"]).sample
        out_u = p.unet(x, t, encoder_hidden_states=cond.data["uncond"]).sample
    assert torch.allclose(p.predict_eps(x, t, cond, 1.0), out_c[:, :3], atol=1e-6)
    assert torch.allclose(p.predict_eps(x, t, cond, 21.0), out_u[:, :3] + 21 * (out_c[:, :3] - out_u[:, :3]), atol=1e-4)
    # IF's own schedule (squared cosine), read from its scheduler config, not SD's
    assert p.alphas_cumprod[0].item() == pytest.approx(0.99997, abs=2e-5)
    rgb = torch.rand(2, 40, 40, 3)
    z = p.encode(rgb)
    assert z.shape == (2, 3, 16, 16) and z.min() >= -1 and z.max() <= 1
    assert p.decode(z).shape == (2, 16, 16, 3)


def test_t5_embeddings_are_cached_on_disk_and_the_encoder_is_not_reloaded(if_prior):
    assert if_prior.t5_loads == 1
    files = list(embedding_cache_dir(if_prior.model_key).glob("*.safetensors"))
    assert len(files) == len(if_prior.texts_for(PROMPT, ""))
    diffusers_base._EMBEDDINGS.clear()  # a new process: only the disk cache is left
    again = DeepFloydIFPrior(DeepFloydIFPriorConfig(model=if_prior.cfg.model), "cpu")
    again.prepare(PROMPT, "")
    assert again.t5_loads == 0
    c1, c2 = if_prior.condition(PROMPT, "", _cams()), again.condition(PROMPT, "", _cams())
    assert torch.equal(c1.data["cond"], c2.data["cond"])


def test_sds_through_if_reaches_the_gaussians(if_prior):
    rep = Gaussians(GaussiansConfig(init_count=200, init_radius=0.4), "cpu", generator=torch.Generator().manual_seed(0))
    cams = _cams()
    out = TorchGaussianRenderer().render(rep, cams, torch.ones(2, 3))
    sds = SDS(SDSConfig(guidance_scale=21.0), if_prior, 10, torch.Generator().manual_seed(0))
    sds.losses(out, cams, if_prior.condition(PROMPT, "", cams), 0)["sds"].backward()
    assert rep.xyz.grad is not None and rep.xyz.grad.abs().sum() > 0 and torch.isfinite(rep.xyz.grad).all()
