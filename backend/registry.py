"""Explicit name -> "module:Class" tables, resolved lazily with importlib.

Nothing heavy (diffusers, gsplat) is imported until a job selects it. Config classes live in
`backend.config`; these tables name the implementations.
"""

from __future__ import annotations

import importlib
from typing import Any

PRIORS: dict[str, str] = {
    "reference": "backend.priors.reference.prior:ReferencePrior",
    "stable-diffusion": "backend.priors.stable_diffusion:StableDiffusionPrior",
    "deepfloyd-if": "backend.priors.deepfloyd_if:DeepFloydIFPrior",
}

METHODS: dict[str, str] = {
    "sds": "backend.methods.sds:SDS",
    "ism": "backend.methods.ism:ISM",
    "jsd": "backend.methods.jsd:JSD",
    "stabledreamer": "backend.methods.stabledreamer:StableDreamer",
    "vsd": "backend.methods.vsd:VSD",
    "esd": "backend.methods.esd:ESD",
    "asd": "backend.methods.asd:ASD",
}

REPRESENTATIONS: dict[str, str] = {
    "gaussians": "backend.representations.gaussians:Gaussians",
    "nerf": "backend.representations.nerf:NeRF",
    "dmtet": "backend.representations.dmtet:DMTet",
}

# (representation, renderer) -> implementation. The first entry per representation is the CPU twin.
RENDERERS: dict[tuple[str, str], str] = {
    ("gaussians", "torch"): "backend.renderers.gaussians_torch:TorchGaussianRenderer",
    ("gaussians", "gsplat"): "backend.renderers.gaussians_gsplat:GsplatGaussianRenderer",
    ("nerf", "torch"): "backend.renderers.volume_torch:VolumeRenderer",
    ("dmtet", "torch"): "backend.renderers.mesh_torch:MeshRenderer",
    ("dmtet", "nvdiffrast"): "backend.renderers.mesh_nvdiffrast:NvdiffrastMeshRenderer",
    ("dmtet", "dual"): "backend.renderers.dual:DualRenderer",
}


def resolve(table: dict[Any, str], name: Any) -> Any:
    """Import and return the object registered under `name`."""
    if name not in table:
        known = ", ".join(str(k) for k in table)
        raise KeyError(f"unknown name {name!r}; registered: {known}")
    module_name, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
