"""The adversarial term: the discriminator's size, an image bank sampled through the Prior protocol and
cached, generator gradients that reach the render and never the discriminator, and checkpointable state."""

import copy
import time

import torch

from backend import presets
from backend.config import AdversarialConfig, apply_overrides
from backend.core.cameras import orbit_cameras
from backend.core.outputs import RenderOutput
from backend.methods.adversarial import (
    PatchDiscriminator,
    WithAdversarial,
    bank_dir,
    load_or_sample_bank,
)
from backend.methods.sds import SDS
from backend.priors.reference.cache import load_references
from backend.priors.reference.prior import ReferencePrior


def test_patchgan_has_about_2_8m_parameters_and_patch_outputs():
    d = PatchDiscriminator()
    n = sum(p.numel() for p in d.parameters())
    assert 2.6e6 < n < 3.0e6
    assert d(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def job_and_stage(size=8):
    job = presets.get("real3d-quick")
    job = apply_overrides(job, {"adversarial.bank_size": size, "adversarial.bank_steps": 8,
                                "adversarial.bank_batch": 4})
    return job, job.stages[0]


def test_bank_is_sampled_from_the_prior_and_cached():
    job, stage = job_and_stage()
    prior = ReferencePrior(stage.prior)
    prior.prepare(job.prompt, job.negative_prompt)
    for f in bank_dir().glob("*.npz") if bank_dir().exists() else []:
        f.unlink()
    bank = load_or_sample_bank(prior, job, stage, stage.adversarial)
    assert bank.shape == (8, 64, 64, 3) and bank.min() >= 0 and bank.max() <= 1
    files = list(bank_dir().glob("*.npz"))
    assert len(files) == 1
    # DDIM from noise with the exact denoiser lands on the prompt's references: each bank image is close to
    # some reference view of a blue mug (on white), far closer than to any view of another object.
    mugs = load_references("mug", "blue").composited()
    ducks = load_references("duck", None).composited()
    d_mug = ((bank[:, None] - mugs[None]) ** 2).mean((2, 3, 4)).min(1).values
    d_duck = ((bank[:, None] - ducks[None]) ** 2).mean((2, 3, 4)).min(1).values
    assert (d_mug < 0.02).all() and (d_mug < 0.3 * d_duck).all(), (d_mug, d_duck)
    mtime = files[0].stat().st_mtime_ns
    t0 = time.perf_counter()
    again = load_or_sample_bank(prior, job, stage, stage.adversarial)
    assert time.perf_counter() - t0 < 2.0 and files[0].stat().st_mtime_ns == mtime
    assert torch.equal(again, bank)


def test_generator_gradient_reaches_the_render_but_not_the_discriminator():
    job, stage = job_and_stage()
    prior = ReferencePrior(stage.prior)
    prior.prepare(job.prompt, job.negative_prompt)
    gen = torch.Generator().manual_seed(0)
    method = WithAdversarial(SDS(stage.method, prior, 10, gen), stage.adversarial, prior, job, stage, gen)
    assert method.parameters() == []
    cams = orbit_cameras([15.0, 15.0], [0.0, 90.0], 2.0, 40.0, 64)
    rgb = torch.rand(2, 64, 64, 3, requires_grad=True)
    out = RenderOutput(rgb, torch.ones(2, 64, 64, 1))
    cond = prior.condition(job.prompt, "", cams, torch.ones(2, 3))
    before = copy.deepcopy(method.disc.state_dict())
    terms = method.losses(out, cams, cond, 0)
    assert set(terms) == {"sds", "adversarial"}
    changed = any(not torch.equal(before[k], v) for k, v in method.disc.state_dict().items())
    assert changed  # the discriminator took its own step
    method.disc.zero_grad(set_to_none=True)
    terms["adversarial"].backward()
    assert rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.disc.parameters())
    state = method.state_dict()
    other = WithAdversarial(SDS(stage.method, prior, 10, gen), stage.adversarial, prior, job, stage, gen)
    other.load_state_dict(state)
    for k, v in method.disc.state_dict().items():
        assert torch.equal(other.disc.state_dict()[k], v)
    assert torch.equal(other.gen.get_state(), method.gen.get_state())


def test_hinge_loss_and_r1_run():
    job, stage = job_and_stage()
    cfg = AdversarialConfig(**{**vars(stage.adversarial), "loss": "hinge", "r1_gamma": 1.0, "r1_every": 1})
    prior = ReferencePrior(stage.prior)
    prior.prepare(job.prompt, job.negative_prompt)
    gen = torch.Generator().manual_seed(0)
    method = WithAdversarial(SDS(stage.method, prior, 10, gen), cfg, prior, job, stage, gen)
    d_loss = method.discriminator_step(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert torch.isfinite(torch.tensor(d_loss))
    g = method.generator_loss(torch.rand(2, 64, 64, 3, requires_grad=True))
    assert g.requires_grad
