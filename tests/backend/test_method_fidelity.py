"""The methods on diffusers priors do what their reference implementations do (tiny random SD models):
ISM's null condition is the true empty prompt, ASD's Perp-Neg discriminator target projects raw predictions,
ESD's entropy term acts from the first step, and a representation carried into the next stage keeps its
optimiser state."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers_fixtures import install_known_models, tiny_model, tiny_run_overrides

from backend.config import ASDConfig, ESDConfig, ISMConfig, StableDiffusionPriorConfig, VSDConfig
from backend.core.cameras import orbit_cameras
from backend.core.outputs import RenderOutput
from backend.methods.asd import ASD
from backend.methods.esd import ESD
from backend.methods.ism import ISM
from backend.methods.vsd import VSD
from backend.priors.base import camera_vectors
from backend.priors.diffusers_base import _EMBEDDINGS
from backend.priors.prompting import perpendicular
from backend.priors.stable_diffusion import StableDiffusionPrior

PROMPT = "a blue mug"


def _sd(**kw) -> StableDiffusionPrior:
    p = StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tiny_model("tiny-sd")), image_size=32, **kw), "cpu")
    p.prepare(PROMPT, "ugly")
    return p


def _cams(n: int = 4, res: int = 32):
    """Views in every bucket: front, side, back, overhead."""
    return orbit_cameras(torch.tensor([10.0, 20.0, 0.0, 75.0][:n]), torch.tensor([0.0, 100.0, 180.0, -60.0][:n]),
                         2.0, 40.0, res)


def _empty_embedding(p: StableDiffusionPrior) -> torch.Tensor:
    return _EMBEDDINGS[(p.model_key, "")]


@pytest.mark.parametrize("perp_neg", [False, True])
def test_ism_null_condition_is_the_empty_prompt_for_every_view(perp_neg):
    p = _sd(view_prompts=True, perp_neg=perp_neg)
    cams = _cams()
    null = p.condition("", "", cams)
    empty = _empty_embedding(p)
    assert null.views == [""] * 4
    for i in range(4):
        assert torch.equal(null.data["cond"][i], empty), f"view {i} is not the empty prompt's embedding"
    # the unconditional prediction at scale 1 is eps(x, t, "") exactly, Perp-Neg or not
    x, t = torch.randn(4, 4, 16, 16), torch.tensor([100, 300, 500, 900])
    expected = p._eps(x, t, torch.stack([empty] * 4))
    assert torch.equal(p.predict_eps(x, t, null, 1.0), expected)
    # the job's own condition still carries the view prompts
    assert p.condition(PROMPT, "ugly", cams).views == ["front", "side", "back", "overhead"]


def test_ism_inverts_and_targets_with_the_empty_prompt(monkeypatch):
    p = _sd(view_prompts=True)
    cams = _cams()
    ism = ISM(ISMConfig(inversion_max_steps=2, depth_prob=0.0, flip_prob=0.0), p, 10,
              torch.Generator().manual_seed(0))
    seen = []
    real = p.predict_eps

    def spy(x, t, cond, scale=1.0):
        seen.append((cond, float(scale)))
        return real(x, t, cond, scale)

    monkeypatch.setattr(p, "predict_eps", spy)
    rgb = torch.rand(4, 32, 32, 3, requires_grad=True)
    out = RenderOutput(rgb=rgb, alpha=torch.ones(4, 32, 32, 1), depth=torch.full((4, 32, 32, 1), 2.0))
    ism.losses(out, cams, p.condition(PROMPT, "ugly", cams), 0)
    unguided = [c for c, s in seen if s == 1.0]
    assert len(unguided) >= 2  # the inversion's steps and e_s
    empty = _empty_embedding(p)
    for cond in unguided:
        assert all(torch.equal(cond.data["cond"][i], empty) for i in range(4))


def test_asd_perp_neg_discriminator_target_projects_raw_predictions(monkeypatch):
    p = _sd(perp_neg=True)
    cams = _cams(3)
    cond = p.condition(PROMPT, "ugly", cams)
    asd = ASD(ASDConfig(), p, 10, torch.Generator().manual_seed(0))
    captured = {}
    real_inputs, real_target = asd.particle_inputs, asd.particle_target

    def inputs(z_bar, camera):
        captured["inputs"] = real_inputs(z_bar, camera)
        return captured["inputs"]

    def target(eps, z_bar, tau):
        captured.setdefault("eps_pre", eps.clone())  # the first call builds the prior's target
        return real_target(eps, z_bar, tau)

    monkeypatch.setattr(asd, "particle_inputs", inputs)
    monkeypatch.setattr(asd, "particle_target", target)
    z = torch.randn(3, 4, 16, 16)
    asd.particle_loss(z, cond, camera_vectors(cams))
    tau, _, x_tau, _ = captured["inputs"]
    d = cond.data
    e_pos = p._eps(x_tau, tau, d["perp_pos"])
    negs = [p._eps(x_tau, tau, d["perp_neg"][i]) for i in range(2)]
    w = d["perp_weights"]
    official = e_pos + sum(w[:, i].view(-1, 1, 1, 1) * perpendicular(negs[i], e_pos) for i in range(2))
    assert w.abs().sum() > 0  # the side and back views have non-zero negative weights
    torch.testing.assert_close(captured["eps_pre"], official, rtol=1e-5, atol=1e-5)
    # ...which is not the guided form at scale 1 (perpendiculars of differences to the unconditional branch)
    assert not torch.allclose(official, p.predict_eps(x_tau, tau, cond, 1.0), atol=1e-4)


def test_esd_update_differs_from_vsd_at_the_first_step():
    p = _sd()
    cams = _cams(2)
    cond = p.condition(PROMPT, "ugly", cams)
    camera = camera_vectors(cams)
    z = torch.randn(2, 4, 16, 16)
    grads = {}
    for name, cls, cfg in (("vsd", VSD, VSDConfig()), ("esd", ESD, ESDConfig())):
        assert cfg.camera_init == "auto"
        torch.manual_seed(0)  # the same LoRA and camera MLP draws for both
        m = cls(cfg, p, 10, torch.Generator().manual_seed(1))
        grads[name], _ = m.gradient(z, cond, camera, 0)
        if name == "esd":
            x, t = torch.randn(2, 4, 16, 16), torch.tensor([200, 700])
            e_null = m.phi.predict_eps(x, t, cond, torch.zeros_like(camera))
            e_cam = m.phi.predict_eps(x, t, cond, camera)
            assert not torch.allclose(e_null, e_cam), "the null camera and the camera give the same prediction"
    assert not torch.allclose(grads["esd"], grads["vsd"])
    # zero init is still available and then ESD's first update equals VSD's
    zero = {}
    for name, cls, cfg in (("vsd", VSD, VSDConfig(camera_init="zero")), ("esd", ESD, ESDConfig(camera_init="zero"))):
        torch.manual_seed(0)
        zero[name], _ = cls(cfg, p, 10, torch.Generator().manual_seed(1)).gradient(z, cond, camera, 0)
    torch.testing.assert_close(zero["esd"], zero["vsd"])


def test_a_carried_representation_keeps_its_optimiser_state(tmp_path, monkeypatch):
    from backend import presets
    from backend.config import apply_overrides
    from backend.engine import loop

    install_known_models(tmp_path / "hub")  # stabledreamer: DeepFloyd IF, then Stable Diffusion (tiny stand-ins)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = presets.get("stabledreamer")
    cfg = apply_overrides(cfg, tiny_run_overrides(cfg, steps=3))
    assert cfg.stages[0].representation.name == cfg.stages[1].representation.name == "gaussians"
    assert cfg.stages[0].prior.name != cfg.stages[1].prior.name
    stages = []
    real = loop._run_stage

    def run_stage(c, st, *args, **kw):
        stages.append(st)
        return real(c, st, *args, **kw)

    monkeypatch.setattr(loop, "_run_stage", run_stage)
    loop.run_job(cfg, tmp_path / "job", resume=False)
    first, second = stages
    assert second.rep is first.rep and second.optimizer is not first.optimizer
    state = second.optimizer.state[second.rep.xyz]
    assert int(state["step"]) == 6, "the second stage restarted Adam instead of continuing it"
    assert state["exp_avg"].abs().sum() > 0
    # the new stage's learning rates apply
    lrs = {g["name"]: g["initial_lr"] for g in second.optimizer.param_groups if "name" in g}
    assert lrs["xyz"] == cfg.stages[1].representation.position_lr


def test_carry_needs_the_same_optimiser_kind():
    from backend.engine.loop import carry_optimizer_state

    w = torch.nn.Parameter(torch.zeros(3))
    adam = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    adam.step()
    assert carry_optimizer_state(adam, torch.optim.Adam([w], lr=0.2), [w]) == 1
    assert carry_optimizer_state(adam, torch.optim.SGD([w], lr=0.2), [w]) == 0
    fresh = torch.optim.Adam([w], lr=0.2)
    carry_optimizer_state(adam, fresh, [w])
    assert fresh.state[w]["exp_avg"] is not adam.state[w]["exp_avg"]  # a copy, not shared
    assert dataclasses.is_dataclass(ASDConfig())
