"""What every preset module shares: the Preset record, the guidance-scale conversion, and the building blocks of
the quick variants (the CPU demo's Gaussians, cameras, NeRF field and output cadence)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backend.config import (
    CameraConfig,
    GaussiansConfig,
    JobConfig,
    MethodConfig,
    NeRFConfig,
    OutputConfig,
    ReferencePriorConfig,
    RegularisersConfig,
    StableDiffusionPriorConfig,
    StageConfig,
)

# The reference prior's quick variants generate this; the full presets use a prompt a real prior knows well.
QUICK_PROMPT = "a blue mug"

# The quick variants keep the CPU demo's tuned guidance (3 on the exact reference prior, docs/RESULTS.md).
QUICK_GUIDANCE = 3.0


@dataclass(frozen=True)
class Preset:
    """One named preset: `build()` returns its complete JobConfig."""

    name: str
    summary: str  # one line shown by `distillery presets` and in the add-on's preset menu
    source: str  # the paper / reference implementation and the docs/METHODS.md sections it follows
    needs_gpu: bool
    build: Callable[[], JobConfig]
    notes: str = ""  # caveats shown by `distillery presets NAME` (deviations, stages still missing, uncertainty)
    # The published guidance scale, its CFG form and where it comes from (full presets only); the first stage's
    # method.guidance_scale is project_guidance_scale(value, form) (tests/backend/test_presets_guidance.py).
    reference_guidance: tuple[float, str, str] | None = None


# ---------------------------------------------------------------------------------------------- guidance scales

# The project's one CFG form is (D): eps_u + s (eps_c - eps_u). threestudio's SD/IF SDS guidance uses (T):
# eps_c + s (eps_c - eps_u), which is (D) with s + 1 (docs/METHODS.md §1.2).
CFG_FORMS = ("D", "T")


def project_guidance_scale(value: float, form: str) -> float:
    """A reference implementation's guidance scale in the project's (D) form: s_D = s_T + 1."""
    if form not in CFG_FORMS:
        raise ValueError(f"form must be one of {CFG_FORMS}, got {form!r}")
    return float(value) + 1.0 if form == "T" else float(value)


# ---------------------------------------------------------------------------------------------- building blocks


def reference_cameras(views: int = 4, resolution: int = 64) -> CameraConfig:
    """Cameras that frame objects the way the reference prior's references do (distance 2, fovy 40)."""
    from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY

    return CameraConfig(
        elevation_range=[-10.0, 60.0], azimuth_range=[-180.0, 180.0],
        distance_range=[REFERENCE_DISTANCE, REFERENCE_DISTANCE], fovy_range=[REFERENCE_FOVY, REFERENCE_FOVY],
        elevation_sampling="uniform_angle", views=views, resolution=resolution,
    )


def quick_gaussians(**changes: float) -> GaussiansConfig:
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


def quick_field(**overrides: object) -> dict:
    """Field settings (FieldConfig) of the quick NeRF/DMTet variants: a small hash grid over [-1, 1]^3 (the
    reference objects fit in radius 0.5), coarse ray marching, albedo shading only (the reference prior's
    lighting is fixed in the world, so view-independent colour reproduces it), no normals."""
    field = dict(radius=1.0, grid_levels=6, grid_features=2, grid_log2_table=16, grid_base_resolution=16,
                 grid_scale=1.5, grid_start_levels=4, grid_grow_from=0.1, grid_grow_every=100, hidden=32,
                 samples_per_diagonal=128, occupancy_resolution=32, normals="none", albedo_until=1.0,
                 field_lr=0.01)
    field.update(overrides)
    return field


def quick_nerf() -> NeRFConfig:
    """The quick variants' NeRF: the quick field, meshed at 128^3 (snapshots at 48^3) at the auto level."""
    return NeRFConfig(**quick_field(), export_resolution=128, snapshot_resolution=48, export_threshold=0.0)


def quick_output() -> OutputConfig:
    """The quick variants' cadence: a preview every 200 steps, a snapshot every 100, a 24-frame turntable."""
    return OutputConfig(preview_every=200, snapshot_every=100, checkpoint_every=200, turntable_frames=24)


def quick_gaussians_stage(name: str, method: MethodConfig) -> StageConfig:
    """The CPU demo's stage (gaussian-sds-quick) with another update rule: 1200 steps, the demo's Gaussians,
    4 reference cameras at 64 px, white background randomised half of the time."""
    return StageConfig(
        name=name,
        steps=1200,
        prior=ReferencePriorConfig(view_conditioning="prompt"),
        method=method,
        representation=quick_gaussians(),
        renderer="auto",
        background="white",
        random_background_prob=0.5,
        camera=reference_cameras(views=4, resolution=64),
        regularisers=RegularisersConfig(),
    )


def sd_prior(**fields: object) -> StableDiffusionPriorConfig:
    """Stable Diffusion 2.1-base (the full presets' latent prior, docs/METHODS.md §2.1), with changes."""
    prior = StableDiffusionPriorConfig()
    for k, v in fields.items():
        setattr(prior, k, v)
    return prior
