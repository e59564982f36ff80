"""StableDreamer: the L2-to-denoised form equals SDS with the converted weight; two stages; convergence."""

import pytest
import torch

from backend import presets
from backend.config import ReferencePriorConfig, SDSConfig, StableDreamerConfig, apply_overrides
from backend.core.cameras import orbit_cameras
from backend.core.outputs import RenderOutput
from backend.engine.loop import run_job
from backend.methods.sds import SDS
from backend.methods.stabledreamer import StableDreamer, l2_weight
from backend.priors.base import scaled_linear_alphas_cumprod
from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY
from backend.priors.reference.prior import ReferencePrior


def test_weight_conversion_table():
    abar = scaled_linear_alphas_cumprod()
    t = torch.tensor([20, 250, 500, 980])
    a, s = abar[t].sqrt(), (1 - abar[t]).sqrt()
    assert torch.allclose(l2_weight("sds", abar, t), a * s, rtol=1e-5)
    assert torch.allclose(l2_weight("uniform", abar, t), a / s, rtol=1e-5)
    assert torch.allclose(l2_weight("fantasia3d", abar, t), a * a * s, rtol=1e-5)
    assert torch.allclose(l2_weight("inverse_sqrt_snr", abar, t), torch.ones(4), rtol=1e-5)


@pytest.mark.parametrize("weighting", ["sds", "uniform", "fantasia3d", "inverse_sqrt_snr"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "total"])
def test_l2_form_gives_the_sds_gradient(weighting, reduction):
    """Same generator state -> same t and noise; the gradients on the render must agree to rounding."""
    prior = ReferencePrior(ReferencePriorConfig(view_conditioning="prompt"))
    cams = orbit_cameras([15.0, 30.0], [0.0, 100.0], REFERENCE_DISTANCE, REFERENCE_FOVY, 64)
    cond = prior.condition("a red duck", "", cams)
    base = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    grads = []
    for cls, cfg in ((SDS, SDSConfig), (StableDreamer, StableDreamerConfig)):
        rgb = base.clone().requires_grad_(True)
        method = cls(cfg(guidance_scale=5.0, weighting=weighting, reduction=reduction), prior, 100,
                     torch.Generator().manual_seed(7))
        loss = sum(method.losses(RenderOutput(rgb=rgb, alpha=torch.ones(2, 64, 64, 1)), cams, cond, 3).values())
        loss.backward()
        grads.append(rgb.grad)
    sds, l2 = grads
    assert sds.abs().max() > 0
    assert torch.allclose(l2, sds, rtol=1e-4, atol=1e-5 * float(sds.abs().max()))


def test_quick_preset_has_the_two_annealed_stages():
    cfg = presets.get("stabledreamer-quick")
    pixel, latent = cfg.stages
    assert (pixel.name, latent.name) == ("pixel", "latent") and pixel.steps == latent.steps
    assert pixel.method.t_sampling == "random" and pixel.method.t_max == [0.0, 0.98, 0.5, 1.0]
    assert latent.method.t_sampling == "linear" and latent.method.t_max == 0.5 and latent.method.t_min == 0.02
    assert latent.representation.position_lr < pixel.representation.position_lr


def stabledreamer_config():
    return apply_overrides(presets.get("stabledreamer-quick"), {
        "output.preview_every": 0, "output.snapshot_every": 0, "output.checkpoint_every": 0,
        "output.turntable_frames": 0, "representation.init_count": 800, "representation.densify_every": 0,
        "camera.views": 2, "camera.resolution": 32})


@pytest.mark.work(config=stabledreamer_config, steps=100)
def test_stabledreamer_quick_converges_on_the_reference_prior(tmp_path):
    cfg = stabledreamer_config()
    events = []
    result = run_job(cfg.with_total_steps(100), tmp_path, emit=events.append)
    assert {e["stage_name"] for e in events if e["type"] == "progress"} == {"pixel", "latent"}
    assert result["metrics"]["mask_iou"] >= 0.8, result["metrics"]
