"""JSD: its inversion grid, the two targets, the fixed reference bugs, and convergence on the reference prior."""

import dataclasses

import pytest
import torch

from backend import presets
from backend.config import JSDConfig, ReferencePriorConfig, apply_overrides
from backend.core.cameras import orbit_cameras
from backend.core.outputs import RenderOutput
from backend.engine.loop import run_job
from backend.methods.jsd import JSD
from backend.priors.base import tweedie_x0
from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY
from backend.priors.reference.prior import ReferencePrior


@pytest.fixture(scope="module")
def prior():
    return ReferencePrior(ReferencePriorConfig(view_conditioning="prompt"))


def setup(prior, views=2):
    cams = orbit_cameras([15.0] * views, [0.0, 150.0, -90.0][:views], REFERENCE_DISTANCE, REFERENCE_FOVY, 64)
    cond = prior.condition("a blue mug", "", cams)
    z = (0.7 * prior.references(cond, 0)[:1].repeat(views, 1, 1, 1)).float()
    return cams, cond, z


def test_inversion_grid(prior):
    jsd = JSD(JSDConfig(inversion_steps=10), prior, 100, torch.Generator())
    assert jsd.inversion_path(450, 470) == [1, 101, 201, 301, 401, 470]
    assert jsd.inversion_path(980, 999) == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901, 999]
    assert jsd.inversion_path(250, 250) == [1, 101, 201, 250]
    ref = JSD(JSDConfig(inversion_steps=10, reference_start=True), prior, 100, torch.Generator())
    assert ref.inversion_path(250, 300) == [-99, 1, 101, 201, 300]


def test_reference_start_reaches_the_prior_with_a_negative_timestep(prior):
    """The parity flag feeds timestep -99 to the model as the reference code does; the reference prior has no
    such level and says so, instead of silently wrapping the index."""
    _, cond, z = setup(prior, 1)
    jsd = JSD(JSDConfig(reference_start=True), prior, 100, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="-99"):
        jsd.targets(z, cond, 0)


def spy(prior, monkeypatch):
    calls = []
    real = prior.predict_eps

    def record(x, t, cond, s=1.0):
        out = real(x, t, cond, s)
        calls.append({"x": x.clone(), "t": t.clone(), "s": s, "eps": out.clone()})
        return out

    monkeypatch.setattr(prior, "predict_eps", record)
    return calls


@pytest.mark.parametrize("parity", [False, True])
def test_targets_follow_the_reference_computation(prior, monkeypatch, parity):
    _, cond, z = setup(prior, 2)
    cfg = JSDConfig(guidance_scale=3.0, inversion_guidance_scale=-3.0, inversion_steps=10, k=0.5,
                    reference_denoise_level=parity, t_sampling="linear", t_min=0.25, t_max=0.98)
    jsd = JSD(cfg, prior, 11, torch.Generator().manual_seed(4))
    calls = spy(prior, monkeypatch)
    hd, ld, t, t_hi = jsd.targets(z, cond, 5)
    assert (t == round(980 - 730 * 0.5)).all()
    n_inv = len(jsd.inversion_path(int(t[0]), int(t_hi[0]))) - 1
    assert len(calls) == n_inv + 2
    assert all(c["s"] == -3.0 for c in calls[:n_inv]) and calls[n_inv]["s"] == 3.0 and calls[-1]["s"] == 3.0
    level = t if parity else t_hi
    assert torch.equal(calls[n_inv]["t"], level)  # bug 4: denoised at the level the inversion reached
    assert torch.allclose(hd, tweedie_x0(calls[n_inv]["x"], calls[n_inv]["eps"], level, prior.alphas_cumprod))
    assert torch.equal(calls[-1]["t"], t)  # the minority target is re-noised to t
    assert torch.allclose(ld, tweedie_x0(calls[-1]["x"], calls[-1]["eps"], t, prior.alphas_cumprod))


def test_gradient_is_both_targets_and_the_minority_term_can_be_off(prior):
    _, cond, z = setup(prior, 2)
    cfg = JSDConfig(guidance_scale=3.0, inversion_guidance_scale=-3.0, k=0.5)
    gen = torch.Generator().manual_seed(2)
    jsd = JSD(cfg, prior, 10, gen)
    state = gen.get_state()
    hd, ld, _, _ = jsd.targets(z, cond, 3)
    gen.set_state(state)
    g = jsd.gradient(z, cond, 3)
    assert torch.allclose(g, (z - hd) + 0.5 * (z - ld), atol=1e-5)
    # Bug 1: k = 0, or a step before the warm-up, skips the term instead of crashing.
    for changes, step in (({"k": 0.0}, 3), ({"warmup": 0.5}, 2)):
        off = JSD(dataclasses.replace(cfg, **changes), prior, 10, torch.Generator().manual_seed(2))
        hd, ld, _, _ = off.targets(z, cond, step)
        assert ld is None
    late = JSD(dataclasses.replace(cfg, warmup=0.5), prior, 10, torch.Generator().manual_seed(2))
    assert late.targets(z, cond, 5)[1] is not None


def test_views_with_different_timesteps(prior):
    """Bug 2: batches of views work, even with a timestep per view (per-view grids padded with no-op moves)."""
    cams, cond, z = setup(prior, 3)
    cfg = JSDConfig(guidance_scale=3.0, inversion_guidance_scale=-3.0, t_sampling="random", shared_t=False,
                    t_min=0.2, t_max=0.9, inversion_jitter=0)
    jsd = JSD(cfg, prior, 10, torch.Generator().manual_seed(5))
    z = z.clone().requires_grad_(True)
    hd, ld, t, t_hi = jsd.targets(z, cond, 0)
    assert len(set(t.tolist())) > 1 and torch.equal(t, t_hi)
    assert hd.shape == z.shape and torch.isfinite(hd).all() and torch.isfinite(ld).all()
    rgb = ((z.detach() + 1) / 2).permute(0, 2, 3, 1).clamp(0, 1).requires_grad_(True)
    loss = jsd.losses(RenderOutput(rgb=rgb, alpha=torch.ones(3, 64, 64, 1)), cams, cond, 1)["jsd"]
    loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def jsd_config():
    return apply_overrides(presets.get("jsd-quick"), {
        "output.preview_every": 0, "output.snapshot_every": 0, "output.checkpoint_every": 0,
        "output.turntable_frames": 0, "representation.init_count": 800, "representation.densify_every": 0,
        "camera.views": 2, "camera.resolution": 32, "random_background_prob": 0.5})


@pytest.mark.work(config=jsd_config, steps=100)
def test_jsd_quick_converges_on_the_reference_prior(tmp_path):
    cfg = jsd_config()
    result = run_job(cfg.with_total_steps(100), tmp_path)
    assert result["metrics"]["mask_iou"] >= 0.8, result["metrics"]
