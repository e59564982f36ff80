"""The reference prior's text-like options: the marginal unconditional branch, the front bias, Perp-Neg."""

import pytest
import torch

from backend.config import ReferencePriorConfig
from backend.core.cameras import orbit_cameras
from backend.priors.base import noise_to_level
from backend.priors.prompting import perp_neg_combine
from backend.priors.reference.cache import NUM_REFERENCES
from backend.priors.reference.evaluate import mesh_render_fn
from backend.priors.reference.library import OBJECTS, build
from backend.priors.reference.prior import ReferencePrior

PROMPT = "a duck"


def _prior(**kw) -> ReferencePrior:
    p = ReferencePrior(ReferencePriorConfig(**kw))
    p.prepare(PROMPT, "")
    return p


@pytest.fixture(scope="module")
def back_view():
    """The duck seen from behind (elevation 15, azimuth 180), its render in the prior's space [1, 3, 64, 64]."""
    cams = orbit_cameras(torch.tensor([15.0]), torch.tensor([180.0]), 2.0, 40.0, 64)
    rgb, _ = mesh_render_fn(build("duck"))(cams, torch.ones(1, 3))
    return cams, rgb


def _front_mass(p: ReferencePrior, cams, rgb, t: int, branch: str = "cond") -> float:
    """Posterior mass on front references (|azimuth| <= 45) of a noised render."""
    cond = p.condition(PROMPT, "", cams)
    z = p.encode(rgb)
    x = noise_to_level(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(0)), torch.tensor([t]),
                       p.alphas_cumprod)
    [(rows, w)] = p.posterior_weights(x, torch.tensor([t]), cond, branch)
    _, az = p.bank_angles(rows)
    return float(w[az.abs() <= 45].sum())


def test_marginal_unconditional_branch_is_every_object_from_every_view(back_view):
    cams, _ = back_view
    view = _prior().condition(PROMPT, "", cams)
    marginal = _prior(unconditional="marginal").condition(PROMPT, "", cams)
    assert torch.equal(view.data["cond_index"][0], marginal.data["cond_index"][0])  # the prompt's side is the same
    n_back = view.data["cond_index"][0].numel()
    assert view.data["uncond_index"][0].numel() == n_back * len(OBJECTS)  # "view": the back of every object
    assert marginal.data["uncond_index"][0].numel() == NUM_REFERENCES * len(OBJECTS)  # every view of every object
    # "" means the unconditional branch, in both modes
    null = _prior(unconditional="marginal").condition("", "", cams)
    assert torch.equal(null.data["cond_index"][0], marginal.data["uncond_index"][0])


def test_front_bias_reads_a_noised_back_view_as_a_front(back_view):
    cams, rgb = back_view
    unbiased = _front_mass(_prior(view_prompts=False), cams, rgb, 700)
    biased = _front_mass(_prior(view_prompts=False, front_bias=30), cams, rgb, 700)
    assert unbiased < 0.05 and biased > 0.95
    # at low noise the render itself wins again
    assert _front_mass(_prior(view_prompts=False, front_bias=30), cams, rgb, 100) < 0.05


def test_a_named_view_keeps_its_bucket_under_front_bias(back_view):
    cams, rgb = back_view
    p = _prior(front_bias=30, unconditional="marginal")
    assert _front_mass(p, cams, rgb, 700) == 0.0  # "a duck, back view" has no front references
    assert _front_mass(p, cams, rgb, 700, branch="uncond") > 0.95  # "" is front-biased


def test_perp_neg_combines_the_interpolated_positive_and_the_two_negative_buckets():
    cams = orbit_cameras(torch.tensor([15.0, 15.0]), torch.tensor([150.0, 30.0]), 2.0, 40.0, 64)
    p = _prior(perp_neg=True, unconditional="marginal", front_bias=5)
    cond = p.condition(PROMPT, "", cams)
    # view at azimuth 150: side + back positive, negatives side and front; at 30: front + side, negatives front, side
    for v, (neg0, neg1) in enumerate([((45, 135), (0, 45)), ((0, 45), (45, 135))]):
        for k, (lo, hi) in enumerate((neg0, neg1)):
            _, az = p.bank_angles(cond.data[f"neg{k}_index"][v])
            assert bool(((az.abs() >= lo) & (az.abs() <= hi)).all()), (v, k)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([600, 400])
    eps = p.predict_eps(x, t, cond, 7.5)
    parts = {b: p.branch_eps(x, t, cond, b).double() for b in ("cond", "uncond", "neg0", "neg1")}
    want = perp_neg_combine(parts["uncond"], parts["cond"], [parts["neg0"], parts["neg1"]],
                            cond.data["perp_weights"], 7.5)
    assert torch.allclose(eps.double(), want, atol=1e-4)
    plain = _prior(view_embedding="interpolated", unconditional="marginal", front_bias=5)
    assert (eps - plain.predict_eps(x, t, plain.condition(PROMPT, "", cams), 7.5)).abs().max() > 1e-3


def test_bad_combinations_name_the_field():
    with pytest.raises(ValueError, match=r"prior\.perp_neg needs prior\.view_conditioning=prompt"):
        ReferencePrior(ReferencePriorConfig(perp_neg=True, view_conditioning="none"))
    with pytest.raises(ValueError, match=r"prior\.unconditional"):
        ReferencePrior(ReferencePriorConfig(unconditional="text"))
