"""ISM: the interval target, its delta_T = 0 limit, the disparity image, and convergence on the reference prior."""

import dataclasses

import pytest
import torch

from backend import presets
from backend.config import ISMConfig, ReferencePriorConfig, apply_overrides
from backend.core.cameras import orbit_cameras
from backend.core.outputs import RenderOutput
from backend.engine.loop import run_job
from backend.methods.base import weighting
from backend.methods.ism import ISM, normalised_disparity
from backend.priors.base import tweedie_x0
from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY
from backend.priors.reference.prior import ReferencePrior


@pytest.fixture(scope="module")
def prior():
    return ReferencePrior(ReferencePriorConfig(view_conditioning="prompt"))


def cams2():
    return orbit_cameras([15.0, 30.0], [0.0, 120.0], REFERENCE_DISTANCE, REFERENCE_FOVY, 64)


def record_calls(prior, monkeypatch):
    calls = []
    real = prior.predict_eps

    def spy(x, t, cond, s=1.0):
        calls.append((x.clone(), t.clone(), cond, s))
        return real(x, t, cond, s)

    monkeypatch.setattr(prior, "predict_eps", spy)
    return calls, real


@pytest.mark.parametrize("delta", [0.0, 60.0])
def test_zero_interval_gives_the_pure_guidance_term(prior, monkeypatch, delta):
    """delta_T = 0: x_s = x_t and the target is the null prediction at x_t, which on the reference prior with
    negative "" is the unconditional branch, so g = lambda w(t) s (eps_c - eps_u) (classifier score
    distillation). With delta_T > 0 it is not."""
    cams = cams2()
    cond = prior.condition("a blue mug", "", cams)
    null = prior.condition("", "", cams, cond.background)
    cfg = ISMConfig(guidance_scale=3.0, delta_t=delta, t_min=0.3, t_max=0.6)
    ism = ISM(cfg, prior, 100, torch.Generator().manual_seed(1))
    z = (prior.references(cond, 0)[:1].repeat(2, 1, 1, 1) * 0.8).float()
    calls, real = record_calls(prior, monkeypatch)
    g, t, s = ism.gradient(z, cond, null, step=10)
    assert (t == t[0]).all(), "the views of a step share one t"
    assert torch.equal(s, (t - int(delta)).clamp_min(0))
    x_t, t_last, cond_last, scale = calls[-1]
    assert cond_last is cond and scale == 3.0 and torch.equal(t_last, t)
    eps_c, eps_u = real(x_t, t, cond, 1.0), real(x_t, t, cond, 0.0)
    w = weighting("inverse_sqrt_snr", prior.alphas_cumprod, t).view(-1, 1, 1, 1)
    pure = w * 3.0 * (eps_c - eps_u)
    if delta == 0:
        assert torch.allclose(g, pure, rtol=1e-5, atol=1e-5 * float(pure.abs().max()))
    else:
        assert (g - pure).abs().max() > 1e-2 * pure.abs().max()  # far above the delta_T = 0 tolerance


def test_inversion_path_uses_the_stride_then_fits_the_step_count(prior):
    ism = ISM(ISMConfig(inversion_stride=200, inversion_max_steps=5), prior, 10, torch.Generator())
    assert ism.inversion_path(0) == [0]
    assert ism.inversion_path(450) == [0, 200, 400, 450]
    ism = ISM(ISMConfig(inversion_stride=100, inversion_max_steps=3), prior, 10, torch.Generator())
    assert ism.inversion_path(450) == [0, 150, 300, 450]


def test_normalised_disparity():
    """Opaque pixels at depth 1.5 and 2.5 map to 1 and 0; empty pixels (T = 1) are far and clamp to 0."""
    cams = orbit_cameras([0.0], [0.0], 2.0, 40.0, 4)
    alpha = torch.zeros(1, 4, 4, 1)
    alpha[0, :2] = 1.0
    depth = torch.zeros(1, 4, 4, 1)
    depth[0, 0], depth[0, 1] = 1.5, 2.5
    out = RenderOutput(rgb=torch.zeros(1, 4, 4, 3), alpha=alpha, depth=depth)
    d = normalised_disparity(out, cams)
    assert torch.allclose(d[0, 0], torch.ones(4, 1)) and torch.allclose(d[0, 1], torch.zeros(4, 1), atol=1e-6)
    assert torch.equal(d[0, 2:], torch.zeros(2, 4, 1))


def test_depth_guidance_step_sends_gradients_to_depth_and_alpha(prior):
    cams = cams2()
    cond = prior.condition("a blue mug", "", cams)
    rgb = torch.full((2, 64, 64, 3), 0.5, requires_grad=True)
    alpha = torch.full((2, 64, 64, 1), 0.95)
    alpha[:, :, :20] = 0.0
    alpha.requires_grad_(True)
    depth = (2.0 + 0.1 * torch.rand(2, 64, 64, 1)).requires_grad_(True)
    cfg = dataclasses.replace(ISMConfig(), depth_prob=1.0, flip_prob=1.0, tv_disparity=0.0)
    ism = ISM(cfg, prior, 10, torch.Generator().manual_seed(0))
    terms = ism.losses(RenderOutput(rgb=rgb, alpha=alpha, depth=depth), cams, cond, 0)
    terms["ism"].backward()
    assert rgb.grad is None  # the step distilled the disparity image, not the colour
    assert depth.grad.abs().sum() > 0 and alpha.grad.abs().sum() > 0


def test_update_is_the_difference_of_two_denoised_images(prior, monkeypatch):
    """With w = sigma_t / alpha_t and x_t = alpha_t x0(x_s, e_s) + sigma_t e_s, the ISM gradient is exactly
    lambda (x0_null(x_s) - x0_guided(x_t)): the render z enters only through the inversion, so the update is
    anchored at the null model's reconstruction of z, not at z (SDS's is z - x0_guided). This is why ISM needs a
    prior whose unconditional branch can reconstruct any render (docs/RESULTS_INVERSION.md)."""
    cams = cams2()
    cond = prior.condition("a blue mug", "", cams)
    null = prior.condition("", "", cams, cond.background)
    ism = ISM(ISMConfig(guidance_scale=3.0, delta_t=80.0, t_min=0.3, t_max=0.6), prior, 100,
              torch.Generator().manual_seed(3))
    z = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    calls, _ = record_calls(prior, monkeypatch)
    g, t, s = ism.gradient(z, cond, null, step=0)
    x_s, s_call, null_call, _ = calls[-2]
    x_t, _, _, _ = calls[-1]
    assert null_call is null and torch.equal(s_call, s)
    abar = prior.alphas_cumprod
    real = ReferencePrior.predict_eps.__get__(prior)  # the unpatched method
    e_s = real(x_s, s, null, 1.0)
    eps_hat = real(x_t, t, cond, 3.0)
    expected = 0.1 * (tweedie_x0(x_s, e_s, s, abar) - tweedie_x0(x_t, eps_hat, t, abar))
    # ISMConfig's default weight is lambda = 0.1; the gradient returned here is before that weight.
    assert torch.allclose(0.1 * g, expected, atol=1e-4 * float(expected.abs().max()))


def test_inversion_reconstructs_the_render_only_on_the_smoothed_prior(monkeypatch):
    """ISM's target assumes the null model's reconstruction at x_s is the render. On the empirical reference
    prior (data_noise 0) it is a reference, far from a render that is not one; on the smoothed prior that
    luciddreamer-quick uses it stays near the render at the levels ISM inverts to."""
    errors = {}
    for tau in (0.0, 1.0):
        prior = ReferencePrior(ReferencePriorConfig(view_conditioning="prompt", data_noise=tau))
        cams = cams2()
        cond = prior.condition("a blue mug", "", cams)
        null = prior.condition("", "", cams, cond.background)
        ism = ISM(ISMConfig(guidance_scale=3.0, delta_t=200.0, t_min=0.35, t_max=0.35), prior, 10,
                  torch.Generator().manual_seed(0))
        z = (0.8 * torch.stack([prior.references(cond, v)[3] for v in range(2)]) + 0.2).float()  # washed out
        calls, real = record_calls(prior, monkeypatch)
        _, _, s = ism.gradient(z, cond, null, step=0)
        x_s = calls[-2][0]
        x0_s = tweedie_x0(x_s, real(x_s, s, null, 1.0), s, prior.alphas_cumprod)
        errors[tau] = float((x0_s - z).pow(2).mean())
        monkeypatch.undo()
    assert errors[1.0] < 0.25 * errors[0.0], errors


def luciddreamer_config():
    return apply_overrides(presets.get("luciddreamer-quick"), {
        "output.preview_every": 0, "output.snapshot_every": 0, "output.checkpoint_every": 0,
        "output.turntable_frames": 0, "representation.init_count": 800, "representation.densify_every": 0,
        "camera.views": 2, "camera.resolution": 32, "random_background_prob": 0.5})


@pytest.mark.work(config=luciddreamer_config, steps=160)
def test_luciddreamer_quick_converges_on_the_reference_prior(tmp_path):
    cfg = luciddreamer_config()
    result = run_job(cfg.with_total_steps(160), tmp_path)
    assert result["metrics"]["mask_iou"] >= 0.8, result["metrics"]
