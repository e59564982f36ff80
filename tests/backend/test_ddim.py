"""The DDIM helper on the Prior protocol: grids, single moves, and inversion followed by sampling."""

import pytest
import torch

from backend.config import ReferencePriorConfig
from backend.core.cameras import orbit_cameras
from backend.priors.ddim import (
    abar_at,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddim_walk,
    eta_sigma,
    stack_paths,
)
from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY
from backend.priors.reference.prior import ReferencePrior


def front_view(prior, neighbours=1):
    prior.cfg.camera_neighbours = neighbours
    cams = orbit_cameras([15.0], [0.0], REFERENCE_DISTANCE, REFERENCE_FOVY, 64)
    return prior.condition("a blue mug", "", cams)


@pytest.fixture(scope="module")
def prior():
    return ReferencePrior(ReferencePriorConfig(view_conditioning="camera", camera_neighbours=1))


def test_grids():
    assert ddim_timesteps(0, 980, stride=200) == [0, 200, 400, 600, 800, 980]
    assert ddim_timesteps(980, 0, stride=200) == [980, 780, 580, 380, 180, 0]
    assert ddim_timesteps(0, 999, num_steps=4) == [0, 250, 500, 749, 999]
    assert ddim_timesteps(5, 8, num_steps=10) == [5, 6, 7, 8]  # never more steps than levels
    assert ddim_timesteps(7, 7, stride=3) == [7]
    with pytest.raises(ValueError, match="exactly one"):
        ddim_timesteps(0, 10)
    with pytest.raises(ValueError, match="stride"):
        ddim_timesteps(0, 10, stride=0)


def test_step_is_the_ddim_identity_and_negative_levels_use_the_boundary_alpha():
    abar = torch.linspace(0.999, 0.01, 1000)
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a, b = abar[100], abar[400]
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    assert torch.allclose(ddim_step(x, eps, 100, 400, abar), b.sqrt() * x0 + (1 - b).sqrt() * eps, atol=1e-6)
    assert torch.allclose(ddim_step(x, eps, 250, 250, abar), x, atol=1e-6)
    assert abar_at(abar, -99) == abar[0]
    assert torch.allclose(ddim_step(x, eps, -99, 400, abar), ddim_step(x, eps, 0, 400, abar))
    # Per-view levels.
    t_from, t_to = torch.tensor([100, 300]), torch.tensor([400, 300])
    out = ddim_step(x, eps, t_from, t_to, abar)
    assert torch.allclose(out[0], ddim_step(x[:1], eps[:1], 100, 400, abar)[0], atol=1e-6)
    assert torch.allclose(out[1], x[1], atol=1e-5)


def test_eta_sigma_is_ddims_sigma():
    abar = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    lo, hi = abar[101], abar[201]
    expected = ((1 - lo) / (1 - hi) * (1 - hi / lo)).sqrt()
    assert float(eta_sigma(abar, 101, 201)) == pytest.approx(float(expected))
    assert float(eta_sigma(abar, 201, 101)) == pytest.approx(float(expected))
    assert float(eta_sigma(abar, 50, 50)) == 0.0


def test_stack_paths_pads_with_the_last_level():
    levels = stack_paths([[0, 200, 300], [0, 150]])
    assert [lv.tolist() for lv in levels] == [[0, 0], [200, 150], [300, 150]]


def test_inversion_then_sampling_returns_the_start_exactly_with_one_reference(prior):
    """With one reference x_r the exact denoiser is x0_hat = x_r at every level, so the probability-flow ODE is
    x_t = alpha_t x_r + sigma_t e with e constant: every DDIM move is exact, whatever the grid, and inversion
    followed by sampling over the same levels is the identity up to rounding."""
    cond = front_view(prior, 1)
    ref = prior.references(cond, 0)  # [1, 3, 64, 64]
    start = ref + 0.3 * torch.randn_like(ref)  # any start point: a render that is not the reference
    start = start.float()
    up = ddim_invert(prior, start, cond, 0, 900, num_steps=10)
    # The noise component is conserved: x_900 = alpha x_r + sigma (start - alpha_0 x_r) / sigma_0.
    a0, a9 = prior.alphas_cumprod[0].double(), prior.alphas_cumprod[900].double()
    e = (start.double() - a0.sqrt() * ref) / (1 - a0).sqrt()
    assert torch.allclose(up.double(), a9.sqrt() * ref + (1 - a9).sqrt() * e, atol=1e-4)
    back = ddim_sample(prior, up, cond, 900, 0, num_steps=10)
    assert (back - start).abs().max() < 1e-4


def test_inversion_then_sampling_with_several_references_is_close_with_a_fine_grid(prior):
    """With several references x0_hat changes along the path, so DDIM is a first-order ODE solver and the round
    trip is exact only in the limit of small steps. Starting from a reference (where the posterior is sharp) and
    inverting to a moderate level with a fine grid, the round trip error stays small; it shrinks with the step."""
    cond = front_view(prior, 4)
    start = prior.references(cond, 0)[1:2].float()  # one of the 4 neighbouring references
    errors = []
    for n in (5, 50):
        up = ddim_invert(prior, start, cond, 0, 400, num_steps=n)
        back = ddim_sample(prior, up, cond, 400, 0, num_steps=n)
        errors.append(float((back - start).pow(2).mean().sqrt()))
    assert errors[1] < 0.02, errors
    assert errors[1] <= errors[0] + 1e-6, errors


def test_sampling_from_noise_lands_on_a_reference(prior):
    cond = front_view(prior, 4)
    refs = prior.references(cond, 0).float()  # [4, 3, 64, 64]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    out = ddim_sample(prior, x, cond, 999, 0, num_steps=50)
    dist = (refs - out).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert float(dist.min()) < 0.05, dist


def test_walk_branches_and_eta_noise(prior):
    cond = prior.condition("a blue mug", "", orbit_cameras([15.0], [0.0], REFERENCE_DISTANCE, REFERENCE_FOVY, 64))
    x = prior.references(cond, 0)[:1].float()
    path = [1, 101, 201]
    uncond, _ = ddim_walk(prior, x, cond, path, guidance_scale=0.0)
    condl, eps = ddim_walk(prior, x, cond, path, guidance_scale=1.0)
    assert eps is not None and not torch.allclose(uncond, condl)  # the branches differ
    g = torch.Generator().manual_seed(0)
    noisy, _ = ddim_walk(prior, x, cond, path, guidance_scale=1.0, eta=0.3, generator=g)
    assert not torch.allclose(noisy, condl)
    same, _ = ddim_walk(prior, x, cond, path, guidance_scale=1.0, eta=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, same)  # reproducible from the generator
    with pytest.raises(ValueError, match=r"0\.\.999"):
        ddim_walk(prior, x, cond, [-99, 1])  # the reference prior has no level for a negative timestep
    with pytest.raises(ValueError, match="goes up"):
        ddim_invert(prior, x, cond, 200, 100, stride=10)
