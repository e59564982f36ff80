"""DreamFusion: SDS on a NeRF (threestudio's dreamfusion-sd); its stage and cameras are reused by Magic3D's
coarse stage and Real3D."""

from __future__ import annotations

from backend.config import (
    CameraConfig,
    JobConfig,
    NeRFConfig,
    OptimConfig,
    OutputConfig,
    PriorConfig,
    ReferencePriorConfig,
    RegularisersConfig,
    SDSConfig,
    StageConfig,
)
from backend.presets.common import (
    QUICK_GUIDANCE,
    QUICK_PROMPT,
    Preset,
    project_guidance_scale,
    quick_nerf,
    quick_output,
    reference_cameras,
    sd_prior,
)

# Absolute steps of the reference become fractions of a stage: orientation [0, 10, 1000, 5000] over 10 000
# steps is [0, 10, 1000, 0.5].
GUIDANCE = (100.0, "T", "threestudio dreamfusion-sd guidance_scale 100")
FULL_PROMPT = "a DSLR photo of a delicious hamburger"


def dreamfusion_cameras() -> CameraConfig:
    """threestudio's dreamfusion-sd cameras (docs/METHODS.md §4): elevation -10..45, distance 1.5..2, fovy 40..70,
    batch 1 at 64^2, position and look-at perturbations on."""
    return CameraConfig(elevation_range=[-10.0, 45.0], azimuth_range=[-180.0, 180.0], distance_range=[1.5, 2.0],
                        fovy_range=[40.0, 70.0], elevation_sampling="mixed", views=1, resolution=64,
                        position_jitter=0.1, center_jitter=0.2)


def dreamfusion_stage(prior: PriorConfig, steps: int = 10_000) -> StageConfig:
    """threestudio dreamfusion-sd: SDS (guidance 100 -> 101), NeRF, Adam (0.9, 0.99) eps 1e-15, lr 0.01 field /
    0.001 background, orientation [0, 10, 1000, 5000], sparsity 1, learned background."""
    return StageConfig(
        name="nerf", steps=steps, prior=prior,
        method=SDSConfig(guidance_scale=project_guidance_scale(*GUIDANCE[:2]), weighting="sds", t_min=0.02,
                         t_max=0.98),
        representation=NeRFConfig(), renderer="auto", background="learned", random_background_prob=0.5,
        camera=dreamfusion_cameras(),
        regularisers=RegularisersConfig(orientation=[0.0, 10.0, 1000.0, 0.5], opacity_sparsity=1.0),
        optim=OptimConfig(optimizer="adam", betas=[0.9, 0.99], eps=1e-15),
    )


def dreamfusion_quick() -> JobConfig:
    """SDS on a NeRF against the reference prior (CPU, minutes); the mesh is marching cubes on its density."""
    return JobConfig(
        prompt=QUICK_PROMPT,
        preset="dreamfusion-quick",
        stages=[StageConfig(
            name="nerf",
            steps=600,
            prior=ReferencePriorConfig(view_conditioning="prompt"),
            method=SDSConfig(guidance_scale=QUICK_GUIDANCE, weighting="sds", t_min=0.02,
                             t_max=[0.0, 0.98, 0.4, 0.8]),
            representation=quick_nerf(),
            renderer="auto",
            background="white",
            random_background_prob=0.5,
            camera=reference_cameras(views=1, resolution=64),
            regularisers=RegularisersConfig(opacity_sparsity=0.05),
        )],
        output=quick_output(),
    )


def dreamfusion() -> JobConfig:
    """threestudio's dreamfusion-sd: SDS + NeRF, 10 000 steps at 64^2, batch 1."""
    return JobConfig(prompt=FULL_PROMPT, preset="dreamfusion", stages=[dreamfusion_stage(sd_prior())],
                     output=OutputConfig(preview_every=500, snapshot_every=500, checkpoint_every=1000))


PRESETS = [
    Preset("dreamfusion-quick", "SDS on a hash-grid NeRF with the reference prior; marching-cubes mesh (CPU)",
           "DreamFusion's SDS (docs/METHODS.md §2.1) on threestudio's NeRF (§3.2, §3.4)", False, dreamfusion_quick),
    Preset("dreamfusion", "SDS on a NeRF with Stable Diffusion (threestudio dreamfusion-sd)",
           "DreamFusion (docs/METHODS.md §2.1, §3.2)", True, dreamfusion, reference_guidance=GUIDANCE),
]
