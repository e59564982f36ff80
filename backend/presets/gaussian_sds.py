"""SDS on 3D Gaussians (DreamFusion's score distillation, GaussianDreamer's guidance settings)."""

from __future__ import annotations

from backend.config import (
    CameraConfig,
    GaussiansConfig,
    JobConfig,
    OutputConfig,
    SDSConfig,
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

GUIDANCE = (100.0, "T", "threestudio GaussianDreamer / dreamfusion-sd guidance_scale 100")


def gaussian_sds_quick() -> JobConfig:
    """SDS on 3D Gaussians against the reference prior: the CPU demo (about two minutes on 2 cores). The
    reference prior's conditional denoiser is exact, so modest guidance suffices; 5 and above over-saturate and
    bring back view errors (docs/RESULTS.md)."""
    method = SDSConfig(guidance_scale=QUICK_GUIDANCE, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8])
    return JobConfig(prompt=QUICK_PROMPT, preset="gaussian-sds-quick",
                     stages=[quick_gaussians_stage("gaussians", method)], output=quick_output())


def gaussian_sds() -> JobConfig:
    """SDS on 3D Gaussians with Stable Diffusion 2.1-base (GaussianDreamer's guidance, docs/METHODS.md §2.1):
    CFG 100 (T) = 101 here, w = 1 - abar, t_max 0.98 -> 0.55 at step 500 of 1200, gradient clip 1.5 -> 2.0
    over steps 0-1000, 4 views at 512 px. GaussianDreamer's Shap-E initialisation is not available: the cloud
    starts as a ball."""
    steps = 1200
    return JobConfig(
        prompt="a DSLR photo of a blue ceramic mug",
        preset="gaussian-sds",
        stages=[StageConfig(
            name="gaussians",
            steps=steps,
            prior=StableDiffusionPriorConfig(view_prompts=True),
            method=SDSConfig(
                guidance_scale=project_guidance_scale(*GUIDANCE[:2]),
                weighting="sds", t_min=0.02, t_max=[500 / steps, 0.98, 0.55, 501 / steps],
                grad_clip=[0.0, 1.5, 2.0, 1000 / steps]),
            representation=GaussiansConfig(init="ball", init_count=4096, init_radius=0.5),
            camera=CameraConfig(views=4, resolution=512),
        )],
        output=OutputConfig(preview_every=100, snapshot_every=50, checkpoint_every=200),
    )


PRESETS = [
    Preset("gaussian-sds-quick", "SDS on 3D Gaussians with the embedded reference prior (CPU, minutes)",
           "DreamFusion's SDS (docs/METHODS.md §2.1) on 3DGS (§3.1)", False, gaussian_sds_quick),
    Preset("gaussian-sds", "SDS on 3D Gaussians with Stable Diffusion 2.1-base (GPU, about 10 GB, estimated)",
           "GaussianDreamer's SDS guidance (docs/METHODS.md §2.1): CFG 100 (T) = 101", True, gaussian_sds,
           "GaussianDreamer's Shap-E initialisation is not available; the cloud starts as a ball.", GUIDANCE),
]
