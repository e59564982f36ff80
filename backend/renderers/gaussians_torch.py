"""Pure-torch differentiable 3D Gaussian rasteriser: the CPU twin of gsplat's `rasterization()` ("classic").

Semantics (gsplat 1.5.3: `ProjectionEWA3DGSFused.cu`, `IntersectTile.cu`, `RasterizeToPixels3DGS*.cu`):

- Projection (EWA): mean_c = R mean + t; J is the perspective Jacobian at the mean, with x/z and y/z clamped
  to the image plus 0.3 tan(half-FOV) on each side (for J only); cov2d = J R Σ Rᵀ Jᵀ + eps2d I; conic = cov2d⁻¹.
- Radius: per axis ceil(e sqrt(cov2d_ii)) with the opacity-aware extent e = min(3.33, sqrt(2 ln(255 o))): the
  bounding box of the ellipse where alpha falls to 1/255. meta["radii"] is the larger of the two.
- Culled (radius 0): z outside [near, far], det(cov2d) <= 0, opacity < 1/255, both radii <= radius_clip, or a
  bounding box that misses the image.
- Per pixel (centre u + 0.5, v + 0.5), front to back by camera z: sigma = ½ dᵀ conic d, alpha = min(0.999,
  o exp(-sigma)), skipped when sigma < 0 or alpha < 1/255; the Gaussian that would bring the transmittance to
  <= 1e-4 and every later one are excluded; colour + T_final background; "ED" depth = Σ w z / alpha.

Algorithm. Nothing of size [N, H W] is ever built, and only the K (pixel, Gaussian) contributions that are
composited are carried:

1. Project every (camera, Gaussian) with differentiable tensor maths ([C, N] sized; cheap).
2. Without grad, bin visible Gaussians into the tiles their bounding box touches (like gsplat's isect_tiles):
   M (camera, tile, Gaussian) pairs sorted by (camera, tile), then front to back, with one stable sort.
3. Per chunk of whole tiles: a [P, M_chunk] matmul (P = tile_size²; each pair's log(alpha / threshold) is a
   quadratic in the pixel's offset from the tile centre) marks the candidates; `nonzero` lists them pixel-major,
   so each pixel's candidates are contiguous and in depth order. The exact alpha test and the transmittance
   cut-off (an exclusive segmented cumulative sum of log(1 - alpha), in float64) keep the K contributions
   gsplat composites; w = alpha T times [colour, depth, 1] is summed per pixel run (segment_reduce) and added
   to the image.
4. Backward (`_RasterizePixels.backward`): the closed-form gradient of front-to-back compositing, vectorised
   over the K contributions: dL/dalpha_k = T_k g_k - (Σ_{j behind k} w_j g_j) / (1 - alpha_k), with g the
   output gradient dotted with the contribution's channels and the sum a reversed segmented cumsum; then the
   chain rule to opacity, conic and means2d, scattered per (camera, Gaussian). It is the same maths as
   gsplat's backward kernel (including no gradient through the 0.999 clamp) and is checked against finite
   differences and against plain autograd of the same forward (`custom_backward=False`), which is about 1.5x
   slower on a 2-core CPU.

Memory: O(C N) for the projection, O(M) for the pairs, at most `_CHUNK_BUDGET` elements for one chunk's
candidate mask (a single tile with more candidates is a chunk of its own), and 32 bytes (float32) per
composited contribution saved for the backward; K = the (pixel, Gaussian) pairs the CUDA kernel composites.

`meta["means2d"]` [C, N, 2] (pixels) is the non-leaf tensor the pixel stage reads; when grad is enabled it
retains its gradient, which (as in gsplat) excludes the paths through the conic and the SH view direction.
means2d and depths are meaningful only where radii > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput
from backend.core.rotations import quat_to_rotmat
from backend.core.sh import eval_sh, num_sh_bases
from backend.renderers.base import GaussianCloud

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4  # a Gaussian that would bring T to <= this (and all behind it) is not composited
MAX_EXTEND = 3.33  # bounding-box half-size in std-devs, before the opacity-aware bound
DEFAULT_TILE_SIZE = 8  # faster than 16 (and than 4) on a 2-core CPU: the balance of candidates and pairs
_CHUNK_BUDGET = 1 << 20  # (pixel, pair) candidates scored per chunk
_COMPACT_BELOW = 0.8  # drop the non-composited candidates only when they are more than this share
# Relative rounding of a float32 matmul per torch.get_float32_matmul_precision() (TF32 / bf16 when lowered).
_MATMUL_REL_ERROR = {"highest": 1e-5, "high": 2e-3, "medium": 1e-2}
_LOG_ALPHA_THRESHOLD = math.log(ALPHA_THRESHOLD)
_LOG_MIN_TRANSMITTANCE = math.log(MIN_TRANSMITTANCE)

# Rows of the geometry table [6, C * N] that the pixel stage reads per (camera, Gaussian).
_MX, _MY, _CA, _CB, _CC, _OP = range(6)


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    tile_size: int = DEFAULT_TILE_SIZE,
    backgrounds: Tensor | None = None,
    return_depth: bool = True,
    custom_backward: bool = True,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render N Gaussians into C images, like gsplat's `rasterization(..., packed=False,
    rasterize_mode="classic", render_mode="RGB+ED")` with post-activation colours.

    means [N, 3], quats [N, 4] (w, x, y, z; normalised here), scales [N, 3] (std-devs), opacities [N],
    colors [N, D] or [C, N, D], viewmats [C, 4, 4] (world to camera, OpenCV axes), Ks [C, 3, 3] (pixels),
    backgrounds [C, D] or None. `custom_backward=False` composites with plain autograd instead of the
    closed-form backward (slower; a reference for tests).

    Returns render [C, H, W, D], alpha [C, H, W, 1] and meta with "means2d" [C, N, 2] (pixels; retains its
    gradient), "radii" [C, N] int32 (0 = culled), "depths" [C, N] (camera z), "depth" [C, H, W, 1] (expected z,
    0 where alpha is 0; only with return_depth) and "n_contributions" (composited (pixel, Gaussian) pairs).
    """
    n = means.shape[0]
    c = viewmats.shape[0]
    assert means.shape == (n, 3), f"means {tuple(means.shape)}"
    assert quats.shape == (n, 4), f"quats {tuple(quats.shape)}, expected ({n}, 4)"
    assert scales.shape == (n, 3), f"scales {tuple(scales.shape)}, expected ({n}, 3)"
    assert opacities.shape == (n,), f"opacities {tuple(opacities.shape)}, expected ({n},)"
    assert viewmats.shape == (c, 4, 4), f"viewmats {tuple(viewmats.shape)}"
    assert Ks.shape == (c, 3, 3), f"Ks {tuple(Ks.shape)}, expected ({c}, 3, 3)"
    assert colors.dim() in (2, 3) and colors.shape[-2] == n, f"colors {tuple(colors.shape)}: [N, D] or [C, N, D]"
    assert colors.dim() == 2 or colors.shape[0] == c, f"colors {tuple(colors.shape)} for {c} cameras"
    d = colors.shape[-1]
    if backgrounds is not None:
        assert backgrounds.shape == (c, d), f"backgrounds {tuple(backgrounds.shape)}, expected ({c}, {d})"
    assert width > 0 and height > 0 and tile_size > 0, f"width {width}, height {height}, tile {tile_size}"
    dtype, device = means.dtype, means.device

    means2d, conics, depths, cov_diag, ok = _project(
        means, quats, scales, viewmats.to(means), Ks.to(means), width, height, eps2d, near_plane, far_plane
    )
    if torch.is_grad_enabled() and means2d.requires_grad:
        means2d.retain_grad()

    # What the pixel stage reads per (camera, Gaussian) row r = c * N + g.
    geom = torch.cat([means2d, conics, opacities.to(dtype).expand(c, n)[..., None]], dim=-1)
    geom = geom.reshape(c * n, 6).T.contiguous()  # [6, C * N]
    channels = [colors.expand(c, n, d) if colors.dim() == 2 else colors]
    if return_depth:
        channels.append(depths[..., None])
    channels.append(torch.ones(c, n, 1, dtype=dtype, device=device))  # accumulates alpha
    feat = torch.cat([ch.to(dtype) for ch in channels], dim=-1).reshape(c * n, -1)  # [C * N, F]

    with torch.no_grad():
        radii_xy, visible = _radii(means2d, cov_diag, ok, opacities, width, height, radius_clip)
        pairs = _tile_pairs(geom, radii_xy, visible, depths, n, width, height, tile_size)
    stats: dict[str, int] = {}
    if custom_backward:
        acc = _RasterizePixels.apply(geom, feat, pairs, stats)
    else:
        acc = _composite_autograd(geom, feat, pairs, stats)
    acc = acc.reshape(c, height, width, -1)  # [C, H, W, F], F = D (+ 1 depth) + 1 alpha
    alpha = acc[..., -1:]  # [C, H, W, 1]
    render = acc[..., :d]  # [C, H, W, D]
    if backgrounds is not None:
        render = render + (1.0 - alpha) * backgrounds.to(means)[:, None, None, :]

    meta: dict[str, Any] = {
        "means2d": means2d,
        "radii": radii_xy.amax(dim=-1).to(torch.int32),
        "depths": depths,
        "n_contributions": stats["n_contributions"],
    }
    if return_depth:
        # gsplat's "ED": accumulated z over alpha, clamped so that empty pixels read 0.
        meta["depth"] = acc[..., d : d + 1] / alpha.clamp(min=1e-10)
    return render, alpha, meta


# ----------------------------------------------------------------------------------------------- projection


def _project(
    means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
    eps2d: float, near: float, far: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of every (camera, Gaussian). Returns means2d [C, N, 2], conics [C, N, 3] (xx, xy, yy of
    cov2d⁻¹), depths [C, N], cov2d diagonal [C, N, 2] (with eps2d) and the mask [C, N] of z in [near, far]
    with det(cov2d) > 0."""
    R = viewmats[:, :3, :3].to(means.dtype)
    t = viewmats[:, :3, 3].to(means.dtype)
    rs = quat_to_rotmat(F.normalize(quats, dim=-1)) * scales[:, None, :]  # R S: [N, 3, 3]
    mean_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    rs_c = torch.einsum("cij,njk->cnik", R, rs)  # camera-frame R S: [C, N, 3, 3]
    x, y, z = mean_c.unbind(-1)

    with torch.no_grad():
        in_depth = (z >= near) & (z <= far)
    # Culled entries get a harmless depth so that nothing becomes inf/nan (their gradient is zero anyway).
    rz = 1.0 / torch.where(in_depth, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # gsplat clamps x/z, y/z to the image plus 0.3 tan(half-FOV) on each side when building J only.
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    xr = torch.clamp(x * rz, min=-lim_x_neg, max=lim_x_pos)
    yr = torch.clamp(y * rz, min=-lim_y_neg, max=lim_y_pos)

    # Rows of J (R S): J = [[fx/z, 0, -fx xr/z], [0, fy/z, -fy yr/z]], so cov2d = (J R S)(J R S)ᵀ.
    j0 = (fx * rz)[..., None] * (rs_c[..., 0, :] - xr[..., None] * rs_c[..., 2, :])  # [C, N, 3]
    j1 = (fy * rz)[..., None] * (rs_c[..., 1, :] - yr[..., None] * rs_c[..., 2, :])
    a = (j0 * j0).sum(-1) + eps2d
    b = (j0 * j1).sum(-1)
    cc = (j1 * j1).sum(-1) + eps2d
    det = a * cc - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([cc / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)
    ok = in_depth & (det > 0).detach()
    return means2d, conics, z, torch.stack([a, cc], dim=-1), ok


def _radii(
    means2d: Tensor, cov_diag: Tensor, ok: Tensor, opacities: Tensor, width: int, height: int, radius_clip: float,
) -> tuple[Tensor, Tensor]:
    """Per-axis pixel radii [C, N, 2] (integer-valued floats, 0 where culled) and the visibility mask [C, N].
    No grad."""
    op = opacities[None, :].expand_as(ok)
    ok = ok & (op >= ALPHA_THRESHOLD)
    # Opacity-aware extent: the box of the ellipse where alpha = 1/255 (capped at 3.33 std-devs).
    extend = torch.sqrt(2.0 * torch.log((op / ALPHA_THRESHOLD).clamp(min=1.0))).clamp(max=MAX_EXTEND)
    radii = torch.ceil(extend[..., None] * cov_diag.clamp(min=0.0).sqrt())  # [C, N, 2]
    ok = ok & ~((radii[..., 0] <= radius_clip) & (radii[..., 1] <= radius_clip))
    mx, my = means2d.unbind(-1)
    rx, ry = radii.unbind(-1)
    outside = (mx + rx <= 0) | (mx - rx >= width) | (my + ry <= 0) | (my - ry >= height)
    ok = ok & ~outside & torch.isfinite(means2d).all(dim=-1) & torch.isfinite(cov_diag).all(dim=-1)
    return radii * ok[..., None], ok


# ----------------------------------------------------------------------------------------------- tile pairs


@dataclass
class _TilePairs:
    """(camera, tile, Gaussian) pairs sorted by (camera, tile), then front to back. Shapes [M] unless noted."""

    row: Tensor  # c * N + g
    seg: Tensor  # c * tiles + tile, ascending
    pix0: Tensor  # flat index (c * H + v) * W + u of the tile's top-left pixel
    u0: Tensor  # column and row of the tile's top-left pixel (float)
    v0: Tensor
    dx0: Tensor  # mean - centre of the tile's top-left pixel (pixels)
    dy0: Tensor
    k: Tensor  # [M, 6] log(alpha / threshold) + slack as a quadratic in the pixel offset from the tile centre
    basis: Tensor  # [P, 6] the monomials of the pixel offsets
    ox: Tensor  # [P] pixel offset inside the tile (float)
    oy: Tensor
    poff: Tensor  # [P] flat pixel offset inside the tile: oy * W + ox
    width: int
    height: int
    n_pixels: int  # C * H * W
    exact_tiling: bool  # the tiles cover the image exactly (no pixel of a tile lies outside it)

    def chunks(self) -> list[tuple[int, int]]:
        """[start, end) ranges of whole tiles with at most `_CHUNK_BUDGET` candidates each (a single larger tile
        is a chunk of its own). A pixel's run of contributions never crosses a chunk."""
        m_total = self.seg.shape[0]
        per_chunk = max(1, _CHUNK_BUDGET // self.basis.shape[0])
        out = []
        start = 0
        while start < m_total:
            end = min(m_total, start + per_chunk)
            if end < m_total:
                tile_start = int(torch.searchsorted(self.seg, self.seg[end : end + 1]).item())
                if tile_start > start:
                    end = tile_start
                else:
                    end = int(torch.searchsorted(self.seg, self.seg[end : end + 1], right=True).item())
            out.append((start, end))
            start = end
        return out


def _tile_pairs(
    geom: Tensor, radii: Tensor, visible: Tensor, depths: Tensor, n: int, width: int, height: int, ts: int,
) -> _TilePairs:
    """Bin visible (camera, Gaussian) rows into the tiles their bounding boxes touch, like gsplat's
    `isect_tiles` (floor of (mean - radius) / tile_size inclusive, ceil of (mean + radius) / tile_size
    exclusive). geom [6, C * N], radii [C, N, 2], visible and depths [C, N]. No grad."""
    device, dtype = geom.device, geom.dtype
    tiles_w, tiles_h = -(-width // ts), -(-height // ts)
    c = visible.shape[0]
    long = dict(dtype=torch.long, device=device)

    # Visible rows front to back (stable: equal depths keep the Gaussian order, as gsplat's radix sort does).
    rows = torch.nonzero(visible.reshape(-1)).squeeze(1)
    rows = rows.index_select(0, torch.sort(depths.reshape(-1).index_select(0, rows), stable=True).indices)
    vis_geom = geom.index_select(1, rows)  # [6, V]
    mx, my = vis_geom[_MX], vis_geom[_MY]
    rad = radii.reshape(-1, 2).index_select(0, rows)
    x0 = torch.floor((mx - rad[:, 0]) / ts).clamp_(0, tiles_w).long()
    x1 = torch.ceil((mx + rad[:, 0]) / ts).clamp_(0, tiles_w).long()
    y0 = torch.floor((my - rad[:, 1]) / ts).clamp_(0, tiles_h).long()
    y1 = torch.ceil((my + rad[:, 1]) / ts).clamp_(0, tiles_h).long()
    nx = x1 - x0
    count = nx * (y1 - y0)

    # Expand to (row, tile) pairs, then group by (camera, tile); the stable sort keeps the depth order.
    owner = torch.repeat_interleave(torch.arange(rows.shape[0], **long), count)
    local = torch.arange(owner.shape[0], **long) - (torch.cumsum(count, 0) - count).index_select(0, owner)
    nx_o = nx.index_select(0, owner)
    tx = x0.index_select(0, owner) + local % nx_o
    ty = y0.index_select(0, owner) + local // nx_o
    cam = rows.index_select(0, owner) // n
    seg, perm = torch.sort((cam * tiles_h + ty) * tiles_w + tx, stable=True)
    owner, tx, ty, cam = (t.index_select(0, perm) for t in (owner, tx, ty, cam))
    row = rows.index_select(0, owner)
    pg = vis_geom.index_select(1, owner)  # [6, M]

    # Candidate test: log(alpha / threshold) = log(o) - log(1/255) - sigma is a quadratic in the pixel offset
    # (ox, oy) from the tile centre; its coefficients per pair make the test one [P, 6] @ [6, M] matmul.
    h = (ts - 1) / 2.0
    u0, v0 = (tx * ts).to(dtype), (ty * ts).to(dtype)
    u = u0 + ts / 2.0 - pg[_MX]  # tile centre - mean
    v = v0 + ts / 2.0 - pg[_MY]
    ca, cb, cc = pg[_CA], pg[_CB], pg[_CC]
    q0 = 0.5 * ca * u * u + cb * u * v + 0.5 * cc * v * v
    k = torch.stack([
        torch.log(pg[_OP]) - _LOG_ALPHA_THRESHOLD - q0,
        -(ca * u + cb * v), -(cb * u + cc * v), -0.5 * ca, -cb, -0.5 * cc,
    ], dim=-1)  # [M, 6]
    # Slack that covers the rounding of the expanded form and of the matmul (TF32 / bf16 when the float32 matmul
    # precision is lowered); the exact test follows in `_select`, so the slack only adds candidates.
    rel = _MATMUL_REL_ERROR.get(torch.get_float32_matmul_precision(), 1e-2) if dtype == torch.float32 else 1e-5
    terms = q0.abs() + h * (k[:, 1].abs() + k[:, 2].abs()) + h * h * k[:, 3:].abs().sum(-1) + k[:, 0].abs()
    k[:, 0] += 1e-3 + rel * terms
    o = torch.arange(ts * ts, **long)
    oxi, oyi = o % ts, o // ts
    ox, oy = oxi.to(dtype), oyi.to(dtype)
    bx, by = ox - h, oy - h
    basis = torch.stack([torch.ones_like(bx), bx, by, bx * bx, bx * by, by * by], dim=-1)  # [P, 6]
    return _TilePairs(
        row=row, seg=seg, pix0=(cam * height + ty * ts) * width + tx * ts, u0=u0, v0=v0,
        dx0=pg[_MX] - (u0 + 0.5), dy0=pg[_MY] - (v0 + 0.5), k=k, basis=basis, ox=ox, oy=oy,
        poff=oyi * width + oxi, width=width, height=height, n_pixels=c * height * width,
        exact_tiling=(width % ts == 0 and height % ts == 0),
    )


# ----------------------------------------------------------------------------------------------- pixel stage


@dataclass
class _Contributions:
    """The composited (pixel, Gaussian) pairs of one chunk, each pixel's run contiguous and front to back.
    Shapes [K]."""

    row: Tensor  # c * N + g
    pix: Tensor  # (c * H + v) * W + u
    dx: Tensor  # mean - pixel centre, x (pixels)
    dy: Tensor
    alpha: Tensor  # after the 0.999 clamp (a clamped alpha, exactly 0.999, has no gradient); 0 = not composited
    trans: Tensor  # transmittance in front of the Gaussian
    first: Tensor  # [R] index of the first entry of each pixel's run

    FIELDS = ("row", "pix", "dx", "dy", "alpha", "trans", "first")

    def tensors(self) -> list[Tensor]:
        return [getattr(self, f) for f in self.FIELDS]


def _pixel_sigma(dx: Tensor, dy: Tensor, ca: Tensor, cb: Tensor, cc: Tensor) -> Tensor:
    """½ dᵀ conic d in gsplat's order of operations."""
    return 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy


def _run_index(pix: Tensor) -> tuple[Tensor, Tensor]:
    """For entries whose equal pixel indices are contiguous: the first index of each run [R] and each entry's
    run number [K]."""
    first = torch.ones_like(pix, dtype=torch.bool)
    torch.ne(pix[1:], pix[:-1], out=first[1:])
    return torch.nonzero(first).squeeze(1), torch.cumsum(first, 0).sub_(1)


def _run_offsets(first: Tensor, k: int) -> Tensor:
    """[R + 1] run boundaries from the run starts and the number of entries."""
    return torch.cat([first, first.new_full((1,), k)])


def _select(pairs: _TilePairs, start: int, end: int, geom: Tensor) -> tuple[_Contributions, int]:
    """The contributions of the pairs [start, end) (whole tiles) that gsplat composites, and how many there
    are (a few non-composited candidates may be carried with alpha = 0). No grad."""
    score = pairs.basis @ pairs.k[start:end].T  # [P, M_chunk]
    p, m = torch.nonzero(score >= 0, as_tuple=True)  # pixel-major: each pixel's candidates contiguous
    m += start
    if not pairs.exact_tiling:  # border tiles reach past the image
        inside = (pairs.u0.index_select(0, m) + pairs.ox.index_select(0, p) < pairs.width) & (
            pairs.v0.index_select(0, m) + pairs.oy.index_select(0, p) < pairs.height)
        inside = torch.nonzero(inside).squeeze(1)
        p, m = p.index_select(0, inside), m.index_select(0, inside)
    row = pairs.row.index_select(0, m)
    pix = pairs.pix0.index_select(0, m).add_(pairs.poff.index_select(0, p))
    # mean - pixel centre = (mean - tile's first pixel centre) - offset in the tile
    dx = pairs.dx0.index_select(0, m).sub_(pairs.ox.index_select(0, p))
    dy = pairs.dy0.index_select(0, m).sub_(pairs.oy.index_select(0, p))
    sigma = _pixel_sigma(dx, dy, *(geom[i].index_select(0, row) for i in (_CA, _CB, _CC)))
    alpha = torch.exp(-sigma).mul_(geom[_OP].index_select(0, row)).clamp_(max=MAX_ALPHA)
    valid = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)

    # Transmittance: exclusive per-pixel cumulative sum of log(1 - alpha) over the valid entries, in float64
    # because the chunk-wide running sum grows with K while the per-pixel difference needs float32 precision.
    log1m = torch.log1p(-alpha).mul_(valid).to(torch.float64)
    excl = torch.cumsum(log1m, 0).sub_(log1m)
    first, run = _run_index(pix)
    excl -= excl.index_select(0, first).index_select(0, run)
    # Cut-off: keep a Gaussian while T after it stays above 1e-4 (skipped ones change nothing).
    keep = valid & (excl + log1m > _LOG_MIN_TRANSMITTANCE)
    trans = torch.exp(excl).to(alpha.dtype)
    n_kept = int(keep.sum())
    if n_kept < _COMPACT_BELOW * keep.shape[0]:
        idx = torch.nonzero(keep).squeeze(1)
        row, pix, dx, dy, alpha, trans = (t.index_select(0, idx) for t in (row, pix, dx, dy, alpha, trans))
        first, _ = _run_index(pix)
    else:  # few dropped: cheaper to carry them with alpha = 0 (so w = 0 and no gradient) than to compact
        alpha.mul_(keep)
    return _Contributions(row, pix, dx, dy, alpha, trans, first), n_kept


class _RasterizePixels(torch.autograd.Function):
    """geom [6, C * N] (means2d x, y, conic xx, xy, yy, opacity) and feat [C * N, F] (channels to composite;
    the last one all ones) -> acc [C * H * W, F] = Σ_k w_k feat[row_k] per pixel, w = alpha T."""

    @staticmethod
    def forward(ctx: Any, geom: Tensor, feat: Tensor, pairs: _TilePairs, stats: dict[str, int]) -> Tensor:
        acc = feat.new_zeros(pairs.n_pixels, feat.shape[1])
        saved: list[Tensor] = []
        total = 0
        for start, end in pairs.chunks():
            con, n_kept = _select(pairs, start, end, geom)
            total += n_kept
            k = con.row.shape[0]
            if k == 0:
                continue
            contrib = feat.index_select(0, con.row).mul_((con.alpha * con.trans)[:, None])  # [K, F]
            # Each pixel's run is contiguous: sum per run, then one small scatter to the pixels.
            run_sums = torch.segment_reduce(contrib, "sum", offsets=_run_offsets(con.first, k), unsafe=True)
            acc.index_add_(0, con.pix.index_select(0, con.first), run_sums)
            saved += con.tensors()
        stats["n_contributions"] = total
        ctx.save_for_backward(geom, feat, *saved)
        return acc

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_acc: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        geom, feat, *saved = ctx.saved_tensors
        grad_acc_t = grad_acc.T.contiguous()  # [F, C * H * W]
        feat_t = feat.T.contiguous()  # [F, C * N]
        nf = len(_Contributions.FIELDS)
        grad_geom = torch.zeros_like(geom) if ctx.needs_input_grad[0] else None
        # The last channel is the constant 1 that accumulates alpha: it needs no gradient.
        grad_feat_t = torch.zeros_like(feat_t[:-1]) if ctx.needs_input_grad[1] else None
        for i in range(0, len(saved), nf):
            con = _Contributions(*saved[i : i + nf])
            _backward_chunk(con, geom, feat_t, grad_acc_t, grad_geom, grad_feat_t)
        if grad_geom is not None:
            # The geometry sums are per row; the constant factors of the chain rule are applied once per row.
            s_dx, s_dy, s_xx, s_xy, s_yy, s_op = grad_geom.unbind(0)
            ca, cb, cc, op = geom[_CA], geom[_CB], geom[_CC], geom[_OP]
            grad_op = s_op / op.clamp(min=ALPHA_THRESHOLD)  # composited rows have o >= 1/255; culled may have 0
            grad_geom = torch.stack([
                ca * s_dx + cb * s_dy, cb * s_dx + cc * s_dy, 0.5 * s_xx, s_xy, 0.5 * s_yy, grad_op,
            ])
        grad_feat = None
        if grad_feat_t is not None:
            grad_feat = torch.cat([grad_feat_t, torch.zeros_like(feat_t[-1:])]).T
        return grad_geom, grad_feat, None, None


def _backward_chunk(
    con: _Contributions, geom: Tensor, feat_t: Tensor, grad_acc_t: Tensor, grad_geom: Tensor | None,
    grad_feat_t: Tensor | None,
) -> None:
    """Adds one chunk's gradient sums to grad_feat_t [F - 1, C * N] and to grad_geom [6, C * N] as the per-row
    sums of v_sigma dx, v_sigma dy, v_sigma dx², v_sigma dx dy, v_sigma dy² and v_alpha alpha (see `backward`)."""
    k = con.row.shape[0]
    g_out = grad_acc_t.index_select(1, con.pix)  # [F, K]: dL/d(acc) at each contribution's pixel
    w = con.alpha * con.trans
    if grad_feat_t is not None:
        grad_feat_t.index_add_(1, con.row, g_out[:-1] * w)
    if grad_geom is None:
        return
    # dL/dalpha_k = T_k g_k - (Σ_{j behind k in its pixel} w_j g_j) / (1 - alpha_k), with g = g_out . feat.
    g = g_out.mul_(feat_t.index_select(1, con.row)).sum(0)
    incl = torch.cumsum((w * g).to(torch.float64), 0)
    offsets = _run_offsets(con.first, k)
    run = torch.repeat_interleave(torch.arange(con.first.shape[0], device=g.device), offsets.diff())
    run_total = incl.index_select(0, offsets[1:] - 1).index_select(0, run)
    behind = (run_total - incl).to(w.dtype)
    v_alpha = con.trans * g - behind / (1.0 - con.alpha)
    v_alpha.mul_(con.alpha < MAX_ALPHA)  # no gradient through the 0.999 clamp (as gsplat)
    # alpha = o exp(-sigma): dalpha/do = alpha / o (divided per row later), dalpha/dsigma = -alpha.
    v_alpha.mul_(con.alpha)
    v_sigma = -v_alpha
    dx, dy = con.dx, con.dy
    sums = torch.empty(6, k, dtype=dx.dtype, device=dx.device)
    torch.mul(v_sigma, dx, out=sums[0])
    torch.mul(v_sigma, dy, out=sums[1])
    torch.mul(sums[0], dx, out=sums[2])
    torch.mul(sums[0], dy, out=sums[3])
    torch.mul(sums[1], dy, out=sums[4])
    sums[5] = v_alpha
    grad_geom.index_add_(1, con.row, sums)


def _composite_autograd(geom: Tensor, feat: Tensor, pairs: _TilePairs, stats: dict[str, int]) -> Tensor:
    """The same compositing as `_RasterizePixels`, differentiated by plain autograd (reference for tests)."""
    acc = feat.new_zeros(pairs.n_pixels, feat.shape[1])
    total = 0
    for start, end in pairs.chunks():
        with torch.no_grad():
            con, n_kept = _select(pairs, start, end, geom)
        rows = geom.index_select(1, con.row)  # [6, K]
        # mean - pixel centre: the selected value, with the mean's gradient (x - x.detach() is exactly 0).
        dx = con.dx + (rows[_MX] - rows[_MX].detach())
        dy = con.dy + (rows[_MY] - rows[_MY].detach())
        sigma = _pixel_sigma(dx, dy, rows[_CA], rows[_CB], rows[_CC])
        alpha = torch.clamp(rows[_OP] * torch.exp(-sigma), max=MAX_ALPHA) * (con.alpha > 0)  # carried: 0
        log1m = torch.log1p(-alpha).to(torch.float64)
        first, run = _run_index(con.pix)
        excl = torch.cumsum(log1m, 0) - log1m
        trans = torch.exp(excl - excl[first][run]).to(alpha.dtype)
        acc = acc.index_add(0, con.pix, (alpha * trans)[:, None] * feat.index_select(0, con.row))
        total += n_kept
    stats["n_contributions"] = total
    return acc


# ------------------------------------------------------------------------------------------------- renderer


def gaussian_colors(rep: GaussianCloud, cams: Cameras) -> Tensor:
    """Post-activation colours max(eval_sh + 0.5, 0): [N, 3] for degree 0, else [C, N, 3] from the unit view
    direction camera centre -> mean (as gsplat evaluates them)."""
    sh = rep.sh
    k = num_sh_bases(rep.sh_degree)
    assert sh.dim() == 3 and sh.shape[1] >= k and sh.shape[2] == 3, f"sh {tuple(sh.shape)}, degree {rep.sh_degree}"
    if rep.sh_degree == 0:
        return torch.clamp_min(eval_sh(0, sh, sh.new_zeros(sh.shape[0], 3)) + 0.5, 0.0)
    campos = cams.positions.to(rep.means)  # [C, 3]
    dirs = F.normalize(rep.means[None, :, :] - campos[:, None, :], dim=-1)  # [C, N, 3]
    coeffs = sh[None].expand(len(cams), *sh.shape)
    return torch.clamp_min(eval_sh(rep.sh_degree, coeffs, dirs) + 0.5, 0.0)


class TorchGaussianRenderer:
    """The pure-torch Gaussian renderer (any device); the same outputs as `GsplatGaussianRenderer`."""

    name = "torch"

    def __init__(self, tile_size: int = DEFAULT_TILE_SIZE, near_plane: float = 0.01, far_plane: float = 1e10,
                 eps2d: float = 0.3) -> None:
        self.tile_size = tile_size
        self.near_plane = near_plane
        self.far_plane = far_plane
        self.eps2d = eps2d

    def render(self, rep: GaussianCloud, cams: Cameras, background: Tensor) -> RenderOutput:
        """rgb [C, H, W, 3], alpha [C, H, W, 1], depth [C, H, W, 1]; aux "means2d" [C, N, 2], "radii" [C, N]."""
        c = len(cams)
        assert background.shape == (c, 3), f"background {tuple(background.shape)}, expected ({c}, 3)"
        means = rep.means
        render, alpha, meta = rasterize_gaussians(
            means, rep.quats, rep.scales, rep.opacities, gaussian_colors(rep, cams),
            cams.world_to_cam.to(means), cams.K.to(means), cams.width, cams.height,
            near_plane=self.near_plane, far_plane=self.far_plane, eps2d=self.eps2d, tile_size=self.tile_size,
            backgrounds=background.to(means), return_depth=True,
        )
        return RenderOutput(rgb=render, alpha=alpha, depth=meta["depth"],
                            aux={"means2d": meta["means2d"], "radii": meta["radii"]})
