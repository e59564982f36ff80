"""The reference particle model's initialisation ("auto" on the reference prior, as in the quick VSD/ESD/ASD
presets): phi equals the prior at step 0, and the camera matters from the first optimiser step (ESD's entropy
term is not zero by construction)."""

import pytest
import torch

from backend import presets
from backend.config import ReferencePriorConfig, VSDConfig
from backend.core.cameras import orbit_cameras
from backend.methods.esd import ESD
from backend.methods.vsd import VSD, camera_init
from backend.priors.base import camera_vectors, noise_to_level
from backend.priors.reference.prior import ReferencePrior

PROMPT, NEG = "a duck", "a car"


@pytest.fixture(scope="module")
def setup():
    p = ReferencePrior(ReferencePriorConfig(view_conditioning="none"))
    p.prepare(PROMPT, NEG)
    cams = orbit_cameras(torch.tensor([15.0, 15.0]), torch.tensor([0.0, 120.0]), 2.0, 40.0, 64)
    z = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return p, cams, z, p.condition(PROMPT, NEG, cams)


def _camera_effect(method, setup) -> tuple[float, float]:
    """(|phi - prior plain| at step 0, |phi(camera) - phi(null camera)| after one particle step)."""
    p, cams, z, cond = setup
    cam = camera_vectors(cams)
    t = torch.tensor([300, 600])
    x = noise_to_level(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(1)), t, p.alphas_cumprod)
    with torch.no_grad():
        at_init = float((method.phi.predict(x, t, cond, cam) - p.branch_eps(x, t, cond, "plain")).abs().max())
    method.train_particle(z, cond, cam)
    with torch.no_grad():
        diff = method.phi.predict(x, t, cond, cam) - method.phi.predict(x, t, cond, torch.zeros_like(cam))
    return at_init, float(diff.abs().max())


@pytest.mark.parametrize("preset", ["prolificdreamer-quick", "esd-quick", "asd-quick"])
def test_quick_particle_presets_get_the_default_camera_init(preset, setup):
    choice = presets.get(preset).stages[0].method.camera_init
    assert camera_init(choice, setup[0]) == "default"  # "auto" on the reference prior


def test_camera_matters_after_the_first_steps_with_the_default_init(setup):
    p = setup[0]
    cfg = presets.get("esd-quick").stages[0].method
    torch.manual_seed(0)
    at_init, effect = _camera_effect(ESD(cfg, p, 100, torch.Generator().manual_seed(2)), setup)
    assert at_init == 0.0  # the zero output layer: phi is the prior's plain prediction
    assert effect > 1e-4
    torch.manual_seed(0)
    at_init, effect = _camera_effect(VSD(VSDConfig(camera_init="zero", camera_dropout=0.0), p, 100,
                                         torch.Generator().manual_seed(2)), setup)
    assert at_init == 0.0 and effect == 0.0  # zero camera output layer: identical after the first step
