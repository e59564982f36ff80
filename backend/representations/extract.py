"""Mesh extraction from a field (docs/METHODS.md §3.4): marching cubes on a NeRF's density, colours per vertex or baked
into a UV texture (xatlas). The files are written by io/mesh_export.py.

NeRF: the density is sampled on a resolution^3 grid over the field's cube and PyMCubes extracts the level
`export_threshold` (0 = auto, the mean density above 1e-5). With `clean`, the mesh is extracted again on the
tight box of the first one (grown by 5%) at the same resolution, and connected components with fewer than 1% of
the largest one's faces are dropped. Faces are wound counter-clockwise seen from outside.

UV texture: xatlas charts the mesh; each texel's world position comes from rasterising the UV layout with the
project's rasteriser; the field's albedo is queried there; empty texels are filled from their neighbours a few
rings outwards so that bilinear lookups at chart borders do not bleed black.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from backend.io.mesh_export import ExportMesh
from backend.representations.field import auto_threshold

SMALL_COMPONENT = 0.01  # components below this share of the largest one's faces are dropped
TEXTURE_FILL_RINGS = 4


def _density_grid(field: Any, lo: np.ndarray, hi: np.ndarray, resolution: int, device: torch.device) -> np.ndarray:
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=device) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    with torch.no_grad():
        sigma = torch.cat([field.density(c) for c in grid.split(1 << 16)])
    return sigma.view(resolution, resolution, resolution).cpu().numpy().astype(np.float64)


def _marching_cubes(density: np.ndarray, level: float, lo: np.ndarray, hi: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    import mcubes

    if not (density.min() < level < density.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    v, f = mcubes.marching_cubes(density, level)
    res = np.array(density.shape, dtype=np.float64) - 1
    v = lo + v / res * (hi - lo)
    f = f.astype(np.int64)
    mesh = ExportMesh(v.astype(np.float32), f, np.zeros_like(v, dtype=np.float32))
    if mesh.volume() < 0:  # the density rises inwards; wind the faces outwards whatever the library's convention
        f = f[:, [0, 2, 1]]
    return v.astype(np.float32), f


def _drop_small_components(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    if not f.size:
        return v, f
    mesh = trimesh.Trimesh(v, f, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(f))
    sizes = np.bincount(labels)
    keep = sizes[labels] >= SMALL_COMPONENT * sizes.max()
    f = f[keep]
    used = np.unique(f)
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def extract_nerf_mesh(nerf: Any, resolution: int, clean: bool = False, threshold: float | None = None
                      ) -> ExportMesh:
    """Marching cubes on the NeRF's density (see the module docstring), albedo per vertex."""
    device = nerf.field.encoding.table.device
    R = nerf.radius
    lo, hi = np.full(3, -R), np.full(3, R)
    density = _density_grid(nerf.field, lo, hi, resolution, device)
    level = threshold if threshold is not None else nerf.cfg.export_threshold
    if not level:
        level = auto_threshold(torch.from_numpy(density))
    v, f = _marching_cubes(density, level, lo, hi)
    if clean and f.size:
        span = v.max(0) - v.min(0)
        lo2 = np.maximum(v.min(0) - 0.05 * span - 2 * R / resolution, -R)
        hi2 = np.minimum(v.max(0) + 0.05 * span + 2 * R / resolution, R)
        v, f = _marching_cubes(_density_grid(nerf.field, lo2, hi2, resolution, device), level, lo2, hi2)
        v, f = _drop_small_components(v, f)
    with torch.no_grad():
        colours = (nerf.field.albedo(torch.from_numpy(v).to(device)).cpu().numpy() if len(v)
                   else np.zeros((0, 3), np.float32))
    mesh = ExportMesh(v.astype(np.float32), f, colours.astype(np.float32))
    if getattr(nerf.cfg, "export_texture", "vertex") == "uv" and f.size:
        mesh = bake_uv_texture(mesh, nerf.field.albedo, nerf.cfg.texture_size, device)
    return mesh


def bake_uv_texture(mesh: ExportMesh, albedo_fn: Any, size: int, device: torch.device | str = "cpu") -> ExportMesh:
    """Chart the mesh with xatlas and bake `albedo_fn(points [N, 3]) -> [N, 3]` into a size x size texture."""
    import xatlas

    from backend.core.cameras import Cameras
    from backend.renderers.mesh_torch import interpolate, rasterize

    vmap, faces, uv = xatlas.parametrize(mesh.vertices, mesh.faces.astype(np.uint32))
    vertices = mesh.vertices[vmap]
    # Rasterise the UV layout: a pinhole camera at the origin looking at the plane z = 1, where pixel (u, v)
    # of the texture sits at (u / size, v / size, 1) with f = size and no principal offset.
    uvt = torch.from_numpy(uv.astype(np.float32))
    flat = torch.cat([uvt, torch.ones(len(uvt), 1)], dim=1).to(device)
    K = torch.tensor([[float(size), 0, 0], [0, float(size), 0], [0, 0, 1]], device=device)[None]
    z = torch.zeros(1, device=device)
    cam = Cameras(torch.eye(4, device=device)[None], K, size, size, z, z, z + 1, z + 1)
    f_t = torch.from_numpy(faces.astype(np.int64)).to(device)
    rast = rasterize(flat, f_t, cam)
    pos = interpolate(torch.from_numpy(vertices).to(device), rast, f_t)[0]  # [S, S, 3]
    covered = rast.mask[0]
    tex = torch.zeros(size, size, 3, device=device)
    with torch.no_grad():
        tex[covered] = torch.cat([albedo_fn(c) for c in pos[covered].split(1 << 16)])
    tex, filled = tex.cpu().numpy(), covered.cpu().numpy()
    for _ in range(TEXTURE_FILL_RINGS):  # grow charts outwards by one texel per ring
        acc = np.zeros_like(tex)
        cnt = np.zeros(filled.shape, np.float32)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            acc += np.roll(tex * filled[..., None], (dy, dx), axis=(0, 1))
            cnt += np.roll(filled, (dy, dx), axis=(0, 1))
        grow = ~filled & (cnt > 0)
        tex[grow] = acc[grow] / cnt[grow, None]
        filled = filled | grow
    colours = mesh.colours[vmap]
    # Row r of `tex` holds v = (r + 1/2) / size: row 0 is v = 0 (write_glb flips it for trimesh's convention).
    return ExportMesh(vertices.astype(np.float32), faces.astype(np.int64), colours, uv.astype(np.float32), tex)
