"""Particle models of VSD/ESD/ASD (docs/METHODS.md §2.2): LoRA + camera MLP on diffusers UNets, a residual network
on the reference prior; exact equality at initialisation, what their optimiser updates, camera dropout, ESD = VSD at
s_L = 1, v-prediction, single-model mode, checkpoints."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from diffusers_fixtures import tiny_model

from backend.config import ASDConfig, ESDConfig, ReferencePriorConfig, StableDiffusionPriorConfig, VSDConfig
from backend.core.cameras import orbit_cameras
from backend.core.outputs import RenderOutput
from backend.core.settings import ConfigError
from backend.methods.asd import ASD
from backend.methods.esd import ESD
from backend.methods.vsd import VSD
from backend.priors.base import Conditioning, ParticleOptions, camera_vectors, noise_to_level
from backend.priors.diffusers_base import LORA_TARGETS
from backend.priors.reference.prior import ReferencePrior
from backend.priors.stable_diffusion import StableDiffusionPrior

PROMPT = "a blue mug"
NEG = "a car"  # the reference prior's unconditional branch then needs one more object, not the whole library


def _sd(arch: str = "tiny-sd", **kw) -> StableDiffusionPrior:
    p = StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tiny_model(arch)), image_size=32, **kw), "cpu")
    p.prepare(PROMPT, "")
    return p


@pytest.fixture(scope="module")
def sd():
    return _sd()


@pytest.fixture(scope="module")
def ref():
    p = ReferencePrior(ReferencePriorConfig(view_conditioning="none"), "cpu")
    p.prepare(PROMPT, NEG)
    return p


def _cams(n: int = 2, res: int = 32):
    return orbit_cameras(torch.tensor([10.0, 25.0, 40.0, 0.0][:n]), torch.tensor([0.0, 120.0, -100.0, 180.0][:n]),
                         2.0, 40.0, res)


def _plain(cond: Conditioning) -> Conditioning:
    """The same condition with the view prompt replaced by the plain prompt (what phi reads)."""
    return Conditioning(cond.prompt, cond.negative, cond.views, {**cond.data, "cond": cond.data["plain"]})


@pytest.mark.parametrize("arch", ["tiny-sd", "tiny-sd-v"])
def test_lora_copy_equals_the_prior_at_initialisation(arch):
    p = _sd(arch)
    phi = p.trainable_copy(ParticleOptions())
    cams = _cams()
    cond = p.condition(PROMPT, "", cams)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([100, 800])
    for camera in (camera_vectors(cams), torch.zeros(2, 16)):
        assert torch.equal(phi.predict_eps(x, t, cond, camera), p.predict_eps(x, t, _plain(cond), 1.0))
    assert phi.prediction_type == p.prediction_type
    # the LoRA really is there: rank-4 A ~ N(0, 1/r^2), B = 0
    a = [q for n, q in phi.unet.named_parameters() if "lora_A" in n]
    b = [q for n, q in phi.unet.named_parameters() if "lora_B" in n]
    assert a and all(q.abs().sum() > 0 for q in a) and all(q.abs().sum() == 0 for q in b)
    assert a[0].shape[0] == 4


def test_residual_copy_equals_the_reference_prior_at_initialisation(ref):
    phi = ref.trainable_copy(ParticleOptions())
    cams = _cams(2, 64)
    cond = ref.condition(PROMPT, NEG, cams)
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([30, 600])
    expected = ref.branch_eps(x, t, cond, "plain")
    assert torch.equal(phi.predict_eps(x, t, cond, camera_vectors(cams)), expected)
    # with view conditioning "none" the plain branch is the conditional branch
    assert torch.allclose(expected, ref.predict_eps(x, t, cond, 1.0).float(), atol=1e-6)
    with pytest.raises(ValueError, match="particle_model"):
        ref.trainable_copy(ParticleOptions(model="sd21"))


def test_sd21_lora_and_camera_mlp_parameter_counts():
    """docs/METHODS.md §2.2: 829,952 LoRA parameters on SD 2.1's UNet and 1,661,440 in TimestepEmbedding(16, 1280);
    built on the meta device (shapes only, no memory)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import TimestepEmbedding
    from peft import LoraConfig

    from backend.priors.architectures import ARCHITECTURES

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCHITECTURES["sd21"][1]["unet"])
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
        mlp = TimestepEmbedding(16, unet.time_embedding.linear_2.out_features)
    assert sum(q.numel() for n, q in unet.named_parameters() if "lora_" in n) == 829_952
    assert sum(q.numel() for q in mlp.parameters()) == 1_661_440
    assert sum(1 for n, _ in unet.named_modules() if n.endswith(".attn1") or n.endswith(".attn2")) == 32


def test_fp16_base_keeps_fp16_outputs_and_fp32_lora_gradients():
    p = _sd(dtype="fp16")
    phi = p.trainable_copy(ParticleOptions(camera_init="default"))
    cond = p.condition(PROMPT, "", _cams())
    out = phi.unet(torch.randn(2, 4, 16, 16, dtype=torch.float16), torch.tensor([10, 500]),
                   encoder_hidden_states=cond.data["plain"], class_labels=torch.randn(2, 16)).sample
    assert out.dtype == torch.float16
    out.float().square().mean().backward()
    grads = [q.grad for q in phi.parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert all(q.dtype == torch.float16 for n, q in phi.unet.named_parameters() if "lora_" not in n
               and not n.startswith("class_embedding"))


def _render(views: int, res: int, channels_seed: int = 0) -> RenderOutput:
    g = torch.Generator().manual_seed(channels_seed)
    rgb = torch.rand(views, res, res, 3, generator=g).requires_grad_(True)
    return RenderOutput(rgb=rgb, alpha=torch.ones(views, res, res, 1))


def test_vsd_step_updates_only_the_particle_parameters_and_they_change(sd):
    prior_before = copy.deepcopy(sd.unet.state_dict())
    vsd = VSD(VSDConfig(guidance_scale=7.5), sd, 10, torch.Generator().manual_seed(0))
    frozen = {n: q.detach().clone() for n, q in vsd.phi.unet.named_parameters() if "lora_" not in n
              and not n.startswith("class_embedding")}
    trainable = [q.detach().clone() for q in vsd.phi.parameters()]
    opt_params = {id(q) for group in vsd.optimizer.param_groups for q in group["params"]}
    assert opt_params == {id(q) for q in vsd.phi.parameters()}
    cams = _cams()
    out = _render(2, 32)
    terms = vsd.losses(out, cams, sd.condition(PROMPT, "", cams), 0)
    terms["vsd"].backward()
    assert out.rgb.grad is not None and out.rgb.grad.abs().sum() > 0
    assert torch.isfinite(terms["lora"]) and not terms["lora"].requires_grad
    changed = [not torch.equal(a, q) for a, q in zip(trainable, vsd.phi.parameters(), strict=True)]
    assert all(changed[: len(vsd.phi.lora_parameters)])  # every LoRA matrix moved (B from zero)
    assert any(changed[len(vsd.phi.lora_parameters):])  # and the camera MLP
    assert all(torch.equal(frozen[n], q) for n, q in vsd.phi.unet.named_parameters() if n in frozen)
    assert all(torch.equal(prior_before[k], v) for k, v in sd.unet.state_dict().items())
    assert vsd.parameters() == []  # nothing of phi goes into the representation's optimiser


def test_camera_dropout_is_one_coin_per_step(ref):
    cams = _cams(4, 64)
    cam = camera_vectors(cams)
    z = torch.rand(4, 3, 64, 64) * 2 - 1
    for p_drop, lo, hi in ((0.0, 0, 0), (1.0, 300, 300), (0.1, 15, 50)):
        vsd = VSD(VSDConfig(camera_dropout=p_drop), ref, 10, torch.Generator().manual_seed(1))
        dropped = 0
        for _ in range(300):
            _, _, _, cam_in = vsd.particle_inputs(z, cam)
            whole = torch.equal(cam_in, torch.zeros_like(cam))
            assert whole or torch.equal(cam_in, cam)  # the whole batch or nothing: one coin per step
            dropped += whole
        assert lo <= dropped <= hi, (p_drop, dropped)


def test_dropped_camera_is_what_the_particle_model_trains_on(ref):
    """End to end through phi's loss: a dropped camera is the null camera, so the camera MLP's input layer gets no
    gradient (its input is zero); with the camera kept it does (phi perturbed so gradients reach its inner
    layers: at initialisation the zero output layers block them)."""
    cams = _cams(2, 64)
    z = torch.rand(2, 3, 64, 64) * 2 - 1
    cond = ref.condition(PROMPT, NEG, cams)
    for p_drop in (1.0, 0.0):
        vsd = _perturbed(VSD(VSDConfig(camera_dropout=p_drop), ref, 10, torch.Generator().manual_seed(4)))
        vsd.particle_loss(z, cond, camera_vectors(cams)).backward()
        assert vsd.last_camera_dropped == (p_drop == 1.0)
        grad = vsd.phi.net.camera_mlp[0].weight.grad
        assert grad is not None
        assert (grad.abs().max() == 0) == (p_drop == 1.0), (p_drop, grad.abs().max())


def _perturbed(method):
    """Make phi's camera matter (trained parameters are not zero), identically for every method built alike."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for q in method.phi.parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=g))
    return method


@pytest.mark.parametrize("which", ["reference", "sd"])
def test_esd_with_guidance_scale_lora_1_equals_vsd(which, ref, sd):
    prior = ref if which == "reference" else sd
    res = 64 if which == "reference" else 32
    cams = _cams(2, res)
    cond = prior.condition(PROMPT, NEG if prior is ref else "", cams)
    camera = camera_vectors(cams)
    z = prior.encode(_render(2, res).rgb.detach())

    def grad(cls, cfg):
        torch.manual_seed(0)
        m = _perturbed(cls(cfg, prior, 10, torch.Generator().manual_seed(3)))
        return m.gradient(z, cond, camera, 0)[0]

    g_vsd = grad(VSD, VSDConfig(guidance_scale=7.5))
    g_esd1 = grad(ESD, ESDConfig(guidance_scale=7.5, guidance_scale_lora=1.0))
    g_esd = grad(ESD, ESDConfig(guidance_scale=7.5, guidance_scale_lora=0.5))
    assert torch.allclose(g_esd1, g_vsd, atol=1e-6, rtol=1e-5)
    assert (g_esd - g_vsd).abs().max() > 1e-4  # the entropy term does change the update


def test_v_prediction_particle_model_targets_v_and_converts(tmp_path):
    p = _sd("tiny-sd-v")
    vsd = VSD(VSDConfig(), p, 10, torch.Generator().manual_seed(0))
    assert vsd.phi.prediction_type == "v_prediction"
    z, eps, tau = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16), torch.tensor([100, 900])
    abar = p.alphas_cumprod[tau].view(-1, 1, 1, 1)
    assert torch.allclose(vsd.particle_target(eps, z, tau), abar.sqrt() * eps - (1 - abar).sqrt() * z)
    cams = _cams()
    cond = p.condition(PROMPT, "", cams)
    x = noise_to_level(z, eps, tau, p.alphas_cumprod)
    v = vsd.phi.predict(x, tau, cond, camera_vectors(cams))
    assert torch.allclose(vsd.phi.predict_eps(x, tau, cond, camera_vectors(cams)),
                          (1 - abar).sqrt() * x + abar.sqrt() * v, atol=1e-6)


def test_particle_state_round_trips_through_the_method_checkpoint(sd):
    vsd = _perturbed(VSD(VSDConfig(), sd, 10, torch.Generator().manual_seed(0)))
    state = copy.deepcopy(vsd.state_dict())
    cams = _cams()
    cond = sd.condition(PROMPT, "", cams)
    x, t, c = torch.randn(2, 4, 16, 16), torch.tensor([300, 300]), camera_vectors(cams)
    before = vsd.phi.predict(x, t, cond, c)
    vsd.losses(_render(2, 32), cams, cond, 0)  # one step of phi changes it
    assert not torch.equal(before, vsd.phi.predict(x, t, cond, c))
    vsd.load_state_dict(state)
    assert torch.equal(before, vsd.phi.predict(x, t, cond, c))
    assert sum(v.numel() for v in state["phi"]["lora"].values()) == vsd.phi.lora_parameter_count()


def test_single_model_mode_keeps_the_prior_intact():
    p = _sd()
    cams = _cams()
    cond = p.condition(PROMPT, "", cams)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([200, 700])
    before = p.predict_eps(x, t, cond, 7.5)
    vsd = VSD(VSDConfig(share_prior_unet=True, camera_init="default", lora_lr=1e-2), p, 10,
              torch.Generator().manual_seed(0))
    assert vsd.phi.unet is p.unet
    for _ in range(2):
        vsd.losses(_render(2, 32), cams, cond, 0)
    assert torch.allclose(p.predict_eps(x, t, cond, 7.5), before, atol=1e-6)  # adapter off for prior passes
    trained = vsd.phi.predict_eps(x, t, cond, camera_vectors(cams))
    assert not torch.allclose(trained, p.predict_eps(x, t, _plain(cond), 1.0))


def test_asd_discriminator_loss_and_gamma_sign(ref):
    asd = _perturbed(ASD(ASDConfig(gamma=-0.75), ref, 10, torch.Generator().manual_seed(2)))
    cams = _cams(2, 64)
    cond = ref.condition(PROMPT, NEG, cams)
    z = torch.rand(2, 3, 64, 64) * 2 - 1
    cam = camera_vectors(cams)
    state = asd.gen.get_state()
    loss = asd.particle_loss(z, cond, cam)
    asd.gen.set_state(state)
    tau, eps2, x_tau, cam_in = asd.particle_inputs(z, cam)
    out = asd.phi.predict(x_tau, tau, cond, cam_in)
    e_pre = ref.predict_eps(x_tau, tau, cond, 1.0).float()
    expected = ((out - eps2) ** 2).mean() - 0.75 * ((out - e_pre) ** 2).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    from backend.config import from_dict

    with pytest.raises(ConfigError, match="gamma"):
        from_dict({"prompt": "a mug", "stages": [{"method": {"name": "asd", "gamma": 0.5}}]})
    assert dataclasses.fields(ASDConfig)  # the config is a plain dataclass
