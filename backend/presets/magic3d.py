"""Magic3D-style coarse to fine: a NeRF, then a DMTet mesh created from it and refined (threestudio's
magic3d-coarse-sd then magic3d-refine-sd)."""

from __future__ import annotations

from backend.config import (
    CameraConfig,
    DMTetConfig,
    JobConfig,
    OptimConfig,
    OutputConfig,
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
    quick_field,
    quick_nerf,
    quick_output,
    reference_cameras,
    sd_prior,
)
from backend.presets.dreamfusion import FULL_PROMPT, dreamfusion_stage

GUIDANCE = (100.0, "T", "threestudio magic3d-coarse-sd / -refine-sd guidance_scale 100")


def magic3d_quick() -> JobConfig:
    """Coarse to fine on the reference prior: a NeRF, then a DMTet mesh created from it and refined."""
    return JobConfig(
        prompt=QUICK_PROMPT,
        preset="magic3d-quick",
        stages=[
            StageConfig(
                name="coarse", steps=400, prior=ReferencePriorConfig(view_conditioning="prompt"),
                method=SDSConfig(guidance_scale=QUICK_GUIDANCE, weighting="sds", t_min=0.02,
                                 t_max=[0.0, 0.98, 0.4, 0.8]),
                representation=quick_nerf(), renderer="auto", background="white",
                random_background_prob=0.5, camera=reference_cameras(views=1, resolution=64),
                regularisers=RegularisersConfig(opacity_sparsity=0.05),
            ),
            StageConfig(
                name="refine", steps=200, prior=ReferencePriorConfig(view_conditioning="prompt"),
                method=SDSConfig(guidance_scale=QUICK_GUIDANCE, weighting="sds", t_min=0.02, t_max=0.5),
                representation=DMTetConfig(**quick_field(), geometry="sdf", tet_resolution=24, init_threshold=0.0,
                                           sdf_lr=1e-3, deformation_lr=1e-3),
                renderer="auto", background="white", random_background_prob=0.5,
                camera=reference_cameras(views=2, resolution=64),
                regularisers=RegularisersConfig(normal_consistency=0.1, laplacian=0.0),
            ),
        ],
        output=quick_output(),
    )


def magic3d() -> JobConfig:
    """Magic3D-style coarse to fine (threestudio magic3d-coarse-sd then -refine-sd): a NeRF for 10 000 steps at
    64^2, then a DMTet mesh created from it (tet grid 64 ~ quartet 128, threshold 25) refined for 5 000 steps at
    512^2 with Magic3D-refine cameras, normal consistency 1e4 and Laplacian 1e4 (threestudio's scale)."""
    coarse = dreamfusion_stage(sd_prior(), 10_000)
    coarse.name = "coarse"
    coarse.regularisers = RegularisersConfig(opacity_sparsity=1.0, orientation=[0.0, 10.0, 1000.0, 0.5])
    coarse.method.weighting = "uniform"  # threestudio magic3d-coarse: w(t) = 1
    refine = StageConfig(
        name="refine", steps=5_000, prior=sd_prior(),
        method=SDSConfig(guidance_scale=project_guidance_scale(*GUIDANCE[:2]), weighting="sds", t_min=0.02,
                         t_max=0.5),
        representation=DMTetConfig(geometry="sdf", tet_resolution=64, init_threshold=25.0, normals="none"),
        renderer="auto", background="learned", random_background_prob=0.5,
        camera=CameraConfig(elevation_range=[-10.0, 45.0], distance_range=[1.5, 2.0], fovy_range=[30.0, 45.0],
                            views=1, resolution=512),
        regularisers=RegularisersConfig(normal_consistency=1e4, laplacian=1e4),
        optim=OptimConfig(optimizer="adam", betas=[0.9, 0.99], eps=1e-15),
    )
    return JobConfig(prompt=FULL_PROMPT, preset="magic3d", stages=[coarse, refine],
                     output=OutputConfig(preview_every=500, snapshot_every=500, checkpoint_every=1000))


PRESETS = [
    Preset("magic3d-quick", "Coarse NeRF then a DMTet mesh refined from it, with the reference prior (CPU)",
           "Magic3D-style coarse to fine (docs/METHODS.md §3.2, §3.3)", False, magic3d_quick),
    Preset("magic3d", "Coarse NeRF then a refined DMTet mesh with Stable Diffusion",
           "Magic3D-style coarse to fine (docs/METHODS.md §3.2, §3.3)", True, magic3d, reference_guidance=GUIDANCE),
]
