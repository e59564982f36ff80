"""The mesh renderer over nvdiffrast (CUDA): the same `render(rep, cams, background)` as
`renderers/mesh_torch.MeshRenderer`, with nvdiffrast's rasterize / interpolate / antialias in place of the
pure-torch primitives. Imported only when selected (renderer=nvdiffrast, or the dual renderer on CUDA), since
nvdiffrast compiles its CUDA kernels on first use and has no CPU path.

Conventions: positions go to clip space through `core/cameras.opencv_to_clip` (the one place that knows
OpenGL's conventions); nvdiffrast's output row 0 is NDC y = -1, which that matrix makes the top row, as in the
rest of the project. Its barycentrics (u, v) weigh a face's corners 0 and 1 (corner 2 gets 1 - u - v); its
triangle ids are offset by one (0 = empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from backend.core.cameras import Cameras, opencv_to_clip
from backend.renderers.mesh_torch import MeshRenderer

NEAR, FAR = 0.01, 100.0


@dataclass
class NvRaster:
    rast: Tensor  # [C, H, W, 4] (u, v, z/w, triangle id + 1)
    pos: Tensor  # [C, V, 4] clip-space positions (differentiable)
    tri: Tensor  # [F, 3] int32


class NvdiffrastMeshRenderer(MeshRenderer):
    name = "nvdiffrast"

    def __init__(self) -> None:
        import nvdiffrast.torch as dr  # imported only when this renderer is chosen

        self.dr = dr
        self.ctx: Any = None

    def _context(self, device: torch.device) -> Any:
        if self.ctx is None:
            self.ctx = self.dr.RasterizeCudaContext(device=device)
        return self.ctx

    def rasterize(self, verts: Tensor, faces: Tensor, cams: Cameras) -> NvRaster:
        mvp = opencv_to_clip(cams, NEAR, FAR).to(verts)  # [C, 4, 4]
        homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=1)  # [V, 4]
        pos = torch.einsum("cij,vj->cvi", mvp, homo).contiguous()
        tri = faces.to(torch.int32).contiguous()
        rast, _ = self.dr.rasterize(self._context(verts.device), pos, tri, (cams.height, cams.width))
        return NvRaster(rast, pos, tri)

    def interpolate(self, attr: Tensor, rast: NvRaster, faces: Tensor) -> Tensor:
        out, _ = self.dr.interpolate(attr[None].contiguous(), rast.rast, rast.tri)  # broadcast over views
        return out

    def mask(self, rast: NvRaster) -> Tensor:
        return rast.rast[..., 3] > 0

    def depth(self, rast: NvRaster, verts: Tensor, faces: Tensor, cams: Cameras) -> Tensor:
        # Camera z is clip w, which interpolates perspective-correctly like any attribute.
        w = rast.pos[..., 3:]  # [C, V, 1]
        out, _ = self.dr.interpolate(w.contiguous(), rast.rast, rast.tri)
        return out[..., 0]

    def antialias(self, image: Tensor, rast: NvRaster, verts: Tensor, faces: Tensor, cams: Cameras) -> Tensor:
        return self.dr.antialias(image.contiguous(), rast.rast, rast.pos, rast.tri)
