"""The positional (interpolated) view embedding: the weights of docs/METHODS.md §1.5, and the reference prior's
mixture of bucket reference sets that realises it."""

import dataclasses

import pytest
import torch

from backend.config import ReferencePriorConfig
from backend.core.cameras import orbit_cameras
from backend.priors.prompting import interpolation_weights
from backend.priors.reference.prior import ReferencePrior


def test_interpolation_weights_follow_the_formula():
    w = interpolation_weights(torch.tensor([10.0, 10.0, 10.0, 10.0, 70.0]),
                              torch.tensor([0.0, 45.0, -135.0, 180.0, 30.0]))
    assert w[0] == {"front": 1.0}
    assert w[1] == pytest.approx({"front": 0.5, "side": 0.5})
    assert w[2] == pytest.approx({"side": 0.5, "back": 0.5})
    assert w[3] == {"back": 1.0}
    assert w[4] == {"overhead": 1.0}


def test_reference_prior_blends_bucket_sets_with_the_interpolation_weights():
    cfg = dataclasses.replace(ReferencePriorConfig(), view_embedding="interpolated")
    prior = ReferencePrior(cfg)
    prior.prepare("a mug", "")
    angles = [0.0, 22.5, 45.0, 67.5]
    cams = orbit_cameras([15.0] * 4, angles, 2.0, 40.0, 64)
    cond = prior.condition("a mug", "", cams, torch.ones(4, 3))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).expand(4, -1, -1, -1)
    t = torch.full((4,), 900)
    post = prior.posterior_weights(x, t, cond)
    shares = []
    for rows, w in post:
        _, az = prior.bank_angles(rows)
        shares.append(float(w[az.abs() < 45].sum()))
    # The same noisy image is read as more "front" the nearer the camera is to the front.
    assert shares[0] == pytest.approx(1.0) and shares[0] > shares[1] > shares[2] > shares[3] > 0
    # At azimuth 0 the blend is the front bucket alone: the same posterior as the bucket embedding.
    plain = ReferencePrior(ReferencePriorConfig())
    plain.prepare("a mug", "")
    rows0, w0 = plain.posterior_weights(x[:1], t[:1], plain.condition("a mug", "", cams[0], torch.ones(1, 3)))[0]
    assert torch.equal(rows0, post[0][0]) and torch.allclose(w0, post[0][1])
    assert post[1][0].numel() > rows0.numel()  # 22.5 degrees blends front and side references
