"""A minimal pure-torch triangle rasteriser (the CPU twin of nvdiffrast's rasterize/interpolate).

    rast = rasterize(verts, faces, cams)          # z-buffered face ids, barycentrics, depth per pixel
    rgb  = interpolate(colours, rast, faces)      # [C, H, W, D], differentiable

How it works, all vectorised (no Python loop over triangles or pixels):
- Vertices go to camera space (OpenCV axes, `core/cameras.py`). For a triangle with camera-space corners
  P0, P1, P2 and the ray d = ((u - cx)/fx, (v - cy)/fy, 1) through a pixel centre (u, v), the three numbers
  e_k = (P_{k+1} x P_{k+2}) . d are proportional to the perspective-correct barycentrics (they solve
  [P0 P1 P2] b = s d up to the common factor det[P0 P1 P2]); the pixel is inside when all three share the
  sign of the determinant, and the hit's camera z is det / sum(e). e_k is affine in the pixel indices, so each
  (triangle, pixel) test costs a few multiply-adds.
- Candidate (triangle, pixel) pairs come from each projected triangle's pixel bounding box, enumerated with
  index arithmetic (repeat_interleave + div/mod) in chunks of at most `chunk_pairs` pairs, so memory stays
  bounded whatever the mesh.
- The z-buffer is one int64 per pixel: the float32 depth's bit pattern (monotonic for positive floats) in the
  high 32 bits and the face id in the low 32, reduced with `scatter_reduce(amin)`. The nearest face wins;
  exact depth ties go to the lower face id, so results do not depend on the chunking.
- Near plane: triangles with any vertex closer than `near` to the camera plane are CULLED, not clipped
  (a mesh that crosses the near plane loses those triangles; orbit cameras never get that close).
- Back-face culling is optional (`cull_backfaces`, off by default): it halves the work for closed,
  consistently wound meshes; without it open surfaces are visible from both sides.

Gradients: the rasterisation itself (which face covers which pixel) is discrete and runs under no_grad. The
barycentrics and depth of the selected face are then recomputed from the vertex positions with autograd on,
so `interpolate` is differentiable w.r.t. the attributes and, inside triangles, w.r.t. vertex positions.

Edges: `antialias(image, rast, verts, faces, cams)` is an analytic antialiasing step in the manner of
nvdiffrast's. For every pair of horizontally or vertically adjacent pixels showing different faces, the face
of the nearer pixel ("front") is checked for a silhouette edge (an edge of one face only, or between a face
turned towards the camera and one turned away) that crosses the segment between the two pixel centres. With
the crossing at fraction s of the way from the front centre to the other one (rows of pixel pairs handle
steep edges, columns flat ones, so each edge counts once), the front surface covers
s - 1/2 of the other pixel when s > 1/2 (that pixel moves towards the front colour by s - 1/2), or leaves
1/2 - s of its own pixel uncovered when s < 1/2 (it moves towards the other colour by 1/2 - s). s is a
differentiable function of the projected edge, so the image now has gradients w.r.t. the vertex positions
at silhouettes: alpha summed over an image equals the projected area of an isolated triangle up to the
pixel grid, and its gradient is that area's gradient.

`MeshRenderer` draws a `kind == "mesh"` representation that can `extract()` a triangle mesh (DMTet): albedo
from the representation's field at each covered pixel's surface point, optional diffuse/textureless shading,
background, antialiasing; plus the mesh regularisers (normal consistency, Laplacian) in `aux`.
`renderers/mesh_nvdiffrast.py` subclasses it with nvdiffrast's rasterize/interpolate/antialias.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput

_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class Rasterization:
    """Per-pixel result of `rasterize`. Shapes: face_id [C, H, W] int64 (-1 = no triangle), bary [C, H, W, 3]
    perspective-correct barycentrics of the face's three corners (zeros on empty pixels; differentiable
    w.r.t. vertex positions), depth [C, H, W] camera-space z of the hit (0 on empty pixels). `pixels` and
    `pixel_bary` hold the covered pixels only, so consumers can skip empty ones."""

    face_id: Tensor
    bary: Tensor
    depth: Tensor
    pixels: Tensor  # [N] flat indices (into C * H * W) of the covered pixels, ascending
    pixel_bary: Tensor  # [N, 3] their barycentrics (the same values as bary.view(-1, 3)[pixels])

    @property
    def mask(self) -> Tensor:
        """[C, H, W] bool: pixels covered by some triangle."""
        return self.face_id >= 0


def _to_camera(verts: Tensor, cams: Cameras) -> Tensor:
    """[C, V, 3] camera-space positions of world vertices [V, 3]."""
    R = cams.world_to_cam[:, :3, :3].to(verts.dtype)
    t = cams.world_to_cam[:, :3, 3].to(verts.dtype)
    return torch.einsum("cij,vj->cvi", R, verts) + t[:, None, :]


def _cross(a: Tensor, b: Tensor) -> Tensor:
    """a x b over the last axis (written out: several times faster than linalg.cross on small rows)."""
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=-1)


def _edge_normals(P: Tensor) -> Tensor:
    """[..., 3, 3] rows (P1 x P2, P2 x P0, P0 x P1) for corners P [..., 3, 3] (corner, xyz)."""
    P0, P1, P2 = P.unbind(-2)
    return torch.stack([_cross(P1, P2), _cross(P2, P0), _cross(P0, P1)], dim=-2)


@torch.no_grad()
def _zbuffer(vc: Tensor, faces: Tensor, cams: Cameras, near: float, chunk_pairs: int,
             cull_backfaces: bool) -> Tensor:
    """[C * H * W] packed (depth bits << 32 | face id) of the nearest face per pixel, _EMPTY where none."""
    C, W, H = len(cams), cams.width, cams.height
    F = faces.shape[0]
    K = cams.K.to(vc.dtype)
    fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]  # [C, 1]

    P = vc[:, faces]  # [C, F, 3 corners, 3 xyz]
    z = P[..., 2]
    valid = (z > near).all(-1)  # near-plane culling (no clipping)
    n = _edge_normals(P)  # [C, F, 3, 3]
    det = (P[..., 0, :] * n[..., 0, :]).sum(-1)  # [C, F] = P0 . (P1 x P2)
    valid &= det != 0  # edge-on or degenerate triangles cover no pixel centre
    if cull_backfaces:
        # det = ((P1 - P0) x (P2 - P0)) . P0 < 0 when a counter-clockwise (outward) face looks at the camera.
        valid &= det < 0
    sign = torch.where(det < 0, -1.0, 1.0).to(vc.dtype)
    # e_k(px, py) = A_k px + B_k py + D_k at the pixel centre (px + 0.5, py + 0.5), sign-normalised so that
    # "inside" is e_k >= 0 for all k.
    n = n * sign[..., None, None]
    A = n[..., 0] / fx[..., None]
    B = n[..., 1] / fy[..., None]
    D = n[..., 0] * ((0.5 - cx) / fx)[..., None] + n[..., 1] * ((0.5 - cy) / fy)[..., None] + n[..., 2]
    abs_det = det.abs()

    # Pixel bounding boxes: pixel px is a candidate if its centre px + 0.5 lies within [u_min, u_max].
    zc = z.clamp_min(near)
    u = fx[..., None] * P[..., 0] / zc + cx[..., None]
    v = fy[..., None] * P[..., 1] / zc + cy[..., None]
    x0 = torch.ceil(u.amin(-1) - 0.5).clamp(0, W).long()
    x1 = torch.floor(u.amax(-1) - 0.5).clamp(-1, W - 1).long()
    y0 = torch.ceil(v.amin(-1) - 0.5).clamp(0, H).long()
    y1 = torch.floor(v.amax(-1) - 0.5).clamp(-1, H - 1).long()
    nx = (x1 - x0 + 1).clamp_min(0)
    counts = nx * (y1 - y0 + 1).clamp_min(0) * valid  # [C, F]

    buf = torch.full((C * H * W,), _EMPTY, dtype=torch.int64, device=vc.device)
    tri = counts.reshape(-1).nonzero()[:, 0]  # flat (camera, face) ids with candidates
    if tri.numel() == 0:
        return buf
    counts = counts.reshape(-1)[tri]
    # One gather per chunk instead of one per field: [T, 12] floats + [T, 5] ints.
    fparams = torch.cat([A.reshape(C * F, 3), B.reshape(C * F, 3), D.reshape(C * F, 3),
                         abs_det.reshape(C * F, 1)], dim=1)[tri]
    iparams = torch.stack([x0.reshape(-1), y0.reshape(-1), nx.reshape(-1)], dim=1)[tri]
    cam_of = torch.div(tri, F, rounding_mode="floor")
    face_of = tri - cam_of * F
    ends = counts.cumsum(0)
    starts = ends - counts

    # Chunks of whole triangles holding at most ~chunk_pairs pairs (a single bigger triangle gets its own).
    bounds = [0]
    while bounds[-1] < tri.numel():
        s = bounds[-1]
        limit = starts[s] + max(chunk_pairs, int(counts[s]))
        bounds.append(int(torch.searchsorted(ends, limit, right=True)))
    for s, e in itertools.pairwise(bounds):
        k = torch.repeat_interleave(torch.arange(s, e, device=vc.device), counts[s:e])
        local = torch.arange(k.numel(), device=vc.device) - (starts[k] - starts[s])
        ip = iparams[k]
        nxk = ip[:, 2]
        py_off = torch.div(local, nxk, rounding_mode="floor")
        px = ip[:, 0] + (local - py_off * nxk)
        py = ip[:, 1] + py_off
        fp = fparams[k]
        pxf, pyf = px.to(fp.dtype)[:, None], py.to(fp.dtype)[:, None]
        e = fp[:, 0:3] * pxf + fp[:, 3:6] * pyf + fp[:, 6:9]  # [n, 3]
        esum = e.sum(-1)
        inside = (e >= 0).all(-1) & (esum > 0)
        depth = (fp[:, 9] / esum)[inside].to(torch.float32)
        kk = k[inside]
        key = cam_of[kk] * (H * W) + py[inside] * W + px[inside]
        packed = (depth.view(torch.int32).to(torch.int64) << 32) | face_of[kk]
        buf.scatter_reduce_(0, key, packed, reduce="amin", include_self=True)
    return buf


def rasterize(verts: Tensor, faces: Tensor, cams: Cameras, *, near: float = 1e-3,
              cull_backfaces: bool = False, chunk_pairs: int = 1 << 18) -> Rasterization:
    """Z-buffered rasterisation of a triangle mesh from every camera.

    verts [V, 3] world positions (float; gradients flow to them through `bary` and `depth`), faces [F, 3]
    int64 vertex indices. Pixel centres are sampled (coverage at (u + 0.5, v + 0.5), row 0 = top), a pixel
    centre exactly on an edge counts as inside. Triangles crossing the near plane (z < near) are culled.
    `cull_backfaces` drops faces seen from behind, assuming counter-clockwise winding seen from outside: half
    the work for closed meshes, wrong for meshes without a consistent winding. `chunk_pairs` bounds the
    candidate (triangle, pixel) pairs tested at once (~150 bytes of temporaries each: ~40 MB by default).
    """
    assert verts.dim() == 2 and verts.shape[1] == 3, f"verts {tuple(verts.shape)}, expected [V, 3]"
    assert faces.dim() == 2 and faces.shape[1] == 3, f"faces {tuple(faces.shape)}, expected [F, 3]"
    assert faces.dtype == torch.int64, f"faces dtype {faces.dtype}, expected int64"
    assert faces.shape[0] < 2**31, "face ids must fit in 31 bits"
    C, H, W = len(cams), cams.height, cams.width
    vc = _to_camera(verts, cams)  # [C, V, 3], differentiable
    buf = _zbuffer(vc.detach(), faces, cams, near, chunk_pairs, cull_backfaces)
    hit = buf != _EMPTY
    face_id = torch.where(hit, buf & 0xFFFFFFFF, torch.full_like(buf, -1))

    # Differentiable barycentrics and depth of the selected face at each covered pixel centre.
    pix = hit.nonzero()[:, 0]
    f = face_id[pix]
    cam = torch.div(pix, H * W, rounding_mode="floor")
    rem = pix - cam * (H * W)
    py = torch.div(rem, W, rounding_mode="floor")
    px = rem - py * W
    K = cams.K.to(vc.dtype)
    d = torch.stack([(px.to(vc.dtype) + 0.5 - K[cam, 0, 2]) / K[cam, 0, 0],
                     (py.to(vc.dtype) + 0.5 - K[cam, 1, 2]) / K[cam, 1, 1],
                     torch.ones(pix.shape[0], dtype=vc.dtype, device=vc.device)], dim=-1)  # [N, 3]
    P = vc[cam[:, None], faces[f]]  # [N, 3 corners, 3]
    e = (_edge_normals(P) * d[:, None, :]).sum(-1)  # [N, 3]
    esum = e.sum(-1, keepdim=True)
    b = e / esum
    z = (b * P[..., 2]).sum(-1)
    bary = torch.zeros(C * H * W, 3, dtype=vc.dtype, device=vc.device).index_copy(0, pix, b)
    depth = torch.zeros(C * H * W, dtype=vc.dtype, device=vc.device).index_copy(0, pix, z)
    return Rasterization(face_id.view(C, H, W), bary.view(C, H, W, 3), depth.view(C, H, W), pix, b)


def interpolate(attr: Tensor, rast: Rasterization, faces: Tensor) -> Tensor:
    """Per-pixel barycentric blend of per-vertex attributes attr [V, D] -> [C, H, W, D] (zeros on empty
    pixels). Differentiable w.r.t. `attr` and, through the barycentrics, w.r.t. the vertex positions."""
    assert attr.dim() == 2, f"attr {tuple(attr.shape)}, expected [V, D]"
    C, H, W = rast.face_id.shape
    corner = attr[faces[rast.face_id.view(-1)[rast.pixels]]]  # [N, 3, D]: covered pixels only
    vals = torch.einsum("nk,nkd->nd", rast.pixel_bary.to(attr.dtype), corner)
    out = attr.new_zeros(C * H * W, attr.shape[1]).index_copy(0, rast.pixels, vals)
    return out.view(C, H, W, attr.shape[1])


# ---------------------------------------------------------------------------------------------- antialiasing


def edge_topology(faces: Tensor) -> tuple[Tensor, Tensor]:
    """Unique undirected edges [E, 2] of a triangle mesh and each face's edges [F, 3] (edge k of a face joins
    its corners k + 1 and k + 2)."""
    pairs = torch.stack([faces[:, [1, 2]], faces[:, [2, 0]], faces[:, [0, 1]]], dim=1)  # [F, 3, 2]
    pairs = pairs.sort(-1).values.reshape(-1, 2)
    edges, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    return edges, inverse.view(-1, 3)


def _silhouettes(vc: Tensor, faces: Tensor, face_edges: Tensor, n_edges: int) -> Tensor:
    """[C, E] bool: edges that bound the visible surface in each view (boundary edges, or edges between a face
    turned towards the camera and one turned away)."""
    P = vc[:, faces]  # [C, F, 3, 3]
    det = (P[..., 0, :] * _cross(P[..., 1, :], P[..., 2, :])).sum(-1)  # [C, F]
    front = (det < 0).to(torch.int64)
    C = vc.shape[0]
    ids = face_edges.reshape(-1).expand(C, -1)  # [C, 3F]
    total = torch.zeros(C, n_edges, dtype=torch.int64, device=vc.device).scatter_add_(
        1, ids, torch.ones_like(ids))
    fronts = torch.zeros_like(total).scatter_add_(1, ids, front.repeat_interleave(3, dim=1))
    return (total == 1) | ((fronts > 0) & (fronts < total))


def antialias(image: Tensor, rast: Rasterization, verts: Tensor, faces: Tensor, cams: Cameras) -> Tensor:
    """Analytic antialiasing of a rendered image [C, H, W, D] (see the module docstring); differentiable w.r.t.
    the image and the vertex positions [V, 3]. Composite over the background first (and carry alpha as a
    channel) so that silhouettes blend with what lies behind them."""
    C, H, W, D = image.shape
    assert rast.face_id.shape == (C, H, W), f"image {tuple(image.shape)} vs raster {tuple(rast.face_id.shape)}"
    if faces.shape[0] == 0:
        return image
    vc = _to_camera(verts, cams)  # [C, V, 3]
    K = cams.K.to(vc.dtype)
    z = vc[..., 2].clamp_min(1e-6)
    u = K[:, 0, 0, None] * vc[..., 0] / z + K[:, 0, 2, None]  # [C, V] pixel coordinates (centres at +0.5)
    v = K[:, 1, 1, None] * vc[..., 1] / z + K[:, 1, 2, None]
    edges, face_edges = edge_topology(faces)
    sil = _silhouettes(vc.detach(), faces, face_edges, edges.shape[0])  # [C, E]
    flat = image.reshape(C * H * W, D)
    fid = rast.face_id.reshape(-1)
    depth = rast.depth.detach().reshape(-1)
    out = flat
    idx = torch.arange(C * H * W, device=image.device).view(C, H, W)
    for axis in ("x", "y"):
        a = (idx[:, :, :-1] if axis == "x" else idx[:, :-1, :]).reshape(-1)
        b = (idx[:, :, 1:] if axis == "x" else idx[:, 1:, :]).reshape(-1)
        diff = fid[a] != fid[b]
        a, b = a[diff], b[diff]
        if a.numel() == 0:
            continue
        b_front = (fid[a] < 0) | ((fid[b] >= 0) & (depth[b] < depth[a]))
        pf, pb = torch.where(b_front, b, a), torch.where(b_front, a, b)  # front and back pixel
        f = fid[pf]
        cam = torch.div(pf, H * W, rounding_mode="floor")
        rem_f, rem_b = pf - cam * (H * W), pb - cam * (H * W)
        # The segment between the pixel centres: fixed coordinate `line` on the other axis, from `cf` to `cb`.
        if axis == "x":
            line = torch.div(rem_f, W, rounding_mode="floor").to(u.dtype) + 0.5
            cf, cb = (rem_f % W).to(u.dtype) + 0.5, (rem_b % W).to(u.dtype) + 0.5
            along, across = u, v
        else:
            line = (rem_f % W).to(u.dtype) + 0.5
            cf = torch.div(rem_f, W, rounding_mode="floor").to(u.dtype) + 0.5
            cb = torch.div(rem_b, W, rounding_mode="floor").to(u.dtype) + 0.5
            along, across = v, u
        s_best = torch.full_like(cf, -1.0)
        for k in range(3):
            e = face_edges[f, k]  # [N]
            i0, i1 = edges[e, 0], edges[e, 1]
            a0, a1 = along[cam, i0], along[cam, i1]
            c0, c1 = across[cam, i0], across[cam, i1]
            denom = c1 - c0
            safe = torch.where(denom.abs() < 1e-12, torch.ones_like(denom), denom)
            r = (line - c0) / safe  # where the edge meets the line, as a fraction of the edge
            crossing = a0 + r * (a1 - a0)
            s = (crossing - cf) / (cb - cf)
            # Each edge is handled by one kind of pair only (as in nvdiffrast): pixel rows for steep edges,
            # columns for flat ones; otherwise a diagonal edge would be counted twice.
            steep = denom.abs() >= (a1 - a0).abs() if axis == "x" else denom.abs() > (a1 - a0).abs()
            ok = sil[cam, e] & steep & (denom.abs() >= 1e-12) & (r >= 0) & (r <= 1) & (s >= 0) & (s <= 1)
            s_best = torch.where(ok & (s_best < 0), s, s_best)
        hit = s_best >= 0
        if not bool(hit.any()):
            continue
        s, pf, pb = s_best[hit], pf[hit], pb[hit]
        col_f, col_b = flat[pf], flat[pb]
        into_back = (s - 0.5).clamp_min(0.0)[:, None]  # front surface spills over into the back pixel
        uncovered = (0.5 - s).clamp_min(0.0)[:, None]  # front pixel not fully covered
        delta_b = into_back * (col_f - col_b)
        delta_f = uncovered * (col_b - col_f)
        out = out.index_add(0, pb, delta_b).index_add(0, pf, delta_f)
    return out.view(C, H, W, D)


# ---------------------------------------------------------------------------------------------- meshes


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals [V, 3] (outward for counter-clockwise faces seen from outside)."""
    P = verts[faces]  # [F, 3, 3]
    fn = _cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])  # [F, 3], length = 2 area
    n = torch.zeros_like(verts).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return F.normalize(n, dim=-1, eps=1e-12)


def normal_consistency(verts: Tensor, faces: Tensor, normals: Tensor | None = None) -> Tensor:
    """Mean over edges of 1 - cos between the vertex normals at the edge's two ends (docs/METHODS.md §3.3)."""
    if faces.shape[0] == 0:
        return verts.new_zeros(())
    n = vertex_normals(verts, faces) if normals is None else normals
    edges, _ = edge_topology(faces)
    return (1.0 - (n[edges[:, 0]] * n[edges[:, 1]]).sum(-1)).mean()


def laplacian_smoothness(verts: Tensor, faces: Tensor) -> Tensor:
    """Mean squared distance of each vertex to the mean of its neighbours (uniform Laplacian)."""
    if faces.shape[0] == 0:
        return verts.new_zeros(())
    edges, _ = edge_topology(faces)
    i, j = torch.cat([edges[:, 0], edges[:, 1]]), torch.cat([edges[:, 1], edges[:, 0]])
    total = torch.zeros_like(verts).index_add(0, i, verts[j])
    degree = torch.zeros(verts.shape[0], dtype=verts.dtype, device=verts.device).index_add(
        0, i, torch.ones_like(i, dtype=verts.dtype))
    used = degree > 0
    lap = verts[used] - total[used] / degree[used, None]
    return lap.pow(2).sum(-1).mean()


class MeshRenderer:
    """render(rep, cams, background) -> RenderOutput for representations with `extract() -> (verts [V, 3],
    faces [F, 3])` and a `field` with `albedo(points)` (DMTet). Pure torch; subclasses swap the three raster
    primitives (`rasterize`, `interpolate`, `antialias`)."""

    name = "torch"

    def rasterize(self, verts: Tensor, faces: Tensor, cams: Cameras) -> Any:
        return rasterize(verts, faces, cams)

    def interpolate(self, attr: Tensor, rast: Any, faces: Tensor) -> Tensor:
        return interpolate(attr, rast, faces)

    def mask(self, rast: Any) -> Tensor:
        return rast.mask

    def depth(self, rast: Any, verts: Tensor, faces: Tensor, cams: Cameras) -> Tensor:
        return rast.depth

    def antialias(self, image: Tensor, rast: Any, verts: Tensor, faces: Tensor, cams: Cameras) -> Tensor:
        return antialias(image, rast, verts, faces, cams)

    def render(self, rep: Any, cams: Cameras, background: Tensor) -> RenderOutput:
        verts, faces = rep.extract()
        return self.render_mesh(rep, verts, faces, cams, background)

    def render_mesh(self, rep: Any, verts: Tensor, faces: Tensor, cams: Cameras, background: Tensor) -> RenderOutput:
        C, H, W = len(cams), cams.height, cams.width
        assert background.shape == (C, 3), f"background {tuple(background.shape)}, expected ({C}, 3)"
        assert verts.dim() == 2 and verts.shape[1] == 3, f"verts {tuple(verts.shape)}"
        dev, dt = verts.device, verts.dtype
        _, dirs = cams.pixel_rays()  # [C, H, W, 3]
        bg = background.to(dt)[:, None, None, :].expand(C, H, W, 3)
        learned = torch.isnan(background).any(-1)
        if bool(learned.any()):
            bg = torch.where(learned[:, None, None, None], rep.background(dirs), bg)
        if faces.shape[0] == 0:  # nothing to draw: background only, zero regularisers
            zero = verts.sum() * 0.0
            aux = {"normal_consistency": zero, "laplacian": zero, "faces": 0,
                   "volume_views": torch.zeros(C, dtype=torch.bool, device=dev)}
            return RenderOutput(bg.contiguous() + zero, torch.zeros(C, H, W, 1, device=dev) + zero,
                                torch.zeros(C, H, W, 1, device=dev), torch.zeros(C, H, W, 3, device=dev), aux)
        rast = self.rasterize(verts, faces, cams)
        mask = self.mask(rast)  # [C, H, W]
        vn = vertex_normals(verts, faces)
        attrs = self.interpolate(torch.cat([verts, vn], dim=1), rast, faces)  # [C, H, W, 6]
        points, normal = attrs[..., :3], F.normalize(attrs[..., 3:], dim=-1, eps=1e-12)
        colour = torch.zeros(C, H, W, 3, dtype=dt, device=dev)
        sel = mask.reshape(-1)
        albedo = rep.field.albedo(points.reshape(-1, 3)[sel])
        shading = getattr(rep, "shading", "albedo")
        if shading != "albedo":
            cam_pos = cams.positions.to(dt)
            light = F.normalize(cam_pos + rep.light_offset.to(dt), dim=-1) * rep.light_distance  # [C, 3]
            view = torch.arange(C, device=dev).repeat_interleave(H * W)[sel]
            p = points.reshape(-1, 3)[sel]
            lambert = (normal.reshape(-1, 3)[sel] * F.normalize(light[view] - p, dim=-1)).sum(-1, keepdim=True)
            lit = rep.cfg.ambient + (1 - rep.cfg.ambient) * lambert.clamp_min(0.0)
            albedo = albedo * lit if shading == "diffuse" else lit.expand(-1, 3)
        colour = colour.reshape(-1, 3).index_put((sel.nonzero()[:, 0],), albedo).view(C, H, W, 3)
        cover = mask[..., None].to(dt)
        image = torch.cat([colour * cover + bg * (1 - cover), cover], dim=-1)  # [C, H, W, 4]
        image = self.antialias(image, rast, verts, faces, cams)
        depth = self.depth(rast, verts, faces, cams)[..., None] * cover
        aux = {"normal_consistency": normal_consistency(verts, faces, vn),
               "laplacian": laplacian_smoothness(verts, faces), "faces": int(faces.shape[0]),
               "volume_views": torch.zeros(C, dtype=torch.bool, device=dev)}
        return RenderOutput(image[..., :3], image[..., 3:], depth, normal * cover, aux)
