"""Named presets: each paper's defaults converted to the project's conventions, and a quick variant of each
that runs on the reference prior on a CPU in minutes.

A preset is a function returning a complete JobConfig; `get(name)` returns a fresh copy. Conversions from the
references (guidance scales to the eps_u + s (eps_c - eps_u) form, absolute steps to fractions of a stage) are
written next to each value.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from backend.config import (
    AdversarialConfig,
    CameraConfig,
    DMTetConfig,
    GaussiansConfig,
    JobConfig,
    NeRFConfig,
    OptimConfig,
    OutputConfig,
    ReferencePriorConfig,
    RegularisersConfig,
    SDSConfig,
    StageConfig,
    validate,
)

DEFAULT_PRESET = "gaussian-sds-quick"


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    source: str
    needs_gpu: bool
    build: Callable[[], JobConfig]


def reference_cameras(views: int = 4, resolution: int = 64) -> CameraConfig:
    """Cameras that frame objects the way the reference prior's references do (distance 2, fovy 40)."""
    from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY

    return CameraConfig(
        elevation_range=[-10.0, 60.0], azimuth_range=[-180.0, 180.0],
        distance_range=[REFERENCE_DISTANCE, REFERENCE_DISTANCE], fovy_range=[REFERENCE_FOVY, REFERENCE_FOVY],
        elevation_sampling="uniform_angle", views=views, resolution=resolution,
    )


def gaussian_sds_quick() -> JobConfig:
    """SDS on 3D Gaussians against the reference prior: the CPU demo (about two minutes on 2 cores)."""
    steps = 1200
    return JobConfig(
        prompt="a blue mug",
        preset="gaussian-sds-quick",
        stages=[StageConfig(
            name="gaussians",
            steps=steps,
            prior=ReferencePriorConfig(view_conditioning="prompt"),
            # The reference prior's conditional denoiser is exact, so modest guidance suffices; 5 and above
            # over-saturate and bring back view errors (docs/RESULTS.md).
            method=SDSConfig(guidance_scale=3.0, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8]),
            representation=GaussiansConfig(
                init="ball", init_count=2000, init_radius=0.45, position_lr=2e-3, position_lr_final=2e-4,
                color_lr=0.01, opacity_lr=0.05, scaling_lr=5e-3, rotation_lr=1e-3,
                densify_from=0.05, densify_until=0.7, densify_every=100, densify_grad_threshold=0.01,
                percent_dense=0.01, min_opacity=0.01, prune_scale=0.2, max_count=8000,
            ),
            renderer="auto",
            background="white",
            random_background_prob=0.5,
            camera=reference_cameras(views=4, resolution=64),
            regularisers=RegularisersConfig(),
        )],
        output=OutputConfig(preview_every=200, snapshot_every=100, checkpoint_every=200, turntable_frames=24),
    )


# ---------------------------------------------------------------------------------------------- NeRF, DMTet, Real3D
#
# Reference conversions: threestudio's guidance 100 is 101 in our form (METHODS.md §1.2); absolute steps are
# fractions of a stage (orientation [0, 10, 1000, 5000] over 10 000 steps is [0, 10, 1000, 0.5]).


def quick_field(**overrides: object) -> dict:
    """Field settings of the quick variants: a small hash grid over [-1, 1]^3 (the reference objects fit in
    radius 0.5), coarse ray marching, albedo shading only (the reference prior's lighting is fixed in the world,
    so view-independent colour reproduces it), no normals."""
    field = dict(radius=1.0, grid_levels=6, grid_features=2, grid_log2_table=16, grid_base_resolution=16,
                 grid_scale=1.5, grid_start_levels=4, grid_grow_from=0.1, grid_grow_every=100, hidden=32,
                 samples_per_diagonal=128, occupancy_resolution=32, normals="none", albedo_until=1.0,
                 export_resolution=128, snapshot_resolution=48, export_threshold=0.0, field_lr=0.01)
    field.update(overrides)
    return field


def dreamfusion_quick() -> JobConfig:
    """SDS on a NeRF against the reference prior (CPU, minutes); the mesh is marching cubes on its density."""
    return JobConfig(
        prompt="a blue mug",
        preset="dreamfusion-quick",
        stages=[StageConfig(
            name="nerf",
            steps=600,
            prior=ReferencePriorConfig(view_conditioning="prompt"),
            method=SDSConfig(guidance_scale=3.0, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8]),
            representation=NeRFConfig(**quick_field()),
            renderer="auto",
            background="white",
            random_background_prob=0.5,
            camera=reference_cameras(views=1, resolution=64),
            regularisers=RegularisersConfig(opacity_sparsity=0.05),
        )],
        output=OutputConfig(preview_every=200, snapshot_every=100, checkpoint_every=200, turntable_frames=24),
    )


def dreamfusion_cameras() -> CameraConfig:
    """threestudio's dreamfusion-sd cameras (METHODS.md §4): elevation -10..45, distance 1.5..2, fovy 40..70,
    batch 1 at 64^2, position and look-at perturbations on."""
    return CameraConfig(elevation_range=[-10.0, 45.0], azimuth_range=[-180.0, 180.0], distance_range=[1.5, 2.0],
                        fovy_range=[40.0, 70.0], elevation_sampling="mixed", views=1, resolution=64,
                        position_jitter=0.1, center_jitter=0.2)


def dreamfusion_stage(prior: object, steps: int = 10_000) -> StageConfig:
    """threestudio dreamfusion-sd: SDS (guidance 100 -> 101), NeRF, Adam (0.9, 0.99) eps 1e-15, lr 0.01 field /
    0.001 background, orientation [0, 10, 1000, 5000], sparsity 1, learned background."""
    return StageConfig(
        name="nerf", steps=steps, prior=prior,
        method=SDSConfig(guidance_scale=101.0, weighting="sds", t_min=0.02, t_max=0.98),
        representation=NeRFConfig(), renderer="auto", background="learned", random_background_prob=0.5,
        camera=dreamfusion_cameras(),
        regularisers=RegularisersConfig(orientation=[0.0, 10.0, 1000.0, 0.5], opacity_sparsity=1.0),
        optim=OptimConfig(optimizer="adam", betas=[0.9, 0.99], eps=1e-15),
    )


def magic3d_quick() -> JobConfig:
    """Coarse to fine on the reference prior: a NeRF, then a DMTet mesh created from it and refined."""
    field = quick_field()
    return JobConfig(
        prompt="a blue mug",
        preset="magic3d-quick",
        stages=[
            StageConfig(
                name="coarse", steps=400, prior=ReferencePriorConfig(view_conditioning="prompt"),
                method=SDSConfig(guidance_scale=3.0, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8]),
                representation=NeRFConfig(**field), renderer="auto", background="white",
                random_background_prob=0.5, camera=reference_cameras(views=1, resolution=64),
                regularisers=RegularisersConfig(opacity_sparsity=0.05),
            ),
            StageConfig(
                name="refine", steps=200, prior=ReferencePriorConfig(view_conditioning="prompt"),
                method=SDSConfig(guidance_scale=3.0, weighting="sds", t_min=0.02, t_max=0.5),
                representation=DMTetConfig(**field, geometry="sdf", tet_resolution=24, init_threshold=0.0,
                                           sdf_lr=1e-3, deformation_lr=1e-3),
                renderer="auto", background="white", random_background_prob=0.5,
                camera=reference_cameras(views=2, resolution=64),
                regularisers=RegularisersConfig(normal_consistency=0.1, laplacian=0.0),
            ),
        ],
        output=OutputConfig(preview_every=200, snapshot_every=100, checkpoint_every=200, turntable_frames=24),
    )


def real3d_quick() -> JobConfig:
    """Real3D on the reference prior: one field drawn by volume rendering (48 px, upsampled) and as a DMTet mesh
    (64 px, the prior's resolution), the implicit-to-explicit schedule, SDS plus the adversarial term (bank of 64
    prior samples), the positional view embedding, Adan with cosine decay, batch 2 with the second view 90
    degrees from the first."""
    return JobConfig(
        prompt="a blue mug",
        preset="real3d-quick",
        stages=[StageConfig(
            name="real3d",
            steps=500,
            prior=ReferencePriorConfig(view_conditioning="prompt", view_embedding="interpolated"),
            method=SDSConfig(guidance_scale=3.0, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8]),
            representation=DMTetConfig(**quick_field(radius=0.75, field_lr=5e-3), geometry="density",
                                       tet_resolution=20, density_threshold=0.1, implicit_resolution=48,
                                       implicit_weight=[0.3, 1.0, 0.0, 0.8], deformation_lr=5e-3),
            renderer="dual",
            background="white",
            random_background_prob=0.0,  # the bank's images sit on white: real and fake must match
            camera=CameraConfig(**{**vars(reference_cameras(views=2, resolution=64)), "view_azimuth_step": 90.0}),
            regularisers=RegularisersConfig(opacity_sparsity=0.05, normal_consistency=0.1),
            optim=OptimConfig(optimizer="adan", adan_beta1=0.98, adan_beta2=0.92, adan_beta3=0.99, eps=1e-8,
                              weight_decay=2e-5, lr_decay="cosine", lr_final_factor=2e-4, max_grad_norm=5.0),
            adversarial=AdversarialConfig(weight=0.01, bank_size=64, bank_steps=20, bank_guidance_scale=3.0,
                                          bank_batch=16, resolution=64),
        )],
        output=OutputConfig(preview_every=200, snapshot_every=100, checkpoint_every=200, turntable_frames=24),
    )


# The full presets need a latent Stable Diffusion prior (METHODS.md §2.1, §2.8: SD 2.1-base). They are
# registered as soon as the `stable-diffusion` prior's config is part of PRIOR_CONFIGS; until then only their
# quick variants exist.
FULL_PRIOR = "stable-diffusion"


def _sd_prior(**fields: object) -> object:
    from backend.config import PRIOR_CONFIGS

    prior = PRIOR_CONFIGS[FULL_PRIOR]()
    for k, v in fields.items():
        setattr(prior, k, v)
    return prior


def dreamfusion() -> JobConfig:
    """threestudio's dreamfusion-sd: SDS + NeRF, 10 000 steps at 64^2, batch 1."""
    return JobConfig(prompt="a DSLR photo of a delicious hamburger", preset="dreamfusion",
                     stages=[dreamfusion_stage(_sd_prior())],
                     output=OutputConfig(preview_every=500, snapshot_every=500, checkpoint_every=1000))


def magic3d() -> JobConfig:
    """Magic3D-style coarse to fine (threestudio magic3d-coarse-sd then -refine-sd): a NeRF for 10 000 steps at
    64^2, then a DMTet mesh created from it (tet grid 64 ~ quartet 128, threshold 25) refined for 5 000 steps at
    512^2 with Magic3D-refine cameras, normal consistency 1e4 and Laplacian 1e4 (threestudio's scale)."""
    coarse = dreamfusion_stage(_sd_prior(), 10_000)
    coarse.name = "coarse"
    coarse.regularisers = RegularisersConfig(opacity_sparsity=1.0, orientation=[0.0, 10.0, 1000.0, 0.5])
    coarse.method.weighting = "uniform"  # threestudio magic3d-coarse: w(t) = 1
    refine = StageConfig(
        name="refine", steps=5_000, prior=_sd_prior(),
        method=SDSConfig(guidance_scale=101.0, weighting="sds", t_min=0.02, t_max=0.5),
        representation=DMTetConfig(geometry="sdf", tet_resolution=64, init_threshold=25.0, normals="none"),
        renderer="auto", background="learned", random_background_prob=0.5,
        camera=CameraConfig(elevation_range=[-10.0, 45.0], distance_range=[1.5, 2.0], fovy_range=[30.0, 45.0],
                            views=1, resolution=512),
        regularisers=RegularisersConfig(normal_consistency=1e4, laplacian=1e4),
        optim=OptimConfig(optimizer="adam", betas=[0.9, 0.99], eps=1e-15),
    )
    return JobConfig(prompt="a DSLR photo of a delicious hamburger", preset="magic3d", stages=[coarse, refine],
                     output=OutputConfig(preview_every=500, snapshot_every=500, checkpoint_every=1000))


def real3d() -> JobConfig:
    """Real3D (METHODS.md §2.8): SD 2.1-base with guidance 100 -> 101 and the positional embedding; one field
    drawn by volume rendering (128^2) and as DMTet (512^2, threshold 0.1) with the implicit-to-explicit
    schedule; SDS + 0.01 adversarial (1000 prior images, PatchGAN at 256^2); Adan lr 5e-3 cosine to 1e-6;
    10 000 steps at batch 2, the second view 90 degrees from the first."""
    cams = dreamfusion_cameras()
    cams.views, cams.resolution, cams.view_azimuth_step = 2, 512, 90.0
    stage = StageConfig(
        name="real3d", steps=10_000, prior=_sd_prior(view_embedding="interpolated"),
        method=SDSConfig(guidance_scale=101.0, weighting="sds", t_min=0.02, t_max=0.98),
        representation=DMTetConfig(geometry="density", density_threshold=0.1, tet_resolution=64,
                                   implicit_resolution=128, implicit_weight=[0.3, 1.0, 0.0, 0.8], field_lr=5e-3,
                                   background_lr=5e-3, deformation_lr=5e-3),
        renderer="dual", background="learned", random_background_prob=0.5, camera=cams,
        regularisers=RegularisersConfig(orientation=[0.0, 10.0, 1000.0, 0.5], opacity_sparsity=1.0,
                                        normal_consistency=1e4),
        optim=OptimConfig(optimizer="adan", eps=1e-8, weight_decay=2e-5, lr_decay="cosine",
                          lr_final_factor=2e-4, max_grad_norm=5.0),
        adversarial=AdversarialConfig(weight=0.01),
    )
    return JobConfig(prompt="a DSLR photo of a delicious hamburger", preset="real3d", stages=[stage],
                     output=OutputConfig(preview_every=500, snapshot_every=500, checkpoint_every=1000))


def _full_presets() -> list[Preset]:
    from backend.config import PRIOR_CONFIGS

    if FULL_PRIOR not in PRIOR_CONFIGS:
        return []
    return [
        Preset("dreamfusion", "SDS on a NeRF with Stable Diffusion (threestudio dreamfusion-sd)",
               "DreamFusion (METHODS.md §2.1, §3.2)", True, dreamfusion),
        Preset("magic3d", "Coarse NeRF then a refined DMTet mesh with Stable Diffusion",
               "Magic3D-style coarse to fine (METHODS.md §3.2, §3.3)", True, magic3d),
        Preset("real3d", "Real3D: dual NeRF/DMTet renders, SDS + adversarial term, Adan, Stable Diffusion",
               "Real3D (METHODS.md §2.8)", True, real3d),
    ]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("gaussian-sds-quick", "SDS on 3D Gaussians with the embedded reference prior (CPU, minutes)",
               "DreamFusion's SDS (METHODS.md §2.1) on 3DGS (§3.1)", False, gaussian_sds_quick),
        Preset("dreamfusion-quick", "SDS on a hash-grid NeRF with the reference prior; marching-cubes mesh (CPU)",
               "DreamFusion's SDS (METHODS.md §2.1) on threestudio's NeRF (§3.2, §3.4)", False, dreamfusion_quick),
        Preset("magic3d-quick", "Coarse NeRF then a DMTet mesh refined from it, with the reference prior (CPU)",
               "Magic3D-style coarse to fine (METHODS.md §3.2, §3.3)", False, magic3d_quick),
        Preset("real3d-quick", "Real3D: one field, volume and mesh renders, SDS + adversarial term, Adan "
               "(reference prior, CPU)", "Real3D (METHODS.md §2.8)", False, real3d_quick),
        *_full_presets(),
    ]
}


def names() -> list[str]:
    return list(PRESETS)


def get(name: str) -> JobConfig:
    """A fresh, validated JobConfig for preset `name`."""
    if name not in PRESETS:
        from backend.core.settings import ConfigError

        raise ConfigError("preset", f"unknown preset {name!r}", ", ".join(PRESETS))
    cfg = copy.deepcopy(PRESETS[name].build())
    cfg.preset = name
    return validate(cfg)
