"""StableDreamer: SDS as L2 to the denoised image, in two annealed stages (a pixel prior, then a latent one)."""

from __future__ import annotations

import copy

from backend.config import (
    CameraConfig,
    DeepFloydIFPriorConfig,
    GaussiansConfig,
    JobConfig,
    OutputConfig,
    PriorConfig,
    ReferencePriorConfig,
    RegularisersConfig,
    StableDreamerConfig,
    StageConfig,
)
from backend.presets.common import (
    QUICK_GUIDANCE,
    QUICK_PROMPT,
    Preset,
    project_guidance_scale,
    quick_gaussians,
    quick_output,
    reference_cameras,
    sd_prior,
)

GUIDANCE = (20.0, "T", "StableDreamer stage 1 on DeepFloyd IF, threestudio's IF guidance 20")


def _stages(pixel_prior: PriorConfig, latent_prior: PriorConfig, steps: int, quick: bool) -> list[StageConfig]:
    """The two stages, half the steps each: C (shrinking-uniform t) on the pixel prior, then A (t annealed
    linearly) on the latent prior with a lower position learning rate."""
    half = steps // 2
    regs = RegularisersConfig(mean_scale=1.0, tv_rgb=1.0, opacity_sparsity=0.01)
    if quick:
        cams1 = reference_cameras(views=4, resolution=64)
        cams2 = reference_cameras(views=4, resolution=64)
        rep1 = quick_gaussians()
        rep2 = quick_gaussians(position_lr=5e-4, position_lr_final=2e-4)
        cfg1, cfg2 = QUICK_GUIDANCE, QUICK_GUIDANCE
    else:
        cams1 = CameraConfig(elevation_range=[-10.0, 45.0], distance_range=[1.5, 2.0], fovy_range=[40.0, 70.0],
                             views=4, resolution=64)
        cams2 = CameraConfig(elevation_range=[-10.0, 45.0], distance_range=[1.5, 2.0], fovy_range=[40.0, 70.0],
                             views=4, resolution=512)
        rep1 = GaussiansConfig(init="ball", init_count=20_000, init_radius=0.5, max_count=500_000)
        rep2 = GaussiansConfig(init="ball", init_count=20_000, init_radius=0.5, max_count=500_000,
                               position_lr=4e-4, position_lr_final=1.6e-5)
        cfg1, cfg2 = project_guidance_scale(*GUIDANCE[:2]), 100.0
    return [
        StageConfig(
            name="pixel", steps=half, prior=pixel_prior,
            # C: shrinking-uniform t, t_max 0.98 -> 0.5 over the stage.
            method=StableDreamerConfig(guidance_scale=cfg1, weighting="sds", t_min=0.02,
                                       t_max=[0.0, 0.98, 0.5, 1.0], t_sampling="random"),
            representation=rep1, background="white", random_background_prob=0.5, camera=cams1, regularisers=regs,
        ),
        StageConfig(
            name="latent", steps=steps - half, prior=latent_prior,
            # A restricted to 500 -> 20: deterministic linear annealing.
            method=StableDreamerConfig(guidance_scale=cfg2, weighting="sds", t_min=0.02, t_max=0.5,
                                       t_sampling="linear"),
            representation=rep2, background="white", random_background_prob=0.5, camera=cams2, regularisers=regs,
        ),
    ]


def stabledreamer() -> JobConfig:
    """StableDreamer (docs/METHODS.md §2.7): SDS as L2 to the denoised image (w_L2 = alpha_t sigma_t), anisotropic
    Gaussians, stage 1 on a pixel prior (IF stage I, 64^2, guidance 21, shrinking-uniform t 0.98 -> 0.5) then
    stage 2 on a latent prior (SD 2.1-base, 512^2, guidance 100, t falling 500 -> 20), half the steps each, a
    lower position learning rate in stage 2. The paper publishes no numbers: all are inferred."""
    return JobConfig(prompt="a blue mug", preset="stabledreamer",
                     stages=_stages(DeepFloydIFPriorConfig(), sd_prior(), 4000, quick=False),
                     output=OutputConfig(preview_every=250, snapshot_every=100, checkpoint_every=500))


def stabledreamer_quick() -> JobConfig:
    """StableDreamer's two stages on the reference prior (its pixel space stands in for both the pixel prior of
    stage 1 and the latent prior of stage 2, so the stages differ in their timestep annealing and position
    learning rate): 600 + 600 steps with the CPU demo's Gaussians and cameras."""
    prior = ReferencePriorConfig(view_conditioning="prompt")
    return JobConfig(prompt=QUICK_PROMPT, preset="stabledreamer-quick",
                     stages=_stages(prior, copy.deepcopy(prior), 1200, quick=True), output=quick_output())


PRESETS = [
    Preset("stabledreamer-quick", "StableDreamer's L2-to-denoised SDS in two annealed stages, both on the "
           "reference prior (CPU, minutes)", "StableDreamer (docs/METHODS.md §2.7), numbers inferred", False,
           stabledreamer_quick),
    Preset("stabledreamer", "StableDreamer: DeepFloyd IF stage then Stable Diffusion stage on 3D Gaussians (GPU)",
           "StableDreamer (docs/METHODS.md §2.7), numbers inferred", True, stabledreamer, reference_guidance=GUIDANCE),
]
