"""DMTet (docs/METHODS.md §3.3): a signed distance on a tetrahedral grid with bounded vertex deformation, turned into
a triangle mesh by differentiable marching tetrahedra, with colour from a hash-grid field.

Tet grid (generated here, nothing downloaded): the Kuhn (Freudenthal) split of a regular grid of n^3 cubes,
6 tets per cube around the cube's main diagonal, (n + 1)^3 vertices and 6 n^3 tets. Neighbouring cubes split
their shared faces along the same diagonal, so the tets conform and the extracted surface is watertight.
Counts: n = 16 -> 4 913 vertices, 24 576 tets (close to quartet's "32": 5 034 / 24 444); n = 32 -> 35 937,
196 608 (quartet's "64": 36 562 / 192 492); n = 64 -> 274 625, 1 572 864 (quartet's "128", ~277k / ~1.52M).

Vertices: p = box_min + (g + s tanh(delta) / n) * (box_max - box_min), g the grid position in [0, 1]^3 and
s = deformation_scale (0.5: at most half a cube edge, as threestudio's 1 / resolution on quartet grids).

SDF (positive inside):
- geometry = "sdf": a per-vertex parameter, from a sphere or from a NeRF (`create_from`);
- geometry = "density": density(p) - density_threshold of the representation's own field, the one field that
  Real3D renders both by volume rendering and as this mesh (the dual renderer); with density_level=occupancy
  the level is 1 - exp(-density * step) of one ray-marching step instead (docs/METHODS.md §2.8's fallback).

Marching tetrahedra: a tet with 1 to 3 corners inside emits 1 or 2 triangles whose corners lie on its
sign-changing edges at p = (p_b s_a - p_a s_b) / (s_a - s_b), differentiable w.r.t. the SDF and the positions.
Points on shared edges are computed once (unique edges), so the mesh is indexed and closed. Triangles are
oriented so that their normal points from the inside corners to the outside ones.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from backend.config import FIELD_SETTINGS, DMTetConfig
from backend.core.outputs import RenderOutput
from backend.core.schedules import parse_schedule
from backend.io.mesh_export import ExportMesh, mesh_ply_arrays
from backend.representations.field import FieldRepresentation, auto_threshold
from backend.representations.nerf import NeRF

TET_EDGES = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]], dtype=torch.long)


def tet_grid(n: int) -> tuple[Tensor, Tensor]:
    """Kuhn split of n^3 cubes of the unit cube: vertices [(n+1)^3, 3] in [0, 1] and positively oriented tets
    [6 n^3, 4]."""
    r = torch.arange(n + 1, dtype=torch.float32) / n
    gx, gy, gz = torch.meshgrid(r, r, r, indexing="ij")
    verts = torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)

    def vid(i: Tensor, j: Tensor, k: Tensor) -> Tensor:
        return (i * (n + 1) + j) * (n + 1) + k

    c = torch.arange(n)
    ci, cj, ck = (a.reshape(-1) for a in torch.meshgrid(c, c, c, indexing="ij"))
    tets = []
    for perm in itertools.permutations(range(3)):
        step = [ci.clone(), cj.clone(), ck.clone()]
        corners = [vid(*step)]
        for axis in perm:  # walk from corner (0,0,0) to (1,1,1) one axis at a time
            step[axis] = step[axis] + 1
            corners.append(vid(*step))
        tets.append(torch.stack(corners, dim=1))
    tets = torch.cat(tets)
    P = verts[tets]
    vol = torch.linalg.det(P[:, 1:] - P[:, :1])
    flip = vol < 0
    tets[flip] = tets[flip][:, [0, 2, 1, 3]]
    return verts, tets


def _triangle_table() -> tuple[Tensor, Tensor]:
    """For each of the 16 inside/outside cases (bit k = corner k inside): up to two triangles as local edge
    indices into TET_EDGES [16, 6] (-1 padded), and the triangle count [16]."""
    edge_of = {tuple(e): i for i, e in enumerate(TET_EDGES.tolist())}

    def e(a: int, b: int) -> int:
        return edge_of[(min(a, b), max(a, b))]

    table = torch.full((16, 6), -1, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    for case in range(1, 15):
        inside = [k for k in range(4) if case >> k & 1]
        outside = [k for k in range(4) if not case >> k & 1]
        if len(inside) in (1, 3):
            lone = inside[0] if len(inside) == 1 else outside[0]
            others = [k for k in range(4) if k != lone]
            table[case, :3] = torch.tensor([e(lone, o) for o in others])
            count[case] = 1
        else:
            a, b = inside
            c, d = outside
            # The quad ac-ad-bd-bc (consecutive corners share a tet corner) as two triangles.
            table[case] = torch.tensor([e(a, c), e(a, d), e(b, d), e(a, c), e(b, d), e(b, c)])
            count[case] = 2
    return table, count


TRIANGLE_TABLE, TRIANGLE_COUNT = _triangle_table()


def marching_tets(pos: Tensor, sdf: Tensor, tets: Tensor) -> tuple[Tensor, Tensor]:
    """Surface {sdf = 0} of a tet mesh: vertices [M, 3] (differentiable w.r.t. pos [V, 3] and sdf [V]) and
    faces [F, 3] int64, with normals pointing outside (sdf < 0)."""
    assert pos.dim() == 2 and pos.shape[1] == 3, f"pos {tuple(pos.shape)}"
    assert sdf.shape == (pos.shape[0],), f"sdf {tuple(sdf.shape)} vs pos {tuple(pos.shape)}"
    dev = pos.device
    with torch.no_grad():
        inside = sdf > 0
        occ = inside[tets]  # [T, 4]
        n_in = occ.sum(1)
        active = (n_in > 0) & (n_in < 4)
        at = tets[active]  # [A, 4]
        if at.shape[0] == 0:
            return pos.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=dev)
        edges = at[:, TET_EDGES.to(dev)].reshape(-1, 2).sort(-1).values  # [A * 6, 2]
        crossing = inside[edges[:, 0]] != inside[edges[:, 1]]
        unique, inverse = torch.unique(edges[crossing], dim=0, return_inverse=True)
        edge_vertex = torch.full((edges.shape[0],), -1, dtype=torch.long, device=dev)
        edge_vertex[crossing] = inverse
        edge_vertex = edge_vertex.view(-1, 6)  # [A, 6]: mesh vertex on each local edge (-1: none)
        case = (occ[active].long() * (2 ** torch.arange(4, device=dev))).sum(1)
        counts = TRIANGLE_COUNT.to(dev)[case]
        table = TRIANGLE_TABLE.to(dev)[case]  # [A, 6]
        tri_local = torch.cat([table[counts >= 1, :3], table[counts == 2, 3:]])  # [F, 3] local edge ids
        tri_tet = torch.cat([torch.nonzero(counts >= 1)[:, 0], torch.nonzero(counts == 2)[:, 0]])
        faces = torch.gather(edge_vertex[tri_tet], 1, tri_local)
    # Differentiable surface points on the crossing edges.
    a, b = unique[:, 0], unique[:, 1]
    sa, sb = sdf[a][:, None], sdf[b][:, None]
    verts = (pos[b] * sa - pos[a] * sb) / (sa - sb)
    # Orientation: the normal must point from the tet's inside corners to its outside corners.
    with torch.no_grad():
        corners = pos[at[tri_tet]]  # [F, 4, 3]
        w_in = occ[active][tri_tet].to(pos.dtype)[..., None]
        c_in = (corners * w_in).sum(1) / w_in.sum(1)
        c_out = (corners * (1 - w_in)).sum(1) / (1 - w_in).sum(1)
        P = verts.detach()[faces]
        normal = torch.linalg.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
        flip = (normal * (c_out - c_in)).sum(-1) < 0
        faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    return verts, faces


class DMTet(FieldRepresentation):
    """A DMTet mesh with a hash-grid colour field (and, for geometry=density, the NeRF it shares the field
    with). kind "mesh": snapshots and the final asset are the extracted mesh."""

    kind = "mesh"

    def __init__(self, cfg: DMTetConfig, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None, box: Tensor | None = None) -> None:
        super().__init__(cfg, device, generator)
        verts, tets = tet_grid(cfg.tet_resolution)
        dev = self.field.encoding.table.device
        self.register_buffer("grid", verts.to(dev))
        self.register_buffer("tets", tets.to(dev))
        if box is None:
            r = min(cfg.radius, 1.5 * max(cfg.init_radius, cfg.blob_radius))
            box = torch.tensor([[-r] * 3, [r] * 3])
        self.register_buffer("box", box.to(dev, torch.float32).clone())  # [2, 3] min and max corners
        self.deformation = nn.Parameter(torch.zeros(verts.shape[0], 3, device=dev))
        if cfg.geometry == "sdf":
            p = self.positions().detach()
            self.sdf = nn.Parameter((cfg.init_radius - p.norm(dim=-1)).clamp(-1, 1))
        else:
            self.sdf = None
        self._implicit_weight = parse_schedule(cfg.implicit_weight, 1)
        self.implicit_weight = 1.0  # this step's weight of volume-rendered views (dual renderer)

    # ------------------------------------------------------------------------------------------ geometry

    @property
    def count(self) -> int:
        return int(self.grid.shape[0])

    def positions(self) -> Tensor:
        """[V, 3] deformed tet-grid vertices in world coordinates."""
        n = self.cfg.tet_resolution
        g = self.grid + self.cfg.deformation_scale / n * torch.tanh(self.deformation)
        return self.box[0] + g * (self.box[1] - self.box[0])

    def vertex_sdf(self, p: Tensor) -> Tensor:
        if self.cfg.geometry == "density":
            sigma = self.field.density(p)
            if self.cfg.density_level == "occupancy":
                return (1.0 - torch.exp(-sigma * self.step_size)) - self.cfg.density_threshold
            return sigma - self.cfg.density_threshold
        return self.sdf

    def extract(self) -> tuple[Tensor, Tensor]:
        """The current surface: vertices [M, 3] (differentiable) and faces [F, 3]."""
        p = self.positions()
        return marching_tets(p, self.vertex_sdf(p), self.tets)

    # ------------------------------------------------------------------------------------------ optimisation

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        groups.append({"name": "deformation", "params": [self.deformation], "lr": self.cfg.deformation_lr})
        if self.sdf is not None:
            groups.append({"name": "sdf", "params": [self.sdf], "lr": self.cfg.sdf_lr})
        return groups

    def begin_step(self, step: int, total_steps: int) -> None:
        super().begin_step(step, total_steps)
        self._implicit_weight = parse_schedule(self.cfg.implicit_weight, total_steps)
        self.implicit_weight = self._implicit_weight.at(step) if self.cfg.geometry == "density" else 0.0

    @torch.no_grad()
    def after_backward(self, step: int, total_steps: int, out: RenderOutput,
                       optimizers: list[torch.optim.Optimizer]) -> dict[str, int]:
        if self.cfg.geometry == "density":  # the occupancy grid serves the volume-rendered views
            return super().after_backward(step, total_steps, out, optimizers)
        return {}

    # ------------------------------------------------------------------------------------------ creation

    @classmethod
    def create_from(cls, other: Any, cfg: DMTetConfig, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> DMTet:
        """A DMTet initialised from a NeRF (Magic3D's refine stage, docs/METHODS.md §3.3): the field, background and
        occupancy grid are copied (the field settings must match, as validate() checks), the grid covers the
        tight bounds of {density > threshold} grown by `box_margin`, SDF = clamp(density - threshold, -1, 1),
        deformation 0."""
        if not isinstance(other, NeRF):
            raise TypeError(f"dmtet can start from a nerf, not from {type(other).__name__}")
        for k in FIELD_SETTINGS:
            if getattr(cfg, k) != getattr(other.cfg, k):
                raise ValueError(f"representation.{k} of the dmtet stage ({getattr(cfg, k)}) differs from the nerf "
                                 f"stage's ({getattr(other.cfg, k)}); the mesh keeps the NeRF's field")
        with torch.no_grad():
            lattice = tet_grid(cfg.tet_resolution)[0].to(other.field.encoding.table.device)
            probe = (lattice * 2 - 1) * other.radius
            sigma = torch.cat([other.field.density(c) for c in probe.split(65536)])
            tau = cfg.init_threshold or auto_threshold(sigma)
            inside = probe[sigma > tau]
            if inside.shape[0] == 0:
                raise ValueError(f"the NeRF has no density above {tau:g} (representation.init_threshold): nothing "
                                 "to start the mesh from")
            lo, hi = inside.amin(0), inside.amax(0)
            grow = (hi - lo) * cfg.box_margin + 2 * other.radius / cfg.tet_resolution  # + one lattice step
            box = torch.stack([(lo - grow).clamp_min(-other.radius), (hi + grow).clamp_max(other.radius)])
        rep = cls(cfg, device, generator, box=box)
        rep.field.load_state_dict(other.field.state_dict())
        rep.background.load_state_dict(other.background.state_dict())
        rep.occupancy.load_state_dict(other.occupancy.state_dict())
        with torch.no_grad():
            p = rep.positions()
            sigma = torch.cat([rep.field.density(c) for c in p.split(65536)])
            if rep.sdf is not None:
                rep.sdf.copy_((sigma - tau).clamp(-1, 1))
        rep.init_threshold_used = float(tau)
        return rep

    # ------------------------------------------------------------------------------------------ I/O

    def snapshot(self, max_points: int | None = None) -> dict[str, np.ndarray]:
        return mesh_ply_arrays(self.export_mesh())

    def export_mesh(self) -> ExportMesh:
        """The extracted mesh as it is (docs/METHODS.md §3.4), with albedo per vertex."""
        with torch.no_grad():
            v, f = self.extract()
            colours = self.field.albedo(v) if v.shape[0] else v.new_zeros(0, 3)
        return ExportMesh(v.cpu().numpy().astype(np.float32), f.cpu().numpy().astype(np.int64),
                          colours.cpu().numpy().astype(np.float32))
