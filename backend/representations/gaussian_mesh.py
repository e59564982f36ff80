"""3D Gaussians -> a textured triangle mesh (docs/MESH.md).

1. Density. On a grid of cubic voxels over the Gaussians' bounding box (`resolution` cells along its longest
   side), d(x) = sum_i o_i exp(-1/2 (x - mu_i)^T Sigma_i^-1 (x - mu_i)): every Gaussian's own covariance, weighted
   by its opacity, so d is 1 at the centre of a lone opaque Gaussian. Each Gaussian only touches the voxels in
   the axis-aligned box of its 3-sigma ellipsoid (half-width 3 sqrt(Sigma_kk) along axis k); the
   (Gaussian, voxel) pairs are enumerated with index arithmetic in bounded chunks, like the mesh rasteriser's
   (triangle, pixel) pairs, and summed with index_add.
2. Surface. Marching cubes (PyMCubes) at `level`, faces wound outwards, quadric decimation
   (fast-simplification) to `faces` triangles, then connected components below 1% of the largest dropped
   (floaters).
3. UV atlas. xatlas charts the mesh; rasterising the UV layout gives every texel its surface point and face.
4. Texture. The Gaussians are rendered from `views` cameras spread over the sphere (a Fibonacci lattice) around
   the mesh. Each texel's surface point is projected into every view; where the mesh's own depth buffer says
   it is the visible surface and it faces the camera, the render's colour there (un-premultiplied, bilinear)
   is added with weight cos^2 of the viewing angle. Texels no view saw (deep concavities) take the colour of
   the nearest opaque Gaussian; texels outside the charts are filled a few rings outwards so bilinear lookups
   at chart borders do not bleed.

The mesh's vertex colours are the texture sampled at each vertex, so the mesh PLY and vertex-colour viewers
show the same colours.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backend.config import MeshConversionConfig
from backend.core.cameras import Cameras, orbit_cameras
from backend.core.rotations import quat_to_rotmat
from backend.io.mesh_export import ExportMesh
from backend.renderers.base import GaussianCloud
from backend.renderers.mesh_torch import interpolate, rasterize
from backend.representations.extract import _drop_small_components, _marching_cubes
from backend.representations.gaussians import SH_C0

KERNEL_SIGMAS = 3.0  # a Gaussian's kernel is cut off outside its 3-sigma ellipsoid's bounding box
FILTER_VOXELS = 0.5  # std of the prefilter added to every kernel, in voxels
CHUNK_PAIRS = 1 << 21  # (Gaussian, voxel) pairs evaluated at once (~100 MB of temporaries)
VIEW_BATCH = 4  # views rendered at once while baking
FOV_DEG = 40.0
MIN_ALPHA = 0.5  # a render pixel counts as showing the surface above this opacity
MIN_COSINE = 0.1  # views this close to grazing do not colour a texel
FILL_RINGS = 4

ProgressFn = Callable[[str], None]


def _covariances(cloud: GaussianCloud) -> Tensor:
    """Covariances [N, 3, 3] = R S^2 R^T."""
    R = quat_to_rotmat(cloud.quats.detach())  # [N, 3, 3]
    s = cloud.scales.detach().clamp_min(1e-7)
    return R @ torch.diag_embed(s * s) @ R.transpose(1, 2)


def _half_widths(cov: Tensor) -> Tensor:
    """[N, 3] half-widths of the axis-aligned boxes of the KERNEL_SIGMAS ellipsoids."""
    return KERNEL_SIGMAS * torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0).sqrt()


def _kept(cloud: GaussianCloud, min_opacity: float) -> Tensor:
    """Indices [K] of the Gaussians opaque enough to count."""
    return torch.nonzero(cloud.opacities.detach() >= min_opacity).squeeze(1)


@torch.no_grad()
def density_grid(cloud: GaussianCloud, resolution: int, min_opacity: float = 0.02
                 ) -> tuple[Tensor, np.ndarray, float]:
    """(density [D0, D1, D2] float32 on the cloud's device, lo [3] world position of voxel (0, 0, 0), voxel
    size h). Voxel (i, j, k) sits at lo + h (i, j, k); the grid spans the kept Gaussians' 3-sigma boxes plus one
    voxel, with `resolution` cells along the longest side. Empty cloud: a 2^3 grid of zeros."""
    keep = _kept(cloud, min_opacity)
    dev = cloud.means.device
    if keep.numel() == 0:
        return torch.zeros(2, 2, 2, device=dev), np.zeros(3), 1.0
    mu = cloud.means.detach()[keep].float()
    op = cloud.opacities.detach()[keep].float()
    cov = _covariances(cloud)[keep].float()
    half = _half_widths(cov)
    h = max(float(((mu + half).amax(0) - (mu - half).amin(0)).max()) / resolution, 1e-6)
    # Prefilter for the grid: every kernel widened by a Gaussian of std FILTER_VOXELS voxels (as the splat
    # renderer dilates every 2D footprint), so Gaussians smaller than a voxel still reach the voxel centres
    # around them instead of falling between them and leaving holes in thin walls.
    cov = cov + (FILTER_VOXELS * h) ** 2 * torch.eye(3, device=dev)
    inv = torch.linalg.inv(cov)
    half = _half_widths(cov)
    box_lo = (mu - half).amin(0)
    box_hi = (mu + half).amax(0)
    lo = box_lo - h
    dims = torch.ceil((box_hi + h - lo) / h).long() + 1  # [3]
    D0, D1, D2 = (int(d) for d in dims)
    grid = torch.zeros(D0 * D1 * D2, device=dev)

    # Voxel index range of each Gaussian's box, clamped to the grid.
    i0 = torch.ceil((mu - half - lo) / h).long().clamp_min(0)
    i1 = torch.minimum(torch.floor((mu + half - lo) / h).long(), dims.to(dev) - 1)
    n = (i1 - i0 + 1).clamp_min(0)  # [K, 3]
    counts = n[:, 0] * n[:, 1] * n[:, 2]
    ends = counts.cumsum(0)
    starts = ends - counts
    # Chunks of whole Gaussians holding at most ~CHUNK_PAIRS pairs (a bigger Gaussian gets its own).
    bounds = [0]
    while bounds[-1] < len(counts):
        s = bounds[-1]
        limit = starts[s] + max(CHUNK_PAIRS, int(counts[s]))
        bounds.append(max(s + 1, int(torch.searchsorted(ends, limit, right=True))))
    for s, e in itertools.pairwise(bounds):
        g = torch.repeat_interleave(torch.arange(s, e, device=dev), counts[s:e])  # [P] Gaussian of each pair
        if g.numel() == 0:
            continue
        local = torch.arange(g.numel(), device=dev) - (starts[g] - starts[s])
        ny, nz = n[g, 1], n[g, 2]
        iz = local % nz
        iy = torch.div(local, nz, rounding_mode="floor") % ny
        ix = torch.div(local, ny * nz, rounding_mode="floor")
        idx = i0[g] + torch.stack([ix, iy, iz], dim=1)  # [P, 3] voxel indices
        d = lo + idx.float() * h - mu[g]  # [P, 3] voxel centre - mean
        q = torch.einsum("pi,pij,pj->p", d, inv[g], d)
        val = op[g] * torch.exp(-0.5 * q)
        flat = (idx[:, 0] * D1 + idx[:, 1]) * D2 + idx[:, 2]
        grid.index_add_(0, flat, val)
    return grid.view(D0, D1, D2), lo.cpu().numpy().astype(np.float64), h


def extract_surface(cloud: GaussianCloud, cfg: MeshConversionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] float32 and faces [F, 3] int64 (counter-clockwise seen from outside) of the Gaussians'
    density at `cfg.level`: marching cubes, decimated to `cfg.faces`, small components dropped."""
    density, lo, h = density_grid(cloud, cfg.resolution, cfg.min_opacity)
    dens = density.cpu().numpy().astype(np.float64)
    hi = lo + h * (np.array(dens.shape, dtype=np.float64) - 1)
    v, f = _marching_cubes(dens, cfg.level, lo, hi)
    if not f.size:
        return v, f
    if cfg.faces and len(f) > cfg.faces:
        import fast_simplification

        v2, f2 = fast_simplification.simplify(v.astype(np.float32), f.astype(np.int64),
                                              target_reduction=1.0 - cfg.faces / len(f))
        if len(f2):
            v, f = np.asarray(v2, np.float32), np.asarray(f2, np.int64)
    v, f = _drop_small_components(v, f)  # after decimation: the same components, far fewer faces to label
    return v.astype(np.float32), f.astype(np.int64)


def _framing(vertices: np.ndarray, margin: float) -> tuple[np.ndarray, float]:
    """Centre [3] of the mesh's bounding box and the camera distance at which a FOV_DEG camera sees its bounding
    sphere with `margin`."""
    if not len(vertices):
        return np.zeros(3), 3.0
    centre = (vertices.min(0) + vertices.max(0)) / 2.0
    radius = max(float(np.linalg.norm(vertices - centre, axis=1).max()), 1e-3)
    return centre, radius / math.sin(math.radians(FOV_DEG / 2.0)) * margin


def _cameras_around(vertices: np.ndarray, elevation: list[float], azimuth: list[float], resolution: int,
                    margin: float) -> Cameras:
    centre, distance = _framing(vertices, margin)
    target = torch.tensor(centre, dtype=torch.float32).expand(len(elevation), 3)
    return orbit_cameras(elevation, azimuth, distance, FOV_DEG, resolution, eye_offset=target.clone(),
                         target=target)


def bake_cameras(vertices: np.ndarray, views: int, resolution: int) -> Cameras:
    """`views` cameras on a Fibonacci lattice over the sphere, all framing the mesh's bounding sphere."""
    k = np.arange(views, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * k / views  # uniform in height = uniform in area
    el = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0))).clip(-89.0, 89.0)
    az = np.degrees(k * math.pi * (3.0 - math.sqrt(5.0))) % 360.0  # the golden angle
    return _cameras_around(vertices, el.tolist(), az.tolist(), resolution, 1.05)


def ring_cameras(vertices: np.ndarray, elevations: list[float], azimuths: list[float], resolution: int
                 ) -> Cameras:
    """Cameras at every (elevation, azimuth) pair, framing the mesh with a 10% margin (previews, measurements)."""
    el = [e for e in elevations for _ in azimuths]
    az = [a for _ in elevations for a in azimuths]
    return _cameras_around(vertices, el, az, resolution, 1.1)


def _uv_layout(vertices: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                             Tensor, Tensor]:
    """xatlas charts: (vmap [V'], faces [F, 3], uv [V', 2], texel face id [S, S] (-1 outside charts),
    texel barycentrics [S, S, 3]). Row r of the texture holds v = (r + 1/2) / size, column c u = (c + 1/2)
    / size (write_glb flips rows for glTF)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = size  # pack for this texture size, with 2 texels between charts against bleeding
    pack.padding = 2
    atlas.generate(xatlas.ChartOptions(), pack)
    vmap, f_uv, uv = atlas[0]
    # The UV layout as seen by a pinhole camera at the origin looking at the plane z = 1, where texel (c, r)
    # sits at ((c + 1/2) / size, (r + 1/2) / size, 1): f = size, no principal offset.
    flat = torch.cat([torch.from_numpy(uv.astype(np.float32)), torch.ones(len(uv), 1)], dim=1)
    K = torch.tensor([[float(size), 0, 0], [0, float(size), 0], [0, 0, 1]])[None]
    z = torch.zeros(1)
    cam = Cameras(torch.eye(4)[None], K, size, size, z, z, z + 1, z + 1)
    rast = rasterize(flat, torch.from_numpy(f_uv.astype(np.int64)), cam)
    return vmap.astype(np.int64), f_uv.astype(np.int64), uv.astype(np.float32), rast.face_id[0], rast.bary[0]


@torch.no_grad()
def bake_texture(cloud: GaussianCloud, vertices: np.ndarray, faces: np.ndarray, cfg: MeshConversionConfig,
                 renderer: Any = None) -> ExportMesh:
    """UV-unwrap the mesh and bake the Gaussians' colours into a texture by back-projecting renders (see the
    module docstring). Returns the mesh with uv, texture and per-vertex colours."""
    from backend.renderers.gaussians_torch import TorchGaussianRenderer

    renderer = renderer or TorchGaussianRenderer()
    dev = cloud.means.device
    S = cfg.texture_size
    vmap, f_uv, uv, tex_face, tex_bary = _uv_layout(vertices, faces, S)
    verts = vertices[vmap]  # [V', 3] split along chart seams
    covered = (tex_face >= 0).view(-1)  # [S * S]
    cf = tex_face.view(-1)[covered]  # [T] face of each covered texel
    v_t = torch.from_numpy(verts).float()
    f_t = torch.from_numpy(f_uv)
    corners = v_t[f_t[cf]]  # [T, 3, 3]
    pts = torch.einsum("tk,tkd->td", tex_bary.view(-1, 3)[covered].float(), corners)  # [T, 3]
    fn = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    nrm = F.normalize(fn, dim=-1)  # [T, 3] outward face normals

    cams_all = bake_cameras(vertices, cfg.views, cfg.view_resolution)
    acc = torch.zeros(len(pts), 3)
    wsum = torch.zeros(len(pts))
    f_mesh = torch.from_numpy(faces)
    v_mesh = torch.from_numpy(vertices).float()
    H = W = cfg.view_resolution
    for start in range(0, len(cams_all), VIEW_BATCH):
        cams = cams_all[start:start + VIEW_BATCH]
        C = len(cams)
        out = renderer.render(cloud, cams.to(dev), torch.zeros(C, 3, device=dev))
        rgba = torch.cat([out.rgb, out.alpha], dim=-1).float().cpu()  # [C, H, W, 4] premultiplied (black bg)
        depth = rasterize(v_mesh, f_mesh, cams, cull_backfaces=True).depth  # [C, H, W], 0 = empty
        R = cams.world_to_cam[:, :3, :3]
        t = cams.world_to_cam[:, :3, 3]
        pc = torch.einsum("cij,tj->cti", R, pts) + t[:, None, :]  # [C, T, 3]
        zc = pc[..., 2].clamp_min(1e-6)
        u = cams.K[:, 0, 0, None] * pc[..., 0] / zc + cams.K[:, 0, 2, None]  # [C, T] pixel coordinates
        v = cams.K[:, 1, 1, None] * pc[..., 1] / zc + cams.K[:, 1, 2, None]
        px = u.floor().long().clamp(0, W - 1)
        py = v.floor().long().clamp(0, H - 1)
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        d_mesh = torch.gather(depth.view(C, -1), 1, py * W + px)  # [C, T]
        # Visible: the mesh's nearest surface at that pixel is this point (up to 1% of the depth).
        visible = inside & (d_mesh > 0) & (pc[..., 2] <= d_mesh * 1.01 + 1e-4)
        to_cam = F.normalize(cams.positions[:, None, :] - pts[None], dim=-1)  # [C, T, 3]
        cos = (to_cam * nrm[None]).sum(-1)
        grid = torch.stack([2.0 * u / W - 1.0, 2.0 * v / H - 1.0], dim=-1)[:, :, None, :]  # [C, T, 1, 2]
        samp = F.grid_sample(rgba.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[..., 0].permute(0, 2, 1)  # [C, T, 4]
        alpha = samp[..., 3]
        ok = visible & (cos > MIN_COSINE) & (alpha > MIN_ALPHA)
        w = torch.where(ok, cos * cos, torch.zeros_like(cos))  # [C, T]
        colour = samp[..., :3] / alpha.clamp_min(1e-6)[..., None]
        acc += (w[..., None] * colour).sum(0)
        wsum += w.sum(0)

    seen = wsum > 0
    col = torch.zeros(len(pts), 3)
    col[seen] = (acc[seen] / wsum[seen, None]).clamp(0, 1)
    if (~seen).any():
        col[~seen] = nearest_gaussian_colours(cloud, pts[~seen], cfg.min_opacity)
    tex = torch.zeros(S * S, 3)
    tex[covered] = col
    tex = _fill_outwards(tex.view(S, S, 3), covered.view(S, S), FILL_RINGS)
    # Vertex colours: the texture at each vertex's UV (nearest texel).
    cols = np.clip((uv * S).astype(np.int64), 0, S - 1)
    tex_np = tex.numpy()
    colours = tex_np[cols[:, 1], cols[:, 0]]
    return ExportMesh(verts.astype(np.float32), f_uv, colours.astype(np.float32), uv, tex_np.astype(np.float32))


def nearest_gaussian_colours(cloud: GaussianCloud, points: Tensor, min_opacity: float) -> Tensor:
    """[P, 3] view-independent colour (the SH DC term) of the nearest opaque Gaussian to each point [P, 3]."""
    from scipy.spatial import cKDTree  # scipy comes with PyMCubes

    keep = _kept(cloud, max(min_opacity, 0.1))
    if keep.numel() == 0:
        keep = torch.arange(cloud.means.shape[0], device=cloud.means.device)
    if keep.numel() == 0:
        return torch.full((len(points), 3), 0.5)
    mu = cloud.means.detach()[keep].float().cpu().numpy()
    rgb = (cloud.sh.detach()[keep, 0].float().cpu() * SH_C0 + 0.5).clamp(0, 1)
    _, nearest = cKDTree(mu).query(points.numpy(), k=1)
    return rgb[torch.from_numpy(np.asarray(nearest, dtype=np.int64))]


def _neighbour_sum(x: Tensor) -> Tensor:
    """Sum of the 4-neighbours of every texel of x [S, S, C] (zeros beyond the border)."""
    p = F.pad(x.permute(2, 0, 1), (1, 1, 1, 1)).permute(1, 2, 0)  # [S + 2, S + 2, C]
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def _fill_outwards(tex: Tensor, filled: Tensor, rings: int) -> Tensor:
    """Grow the charts `rings` texels outwards (each new texel the mean of its filled 4-neighbours), then
    give every texel still empty the mean chart colour. tex [S, S, 3], filled [S, S] bool."""
    tex = tex.clone()
    filled = filled.clone()
    for _ in range(rings):
        cnt = _neighbour_sum(filled.float()[..., None])[..., 0]
        sums = _neighbour_sum(tex * filled[..., None])
        grow = ~filled & (cnt > 0)
        tex[grow] = sums[grow] / cnt[grow, None]
        filled = filled | grow
    if filled.any() and (~filled).any():
        tex[~filled] = tex[filled].mean(0)
    return tex


def gaussians_to_mesh(cloud: GaussianCloud, cfg: MeshConversionConfig, renderer: Any = None,
                      progress: ProgressFn | None = None) -> ExportMesh:
    """The whole conversion (module docstring). An empty result (nothing opaque, or the level above every
    density) is a mesh with no faces."""
    say = progress or (lambda _msg: None)
    say("density and marching cubes")
    v, f = extract_surface(cloud, cfg)
    if not f.size:
        return ExportMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32))
    say("UV atlas and texture")
    return bake_texture(cloud, v, f, cfg, renderer)


def textured_render_fn(mesh: ExportMesh, supersample: int = 2) -> Callable[[Cameras, Tensor], tuple[Tensor, Tensor]]:
    """render_fn(cams, background [C, 3]) -> (rgb [C, H, W, 3], alpha [C, H, W, 1]) of a textured mesh, unlit,
    bilinear texture lookups, `supersample`x supersampled."""
    assert mesh.uv is not None and mesh.texture is not None, "the mesh has no texture"
    v = torch.from_numpy(mesh.vertices).float()
    f = torch.from_numpy(mesh.faces).long()
    uv = torch.from_numpy(mesh.uv).float()
    tex = torch.from_numpy(np.ascontiguousarray(mesh.texture)).float().permute(2, 0, 1)[None]  # [1, 3, S, S]

    def render(cams: Cameras, background: Tensor) -> tuple[Tensor, Tensor]:
        C, H, W = len(cams), cams.height, cams.width
        bg = background.float().cpu()
        if f.shape[0] == 0:
            return bg[:, None, None, :].expand(C, H, W, 3).clone(), torch.zeros(C, H, W, 1)
        hi = cams.to("cpu").resized(W * supersample, H * supersample)
        with torch.no_grad():
            rast = rasterize(v, f, hi)
            uvs = interpolate(uv, rast, f)  # [C, h, w, 2]
            grid = (2.0 * uvs - 1.0).view(1, -1, 1, 2)
            col = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
            col = col[0, :, :, 0].T.reshape(C, H * supersample, W * supersample, 3)
        cover = rast.mask[..., None].float()
        rgba = torch.cat([col * cover, cover], dim=-1).permute(0, 3, 1, 2)
        rgba = F.avg_pool2d(rgba, supersample).permute(0, 2, 3, 1)
        a = rgba[..., 3:]
        return rgba[..., :3] + (1.0 - a) * bg[:, None, None, :], a

    return render
