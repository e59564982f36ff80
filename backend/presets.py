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
    PRIOR_CONFIGS,
    AdversarialConfig,
    ASDConfig,
    CameraConfig,
    DMTetConfig,
    ESDConfig,
    GaussiansConfig,
    ISMConfig,
    JobConfig,
    JSDConfig,
    NeRFConfig,
    OptimConfig,
    OutputConfig,
    PriorConfig,
    ReferencePriorConfig,
    RegularisersConfig,
    SDSConfig,
    StableDiffusionPriorConfig,
    StableDreamerConfig,
    StageConfig,
    VSDConfig,
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
    notes: str = ""  # caveats shown by `distillery presets NAME` (deviations, stages still missing, uncertainty)


# ---------------------------------------------------------------------------------------------- guidance scales

# The project's one CFG form is (D): eps_u + s (eps_c - eps_u). threestudio's SD/IF SDS guidance uses (T):
# eps_c + s (eps_c - eps_u), which is (D) with s + 1 (METHODS.md §1.2).
CFG_FORMS = ("D", "T")


def project_guidance_scale(value: float, form: str) -> float:
    """A reference implementation's guidance scale in the project's (D) form: s_D = s_T + 1."""
    if form not in CFG_FORMS:
        raise ValueError(f"form must be one of {CFG_FORMS}, got {form!r}")
    return float(value) + 1.0 if form == "T" else float(value)


# preset -> (published value, its form, where it comes from); each preset's method.guidance_scale is the
# conversion of this (tests/backend/test_presets_guidance.py checks every entry).
REFERENCE_GUIDANCE: dict[str, tuple[float, str, str]] = {
    "gaussian-sds": (100.0, "T", "threestudio GaussianDreamer / dreamfusion-sd guidance_scale 100"),
    "prolificdreamer": (7.5, "D", "threestudio prolificdreamer stable-diffusion-vsd-guidance guidance_scale 7.5"),
    "esd": (7.5, "D", "ESD (threestudio-based) guidance_scale 7.5"),
    "asd": (7.5, "D", "official ASD configs guidance_scale 7.5"),
    "dreamfusion": (100.0, "T", "threestudio dreamfusion-sd guidance_scale 100"),
    "magic3d": (100.0, "T", "threestudio magic3d-coarse-sd / -refine-sd guidance_scale 100"),
    "real3d": (100.0, "T", "Real3D (threestudio-based) guidance_scale 100"),
    "luciddreamer": (7.5, "D", "LucidDreamer guidance_scale 7.5"),
    "jsd": (7.5, "T", "jsddreamer guidance 7.5 without Perp-Neg"),
    "jsd-surroundings": (7.5, "T", "jsddreamer guidance 7.5 without Perp-Neg"),
    "stabledreamer": (20.0, "T", "StableDreamer stage 1 on DeepFloyd IF, threestudio's IF guidance 20"),
}


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
    prior samples), Adan, batch 2 with the second view 90 degrees from the first.

    Two departures from the full recipe, both measured on "a blue mug" (docs/NERF_DMTET.md): the bucket view
    embedding instead of the positional one (the reference prior's mixture of bucket reference sets cost view
    accuracy: 0.125 against 0.75), and a constant field learning rate of 0.01 (with 5e-3 and cosine decay the
    field was still a blob when the mesh took over: mask IoU 0.737 against 0.844)."""
    return JobConfig(
        prompt="a blue mug",
        preset="real3d-quick",
        stages=[StageConfig(
            name="real3d",
            steps=500,
            prior=ReferencePriorConfig(view_conditioning="prompt", view_embedding="bucket"),
            method=SDSConfig(guidance_scale=3.0, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8]),
            representation=DMTetConfig(**quick_field(radius=0.75, field_lr=0.01), geometry="density",
                                       tet_resolution=20, density_threshold=0.1, implicit_resolution=48,
                                       implicit_weight=[0.3, 1.0, 0.0, 0.8], deformation_lr=5e-3),
            renderer="dual",
            background="white",
            random_background_prob=0.0,  # the bank's images sit on white: real and fake must match
            camera=CameraConfig(**{**vars(reference_cameras(views=2, resolution=64)), "view_azimuth_step": 90.0}),
            regularisers=RegularisersConfig(opacity_sparsity=0.05, normal_consistency=0.1),
            optim=OptimConfig(optimizer="adan", adan_beta1=0.98, adan_beta2=0.92, adan_beta3=0.99, eps=1e-8,
                              weight_decay=2e-5, lr_decay="none", max_grad_norm=5.0),
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


# ---------------------------------------------------------------------------------------------- ISM, JSD, StableDreamer
# Full presets take their prior as an argument: they need the Stable Diffusion / DeepFloyd IF priors
# (`PRIOR_CONFIGS["stable-diffusion"]`, `["deepfloyd-if"]`) and are registered below only when those exist.
# Quick variants run the same recipe on the reference prior with the CPU demo's Gaussians and cameras; the
# reference prior is exact, so they use the demo's modest guidance (3) instead of the papers' scales.


def _quick_gaussians(**changes: float) -> GaussiansConfig:
    """The CPU demo's Gaussians (gaussian-sds-quick), with changes."""
    g = GaussiansConfig(
        init="ball", init_count=2000, init_radius=0.45, position_lr=2e-3, position_lr_final=2e-4,
        color_lr=0.01, opacity_lr=0.05, scaling_lr=5e-3, rotation_lr=1e-3,
        densify_from=0.05, densify_until=0.7, densify_every=100, densify_grad_threshold=0.01,
        percent_dense=0.01, min_opacity=0.01, prune_scale=0.2, max_count=8000,
    )
    for k, v in changes.items():
        setattr(g, k, v)
    return g


def _quick_output() -> OutputConfig:
    return OutputConfig(preview_every=200, snapshot_every=100, checkpoint_every=200, turntable_frames=24)


def luciddreamer_job(prior: PriorConfig) -> JobConfig:
    """LucidDreamer (METHODS.md §2.4, §3.1, §4): ISM on 3DGS, 5000 steps, 4 views at 512^2 sharing one t.

    Cameras: LucidDreamer's frame is z-up with the front camera on +y, ours z-up with the front on -y; azimuths
    from the front are the same, so elevation -15..45 and azimuth +-180 carry over. Its progressive camera
    relaxation (radius 5.2..5.5 x0.95 every 500 steps down to 3.5..5.0; FoV lower bound 0.32 rad x0.75 every 500
    steps down to 0.16) is not reproduced: the sampler draws from the union of those ranges for the whole run,
    radius 3.5..5.5 and FoV 0.16..0.60 rad (9.17..34.38 deg). Densification: steps 100..3000 every 100 with
    opacity resets every 300, tau_g 7.5e-4, percent_dense 0.003 of extent 3.5, prune below opacity 0.005 or
    above 0.35 world units; learning rates are the reference's effective ones (xyz 5.6e-4 -> 5.6e-6; the
    colour, scale and rotation decays are not reproduced: their start values are kept). Densification
    statistics average all 4 views (the reference keeps only the last view's)."""
    return JobConfig(
        prompt="a blue mug",
        preset="luciddreamer",
        stages=[StageConfig(
            name="ism",
            steps=5000,
            prior=prior,
            method=ISMConfig(guidance_scale=7.5, t_min=0.02, t_max=[0.0, 0.98, 0.5, 0.3], shared_t=True,
                             delta_t=[0.0, 100.0, 50.0, 0.3], inversion_stride=200, inversion_max_steps=5,
                             offset_noise=0.1, depth_prob=0.2, flip_prob=0.5, weight=0.1, reduction="total",
                             tv_disparity=1.0),
            representation=GaussiansConfig(
                init="ball", init_count=100_000, init_radius=0.5, init_opacity=0.1, sh_degree=0, extent=3.5,
                position_lr=5.6e-4, position_lr_final=5.6e-6, color_lr=5e-3, opacity_lr=0.05, scaling_lr=5e-3,
                rotation_lr=1e-3, densify_from=0.02, densify_until=0.6, densify_every=100,
                densify_grad_threshold=7.5e-4, percent_dense=0.003, min_opacity=0.005, prune_scale=0.1,
                opacity_reset_every=300, max_count=1_000_000,
            ),
            background="white",
            random_background_prob=0.66,
            camera=CameraConfig(elevation_range=[-15.0, 45.0], azimuth_range=[-180.0, 180.0],
                                distance_range=[3.5, 5.5], fovy_range=[9.17, 34.38],
                                elevation_sampling="uniform_angle", stratified_azimuth=False, views=4,
                                resolution=512),
            regularisers=RegularisersConfig(tv_rgb=1.0, mean_scale=1.0),
            optim=OptimConfig(betas=[0.9, 0.999], eps=1e-15),
        )],
        output=OutputConfig(preview_every=250, snapshot_every=100, checkpoint_every=500),
    )


def luciddreamer_quick() -> JobConfig:
    """ISM on the reference prior with the CPU demo's Gaussians and cameras (1200 steps, 4 views sharing one t).

    ISM's target drops the term x0 - x0_hat(x_s) of the SDS residual, assuming DDIM inversion reconstructs the
    render (x0_hat at x_s ~ the render). The reference prior's own empirical distribution breaks that: its
    denoiser snaps any render to its nearest reference, so the target never sees the render and ISM drifts
    (docs/RESULTS_INVERSION.md). This preset therefore smooths the prior (`prior.data_noise` 1.0: each reference
    a Gaussian of std-dev 1 in [-1, 1] pixel units), under which the denoiser leaves renders near the
    references almost unchanged at low noise, as a trained network does. On that prior a wide interval does
    best: delta_T 200 (not 100 -> 50) and t in [20, 500] for the whole run (LucidDreamer's upper bound 980 ->
    500 ends there). Guidance 3 as in the CPU demo (7.5 did worse on a short run). Depth-guidance steps and
    mirroring are off: the reference prior knows only colour images of objects that are not mirror-symmetric,
    so a disparity image or a mirrored render has no meaning to it."""
    return JobConfig(
        prompt="a blue mug",
        preset="luciddreamer-quick",
        stages=[StageConfig(
            name="ism",
            steps=1200,
            prior=ReferencePriorConfig(view_conditioning="prompt", data_noise=1.0),
            method=ISMConfig(guidance_scale=3.0, t_min=0.02, t_max=0.5, shared_t=True,
                             delta_t=200.0, inversion_stride=200, inversion_max_steps=5,
                             offset_noise=0.1, depth_prob=0.0, flip_prob=0.0, weight=0.1, reduction="total",
                             tv_disparity=1.0),
            representation=_quick_gaussians(),
            background="white",
            random_background_prob=0.5,
            camera=reference_cameras(views=4, resolution=64),
            regularisers=RegularisersConfig(tv_rgb=1.0, mean_scale=1.0),
        )],
        output=_quick_output(),
    )


def _jsd_job(prior: PriorConfig, name: str, surroundings: bool, guidance: float, inversion_guidance: float
             ) -> JobConfig:
    return JobConfig(
        prompt="a blue mug",
        preset=name,
        stages=[StageConfig(
            name="jsd",
            steps=10_000,
            prior=prior,
            method=JSDConfig(guidance_scale=guidance, inversion_guidance_scale=inversion_guidance,
                             inversion_steps=10, inversion_eta=0.3, inversion_jitter=100, k=1.0, warmup=0.0,
                             t_min=0.25, t_max=0.98, t_sampling="linear", shared_t=True, reduction="mean"),
            representation=GaussiansConfig(init="ball", init_count=20_000, init_radius=0.5),
            background="white",
            random_background_prob=0.5 if surroundings else 0.0,
            camera=CameraConfig(elevation_range=[-10.0, 45.0], distance_range=[1.0, 1.5], fovy_range=[40.0, 70.0],
                                elevation_sampling="mixed", stratified_azimuth=True, views=1, resolution=256,
                                resolution_final=512, resolution_switch=0.2),
            regularisers=RegularisersConfig(opacity_sparsity=[0.0, 0.15, 0.0, 0.3], opacity_entropy=0.1),
            optim=OptimConfig(betas=[0.9, 0.99], eps=1e-15),
        )],
        output=OutputConfig(preview_every=500, snapshot_every=200, checkpoint_every=1000),
    )


def jsd_job(prior: PriorConfig, perp_neg: bool = True) -> JobConfig:
    """JSD as its public code runs it (METHODS.md §2.5), on 3D Gaussians: 10 000 steps, one view, 256^2 then
    512^2 from 20%, t falling 980 -> 250, inversion grid of 10 with eta 0.3 and jitter 0..99, k = 1. Guidance
    13.5 / -13.5 in this project's form are the reference's values with Perp-Neg on (Perp-Neg is an option of
    the prior); without Perp-Neg the reference guides with eps_c + s (eps_c - eps_u), s = 7.5 / -7.5, which is
    8.5 / -6.5 here. The reference optimises a NeRF: this preset runs on Gaussians, so its NeRF
    regularisers map to what a Gaussian render has (sparsity [0.15 -> 0 by
    30%] and opacity entropy 0.1 as threestudio's opaque loss); orientation, convexity and z-variance need
    normals or per-ray depth variance and are left out."""
    guidance, inversion = (13.5, -13.5) if perp_neg else (8.5, -6.5)
    return _jsd_job(prior, "jsd", False, guidance, inversion)


def jsd_surroundings_job(prior: PriorConfig, perp_neg: bool = True) -> JobConfig:
    """The "surroundings" variant of `jsd`: random solid backgrounds with probability 0.5. The reference also
    learns an environment map behind the object (a 4-level hash grid); the engine composites only solid
    colours, so that part is missing until a learned background module exists."""
    guidance, inversion = (13.5, -13.5) if perp_neg else (8.5, -6.5)
    return _jsd_job(prior, "jsd-surroundings", True, guidance, inversion)


def _jsd_quick(name: str, random_background_prob: float) -> JobConfig:
    return JobConfig(
        prompt="a blue mug",
        preset=name,
        stages=[StageConfig(
            name="jsd",
            steps=1200,
            prior=ReferencePriorConfig(view_conditioning="prompt"),
            method=JSDConfig(guidance_scale=3.0, inversion_guidance_scale=-3.0, inversion_steps=5,
                             inversion_eta=0.3, inversion_jitter=100, k=1.0, warmup=0.0, t_min=0.25, t_max=0.98,
                             t_sampling="linear", shared_t=True, reduction="mean"),
            representation=_quick_gaussians(),
            background="white",
            random_background_prob=random_background_prob,
            camera=reference_cameras(views=4, resolution=64),
            regularisers=RegularisersConfig(),
        )],
        output=_quick_output(),
    )


def jsd_quick() -> JobConfig:
    """JSD on the reference prior: the demo's Gaussians and 4 views, t 980 -> 250, a 5-level inversion grid (the
    reference has 10; halved for the CPU), guidance 3 / -3, white background. The NeRF regularisers of `jsd`
    are off (they are tuned for a density field, and the quick recipe keeps only the update rule)."""
    return _jsd_quick("jsd-quick", 0.0)


def jsd_surroundings_quick() -> JobConfig:
    """jsd-quick with random solid backgrounds half of the time (the learned environment map is missing)."""
    return _jsd_quick("jsd-surroundings-quick", 0.5)


def _stabledreamer_stages(pixel_prior: PriorConfig, latent_prior: PriorConfig, steps: int, quick: bool
                          ) -> list[StageConfig]:
    half = steps // 2
    regs = RegularisersConfig(mean_scale=1.0, tv_rgb=1.0, opacity_sparsity=0.01)
    if quick:
        cams1 = reference_cameras(views=4, resolution=64)
        cams2 = reference_cameras(views=4, resolution=64)
        rep1 = _quick_gaussians()
        rep2 = _quick_gaussians(position_lr=5e-4, position_lr_final=2e-4)
        cfg1, cfg2 = 3.0, 3.0
    else:
        cams1 = CameraConfig(elevation_range=[-10.0, 45.0], distance_range=[1.5, 2.0], fovy_range=[40.0, 70.0],
                             views=4, resolution=64)
        cams2 = CameraConfig(elevation_range=[-10.0, 45.0], distance_range=[1.5, 2.0], fovy_range=[40.0, 70.0],
                             views=4, resolution=512)
        rep1 = GaussiansConfig(init="ball", init_count=20_000, init_radius=0.5, max_count=500_000)
        rep2 = GaussiansConfig(init="ball", init_count=20_000, init_radius=0.5, max_count=500_000,
                               position_lr=4e-4, position_lr_final=1.6e-5)
        cfg1, cfg2 = 21.0, 100.0
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


def stabledreamer_job(pixel_prior: PriorConfig, latent_prior: PriorConfig) -> JobConfig:
    """StableDreamer (METHODS.md §2.7): SDS as L2 to the denoised image (w_L2 = alpha_t sigma_t), anisotropic
    Gaussians, stage 1 on a pixel prior (IF stage I, 64^2, guidance 21, shrinking-uniform t 0.98 -> 0.5) then
    stage 2 on a latent prior (SD 2.1-base, 512^2, guidance 100, t falling 500 -> 20), half the steps each, a
    lower position learning rate in stage 2. The paper publishes no numbers: all are inferred."""
    return JobConfig(prompt="a blue mug", preset="stabledreamer",
                     stages=_stabledreamer_stages(pixel_prior, latent_prior, 4000, quick=False),
                     output=OutputConfig(preview_every=250, snapshot_every=100, checkpoint_every=500))


def stabledreamer_quick() -> JobConfig:
    """StableDreamer's two stages on the reference prior (its pixel space stands in for both the pixel prior of
    stage 1 and the latent prior of stage 2, so the stages differ in their timestep annealing and position
    learning rate): 600 + 600 steps with the CPU demo's Gaussians and cameras."""
    prior = ReferencePriorConfig(view_conditioning="prompt")
    return JobConfig(prompt="a blue mug", preset="stabledreamer-quick",
                     stages=_stabledreamer_stages(prior, copy.deepcopy(prior), 1200, quick=True),
                     output=_quick_output())
def gaussian_sds() -> JobConfig:
    """SDS on 3D Gaussians with Stable Diffusion 2.1-base (GaussianDreamer's guidance, METHODS.md §2.1):
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
                guidance_scale=project_guidance_scale(*REFERENCE_GUIDANCE["gaussian-sds"][:2]),
                weighting="sds", t_min=0.02, t_max=[500 / steps, 0.98, 0.55, 501 / steps],
                grad_clip=[0.0, 1.5, 2.0, 1000 / steps]),
            representation=GaussiansConfig(init="ball", init_count=4096, init_radius=0.5),
            camera=CameraConfig(views=4, resolution=512),
        )],
        output=OutputConfig(preview_every=100, snapshot_every=50, checkpoint_every=200),
    )


def _reference_quick(preset: str, method: object, steps: int | None = None) -> JobConfig:
    """A method on the reference prior with the CPU demo's tuned representation, cameras and budget."""
    cfg = gaussian_sds_quick()
    cfg.preset = preset
    cfg.stages[0].method = method  # type: ignore[assignment]
    if steps is not None:
        cfg = cfg.with_total_steps(steps)
    return cfg


def _vsd_stage(method: VSDConfig, steps: int) -> StageConfig:
    """ProlificDreamer's stage 1 settings (METHODS.md §2.2 (c)) on 3D Gaussians: SD 2.1-base prior in fp16,
    CFG 7.5, t_max 0.98 -> 0.5 at step 5000 of 25000, 30/30 degree view buckets, render 64 -> 512 px at step
    5000, one view per step, AdamW (0.9, 0.99), wd 0.01 on the representation, LoRA + camera MLP at 1e-4."""
    return StageConfig(
        name="vsd",
        steps=steps,
        prior=StableDiffusionPriorConfig(view_prompts=True, front_threshold=30.0, back_threshold=30.0),
        method=method,
        representation=GaussiansConfig(init="ball", init_count=4096, init_radius=0.5),
        camera=CameraConfig(views=1, resolution=64, resolution_final=512, resolution_switch=5000 / steps),
        optim=OptimConfig(optimizer="adamw", betas=[0.9, 0.99], eps=1e-15, weight_decay=0.01),
    )


def prolificdreamer() -> JobConfig:
    steps = 25000
    method = VSDConfig(guidance_scale=project_guidance_scale(*REFERENCE_GUIDANCE["prolificdreamer"][:2]),
                       weighting="sds", t_min=0.02, t_max=[5000 / steps, 0.98, 0.5, 5001 / steps],
                       particle_model="stabilityai/stable-diffusion-2-1", lora_lr=1e-4, lora_weight_decay=0.01)
    return JobConfig(prompt="a DSLR photo of a blue ceramic mug", preset="prolificdreamer",
                     stages=[_vsd_stage(method, steps)],
                     output=OutputConfig(preview_every=500, snapshot_every=250, checkpoint_every=1000))


def esd() -> JobConfig:
    steps = 25000
    method = ESDConfig(guidance_scale=project_guidance_scale(*REFERENCE_GUIDANCE["esd"][:2]),
                       guidance_scale_lora=0.5, weighting="sds", t_min=0.02,
                       t_max=[5000 / steps, 0.98, 0.5, 5001 / steps],
                       particle_model="stabilityai/stable-diffusion-2-1", lora_lr=1e-4, lora_weight_decay=0.01)
    return JobConfig(prompt="a DSLR photo of a blue ceramic mug", preset="esd", stages=[_vsd_stage(method, steps)],
                     output=OutputConfig(preview_every=500, snapshot_every=250, checkpoint_every=1000))


def asd() -> JobConfig:
    """Official ASD's 3DGS config (METHODS.md §2.6): fp32 weights, Perp-Neg on the prior, CFG 7.5,
    w = sigma/alpha, t_max 0.5, asd weight 0.1, 32000 steps, 2 views at 512 px. Its Shap-E initialisation is not
    available: the cloud starts as a ball."""
    steps = 32000
    method = ASDConfig(guidance_scale=project_guidance_scale(*REFERENCE_GUIDANCE["asd"][:2]),
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


# The quick variants keep the CPU demo's tuned guidance (3 on the exact reference prior, docs/RESULTS.md).
QUICK_GUIDANCE = 3.0


def prolificdreamer_quick() -> JobConfig:
    return _reference_quick("prolificdreamer-quick", VSDConfig(
        guidance_scale=QUICK_GUIDANCE, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8]))


def esd_quick() -> JobConfig:
    return _reference_quick("esd-quick", ESDConfig(
        guidance_scale=QUICK_GUIDANCE, guidance_scale_lora=0.5, weighting="sds", t_min=0.02,
        t_max=[0.0, 0.98, 0.4, 0.8]))


def asd_quick() -> JobConfig:
    return _reference_quick("asd-quick", ASDConfig(
        guidance_scale=QUICK_GUIDANCE, gamma=-0.75, weighting="sds", t_min=0.02, t_max=[0.0, 0.98, 0.4, 0.8]))


_NEEDS_NERF = ("ProlificDreamer's NeRF stage 1 and its DMTet geometry/texture stages arrive with the NeRF/DMTet "
               "work; this preset runs the VSD stage on 3D Gaussians with stage 1's settings.")
_ASD_UNCERTAIN = ("Official ASD loss with gamma = -0.75 from its configs; the JSD paper's ASD diversity config was "
                  "never published, so whether it used these settings is unverified (METHODS.md §2.6).")


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
        Preset("luciddreamer-quick", "ISM (LucidDreamer) on 3D Gaussians with the reference prior (CPU, minutes)",
               "LucidDreamer's interval score matching (METHODS.md §2.4) on 3DGS (§3.1)", False,
               luciddreamer_quick),
        Preset("jsd-quick", "JSD on 3D Gaussians with the reference prior (CPU, minutes)",
               "jsddreamer's public code (METHODS.md §2.5), its bugs fixed", False, jsd_quick),
        Preset("jsd-surroundings-quick", "jsd-quick with random solid backgrounds half of the time (the surroundings "
               "variant)", "jsddreamer's surroundings config (METHODS.md §2.5)", False,
               jsd_surroundings_quick),
        Preset("stabledreamer-quick", "StableDreamer's L2-to-denoised SDS in two annealed stages, both on the "
               "reference prior (CPU, minutes)", "StableDreamer (METHODS.md §2.7), numbers inferred", False,
               stabledreamer_quick),
        *_full_presets(),
        Preset("gaussian-sds", "SDS on 3D Gaussians with Stable Diffusion 2.1-base (GPU, about 10 GB, estimated)",
               "GaussianDreamer's SDS guidance (METHODS.md §2.1): CFG 100 (T) = 101", True, gaussian_sds,
               "GaussianDreamer's Shap-E initialisation is not available; the cloud starts as a ball."),
        Preset("prolificdreamer", "VSD with a LoRA particle model on SD 2.1 (GPU, about 12 GB, estimated)",
               "ProlificDreamer stage 1 (METHODS.md §2.2), threestudio's config", True, prolificdreamer,
               _NEEDS_NERF),
        Preset("prolificdreamer-quick", "VSD on 3D Gaussians with the reference prior (CPU, minutes)",
               "VSD (METHODS.md §2.2) with the reference prior's residual particle model", False,
               prolificdreamer_quick),
        Preset("esd", "Entropic score distillation, lambda 0.5 (GPU, about 12 GB est.)",
               "ESD (METHODS.md §2.3) on ProlificDreamer's stage-1 settings", True, esd,
               "ESD's NeRF/mesh stages arrive with the NeRF/DMTet work; this preset runs on 3D Gaussians."),
        Preset("esd-quick", "ESD (lambda 0.5) on 3D Gaussians with the reference prior (CPU, minutes)",
               "ESD (METHODS.md §2.3) with the reference prior's residual particle model", False, esd_quick),
        Preset("asd", "Adversarial score distillation, official 3DGS config (GPU, fp32, about 30 GB est.)",
               "Official ASD (METHODS.md §2.6)", True, asd, _ASD_UNCERTAIN),
        Preset("asd-quick", "ASD on 3D Gaussians with the reference prior (CPU, minutes)",
               "Official ASD loss (METHODS.md §2.6) with the reference prior's residual particle model", False,
               asd_quick, _ASD_UNCERTAIN),
    ]
}

# Full presets on the real priors, registered once their prior configs exist.
if "stable-diffusion" in PRIOR_CONFIGS:
    _SD = PRIOR_CONFIGS["stable-diffusion"]
    PRESETS["luciddreamer"] = Preset(
        "luciddreamer", "ISM (LucidDreamer) on 3D Gaussians with Stable Diffusion (GPU)",
        "LucidDreamer (METHODS.md §2.4, §3.1, §4)", True, lambda: luciddreamer_job(_SD()))
    PRESETS["jsd"] = Preset(
        "jsd", "JSD on 3D Gaussians with Stable Diffusion (GPU)",
        "jsddreamer's public code (METHODS.md §2.5), its bugs fixed", True,
        lambda: jsd_job(_SD(), perp_neg=False))
    PRESETS["jsd-surroundings"] = Preset(
        "jsd-surroundings", "jsd with random solid backgrounds half of the time (GPU)",
        "jsddreamer's surroundings config (METHODS.md §2.5)", True,
        lambda: jsd_surroundings_job(_SD(), perp_neg=False))
    if "deepfloyd-if" in PRIOR_CONFIGS:
        _IF = PRIOR_CONFIGS["deepfloyd-if"]
        PRESETS["stabledreamer"] = Preset(
            "stabledreamer", "StableDreamer: DeepFloyd IF stage then Stable Diffusion stage on 3D Gaussians (GPU)",
            "StableDreamer (METHODS.md §2.7), numbers inferred", True, lambda: stabledreamer_job(_IF(), _SD()))


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
