"""Rendering library meshes for the reference prior (and for the evaluation of test assets).

Shading is Lambertian with lights FIXED IN THE WORLD (a key light from above-front-left, a weaker fill from
the right-back, and ambient), so a surface point has the same colour from every view: a 3D representation
with view-independent colour (3D Gaussians with degree-0 SH, a vertex-coloured mesh) can reproduce the
references exactly. Edges are antialiased by rendering at `supersample` times the resolution and averaging
each block of pixels.

Outputs are float32 PREMULTIPLIED rgb [C, H, W, 3] (colour times coverage) and alpha [C, H, W, 1] in [0, 1];
`backend.core.image_ops.composite` puts them over a solid background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.core.cameras import Cameras
from backend.priors.reference.library import Mesh
from backend.renderers.mesh_torch import interpolate, rasterize

# Unit directions towards the lights (world frame) and their intensities.
LIGHTS: tuple[tuple[tuple[float, float, float], float], ...] = (
    ((-0.45, -0.6, 0.66), 0.62),  # key: above, front, left
    ((0.8, 0.45, 0.1), 0.25),  # fill: right, slightly behind
)
AMBIENT = 0.33
SUPERSAMPLE = 2
RENDER_SETTINGS = {"lights": LIGHTS, "ambient": AMBIENT, "supersample": SUPERSAMPLE, "shading": "lambert-v1"}


def shade(normals: Tensor, colours: Tensor) -> Tensor:
    """Lambertian colour [..., 3] for unit normals and albedo [..., 3] under the world-fixed lights."""
    light = torch.full_like(normals[..., :1], AMBIENT)
    for direction, intensity in LIGHTS:
        d = torch.tensor(direction, dtype=normals.dtype, device=normals.device)
        light = light + intensity * (normals @ (d / d.norm()))[..., None].clamp_min(0.0)
    return (colours * light).clamp(0.0, 1.0)


def render_mesh(mesh: Mesh, cams: Cameras, supersample: int = SUPERSAMPLE,
                views_per_batch: int = 48) -> tuple[Tensor, Tensor]:
    """Premultiplied rgb [C, H, W, 3] and alpha [C, H, W, 1] of a library mesh (closed, outward-wound, so
    back faces are culled)."""
    C, H, W = len(cams), cams.height, cams.width
    mesh = mesh.to(cams.device)
    hi = cams.resized(W * supersample, H * supersample)
    rgbs, alphas = [], []
    for s in range(0, C, views_per_batch):
        sub = hi[s:s + views_per_batch]
        with torch.no_grad():
            rast = rasterize(mesh.vertices, mesh.faces, sub, cull_backfaces=True)
            n = interpolate(mesh.normals, rast, mesh.faces)
            n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            col = interpolate(mesh.colours, rast, mesh.faces)
        cover = rast.mask[..., None].to(col.dtype)
        rgba = torch.cat([shade(n, col) * cover, cover], dim=-1)  # [c, sH, sW, 4], premultiplied
        rgba = F.avg_pool2d(rgba.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
        rgbs.append(rgba[..., :3])
        alphas.append(rgba[..., 3:])
    return torch.cat(rgbs), torch.cat(alphas)
