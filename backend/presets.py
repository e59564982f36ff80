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
    ASDConfig,
    CameraConfig,
    ESDConfig,
    GaussiansConfig,
    JobConfig,
    OptimConfig,
    OutputConfig,
    ReferencePriorConfig,
    RegularisersConfig,
    SDSConfig,
    StableDiffusionPriorConfig,
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
