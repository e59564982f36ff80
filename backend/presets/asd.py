"""Adversarial score distillation (the official 3DGS config)."""

from __future__ import annotations

from backend.config import (
    ASDConfig,
    CameraConfig,
    GaussiansConfig,
    JobConfig,
    OptimConfig,
    OutputConfig,
    StableDiffusionPriorConfig,
    StageConfig,
)
from backend.presets.common import (
    QUICK_GUIDANCE,
    QUICK_PROMPT,
    Preset,
    project_guidance_scale,
    quick_gaussians_stage,
    quick_output,
)

GUIDANCE = (7.5, "D", "official ASD configs guidance_scale 7.5")
UNCERTAIN = ("Official ASD loss with gamma = -0.75 from its configs; the JSD paper's ASD diversity config was "
             "never published, so whether it used these settings is unverified (docs/METHODS.md §2.6).")


def asd() -> JobConfig:
    """Official ASD's 3DGS config (docs/METHODS.md §2.6): fp32 weights, Perp-Neg on the prior, CFG 7.5,
    w = sigma/alpha, t_max 0.5, asd weight 0.1, 32000 steps, 2 views at 512 px. Its Shap-E initialisation is not
    available: the cloud starts as a ball."""
    steps = 32000
    method = ASDConfig(guidance_scale=project_guidance_scale(*GUIDANCE[:2]),
                       weighting="inverse_sqrt_snr", t_min=0.02, t_max=0.5, weight=0.1, gamma=-0.75,
                       particle_model="stabilityai/stable-diffusion-2-1", lora_lr=1e-4, lora_weight_decay=0.01)
    return JobConfig(
        prompt="a DSLR photo of a blue ceramic mug", preset="asd",
        stages=[StageConfig(
            name="asd", steps=steps,
            prior=StableDiffusionPriorConfig(dtype="fp32", perp_neg=True, view_prompts=True, front_threshold=30.0,
                                             back_threshold=30.0),
            method=method,
            representation=GaussiansConfig(init="ball", init_count=4096, init_radius=0.5),
            camera=CameraConfig(views=2, resolution=512),
            optim=OptimConfig(optimizer="adamw", betas=[0.9, 0.99], eps=1e-15, weight_decay=0.01),
        )],
        output=OutputConfig(preview_every=500, snapshot_every=250, checkpoint_every=1000),
    )


def asd_quick() -> JobConfig:
    """The official ASD loss on the CPU demo's stage, with the reference prior's residual particle model."""
    method = ASDConfig(guidance_scale=QUICK_GUIDANCE, gamma=-0.75, weighting="sds", t_min=0.02,
                       t_max=[0.0, 0.98, 0.4, 0.8])
    return JobConfig(prompt=QUICK_PROMPT, preset="asd-quick", stages=[quick_gaussians_stage("gaussians", method)],
                     output=quick_output())


PRESETS = [
    Preset("asd-quick", "ASD on 3D Gaussians with the reference prior (CPU, minutes)",
           "Official ASD loss (docs/METHODS.md §2.6) with the reference prior's residual particle model", False,
           asd_quick, UNCERTAIN),
    Preset("asd", "Adversarial score distillation, official 3DGS config (GPU, fp32, about 30 GB est.)",
           "Official ASD (docs/METHODS.md §2.6)", True, asd, UNCERTAIN, GUIDANCE),
]
