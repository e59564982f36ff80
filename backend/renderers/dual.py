"""Real3D's dual renderer (docs/METHODS.md §2.8): one field, drawn by volume rendering and as a DMTet mesh.

Views alternate: even views are volume-rendered at the representation's `implicit_resolution` and upsampled
bilinearly to the camera resolution; odd views are marching-tetrahedra meshes of the same field (SDF =
density - density_threshold) rasterised at the camera resolution. The implicit views' gradients are scaled by
the representation's current `implicit_weight` a(u) (1 early, falling to 0: implicit renders build geometry
first, explicit ones refine it later), which scales every loss on those views, SDS, adversarial and
regularisers alike. Once a(u) = 0 no volume render is made: every view is a mesh view.

The mesh half runs on nvdiffrast when the device is CUDA and nvdiffrast is installed, else in pure torch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput
from backend.renderers.mesh_torch import MeshRenderer
from backend.renderers.volume_torch import VolumeRenderer


def scale_grad(x: Tensor, a: float) -> Tensor:
    """x in the forward pass; a * gradient in the backward pass."""
    return x * a + (x * (1.0 - a)).detach()


def _upsample(x: Tensor, h: int, w: int) -> Tensor:
    """[C, h', w', D] -> [C, h, w, D], bilinear."""
    if x.shape[1:3] == (h, w):
        return x
    return F.interpolate(x.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


class DualRenderer:
    name = "dual"

    def __init__(self) -> None:
        self.volume = VolumeRenderer()
        self.mesh: Any = None

    def _mesh_renderer(self, device: torch.device) -> Any:
        if self.mesh is None:
            from backend.core.devices import kernel_status

            if device.type == "cuda" and kernel_status("nvdiffrast")[0]:
                from backend.renderers.mesh_nvdiffrast import NvdiffrastMeshRenderer

                self.mesh = NvdiffrastMeshRenderer()
            else:
                self.mesh = MeshRenderer()
        return self.mesh

    def render(self, rep: Any, cams: Cameras, background: Tensor) -> RenderOutput:
        C, H, W = len(cams), cams.height, cams.width
        dev = cams.device
        a = float(getattr(rep, "implicit_weight", 0.0))
        implicit = (torch.arange(C, device=dev) % 2 == 0) & (a > 0)
        imp, exp = implicit.nonzero()[:, 0], (~implicit).nonzero()[:, 0]
        rgb = torch.zeros(C, H, W, 3, device=dev)
        alpha = torch.zeros(C, H, W, 1, device=dev)
        depth = torch.zeros(C, H, W, 1, device=dev)
        normal = torch.zeros(C, H, W, 3, device=dev)
        aux: dict[str, Any] = {"volume_views": implicit, "implicit_weight": a}
        if exp.numel():
            out = self._mesh_renderer(dev).render(rep, cams[exp], background[exp])
            rgb, alpha = rgb.index_copy(0, exp, out.rgb), alpha.index_copy(0, exp, out.alpha)
            depth, normal = depth.index_copy(0, exp, out.depth), normal.index_copy(0, exp, out.normal)
            aux.update({k: out.aux[k] for k in ("normal_consistency", "laplacian", "faces")})
        if imp.numel():
            r = rep.cfg.implicit_resolution
            out = self.volume.render(rep, cams[imp].resized(r, r), background[imp])
            parts = [scale_grad(_upsample(t, H, W), a) for t in (out.rgb, out.alpha, out.depth, out.normal)]
            rgb, alpha = rgb.index_copy(0, imp, parts[0]), alpha.index_copy(0, imp, parts[1])
            depth, normal = depth.index_copy(0, imp, parts[2]), normal.index_copy(0, imp, parts[3])
            if "orientation" in out.aux:
                aux["orientation"] = scale_grad(out.aux["orientation"], a)
            aux["samples"] = out.aux["samples"]
        return RenderOutput(rgb, alpha, depth, normal, aux)
