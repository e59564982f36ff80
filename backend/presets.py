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
    CameraConfig,
    GaussiansConfig,
    JobConfig,
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


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("gaussian-sds-quick", "SDS on 3D Gaussians with the embedded reference prior (CPU, minutes)",
               "DreamFusion's SDS (METHODS.md §2.1) on 3DGS (§3.1)", False, gaussian_sds_quick),
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
