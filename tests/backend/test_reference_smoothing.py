"""The reference prior's `data_noise` smoothing: the exact denoiser of references blurred by N(0, tau^2 I)."""

import pytest
import torch

from backend.config import ReferencePriorConfig
from backend.core.cameras import orbit_cameras
from backend.priors.base import tweedie_x0
from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY
from backend.priors.reference.prior import ReferencePrior


def front(prior):
    cams = orbit_cameras([15.0], [10.0], REFERENCE_DISTANCE, REFERENCE_FOVY, 64)
    return prior.condition("a blue mug", "", cams)


def brute_force_eps(refs, x, t, abar, tau):
    """eps_hat = (s / v)(x - a sum_i w_i x_i), w = softmax(-|x - a x_i|^2 / (2 v)), v = a^2 tau^2 + s^2."""
    a, s = abar[t].double().sqrt(), (1 - abar[t].double()).sqrt()
    v = a * a * tau * tau + s * s
    d2 = ((x.double() - a * refs.double()) ** 2).sum((1, 2, 3))
    w = torch.softmax(-d2 / (2 * v), dim=0)
    m = (w[:, None, None, None] * refs.double()).sum(0, keepdim=True)
    return (s / v) * (x.double() - a * m)


@pytest.mark.parametrize(("tau", "t"), [(0.0, 150), (0.3, 0), (1.0, 150), (1.0, 600)])
def test_smoothed_denoiser_matches_the_gaussian_mixture_posterior(tau, t):
    prior = ReferencePrior(ReferencePriorConfig(view_conditioning="camera", camera_neighbours=4, data_noise=tau))
    cond = front(prior)
    refs = prior.references(cond, 0)  # [4, 3, 64, 64]
    gen = torch.Generator().manual_seed(t)
    x = (0.7 * refs[2:3] + 0.3 * refs[0:1] + 0.2 * torch.randn(1, 3, 64, 64, generator=gen, dtype=torch.float64))
    tt = torch.tensor([t])
    got = prior.predict_eps(x, tt, cond, 1.0)
    expected = brute_force_eps(refs, x, t, prior.alphas_cumprod, tau)
    assert torch.allclose(got, expected, atol=1e-6 * float(expected.abs().max()) + 1e-9)


def test_zero_smoothing_is_the_empirical_prior_bit_for_bit():
    plain = ReferencePrior(ReferencePriorConfig(view_conditioning="prompt"))
    zero = ReferencePrior(ReferencePriorConfig(view_conditioning="prompt", data_noise=0.0))
    cond_p, cond_z = front(plain), front(zero)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for t in (0, 300, 900):
        tt = torch.tensor([t])
        assert torch.equal(plain.predict_eps(x, tt, cond_p, 3.0), zero.predict_eps(x, tt, cond_z, 3.0))


def test_smoothing_keeps_a_render_near_the_references_at_low_noise():
    """What ISM needs from its prior: below noise ~tau the denoiser returns (almost) the image it is given,
    where the empirical prior snaps it to the nearest reference."""
    results = {}
    for tau in (0.0, 1.0):
        prior = ReferencePrior(ReferencePriorConfig(view_conditioning="camera", camera_neighbours=4, data_noise=tau))
        cond = front(prior)
        refs = prior.references(cond, 0).float()
        render = 0.8 * refs[1:2] + 0.2  # a washed-out render of one reference
        tt = torch.tensor([50])
        abar = prior.alphas_cumprod
        x_t = abar[50].sqrt() * render  # noise-free point at level 50
        x0 = tweedie_x0(x_t, prior.predict_eps(x_t, tt, cond, 1.0), tt, abar)
        results[tau] = (float((x0 - render).pow(2).mean()), float((x0 - refs[1:2]).pow(2).mean()))
    assert results[0.0][1] < 1e-6 < results[0.0][0]  # snapped onto the reference
    assert results[1.0][0] < 0.1 * results[0.0][0]  # the render is kept
