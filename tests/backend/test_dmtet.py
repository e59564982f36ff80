"""DMTet: the generated tet grid, marching tetrahedra on an analytic sphere (closed, outward, right volume),
gradients w.r.t. the SDF, and create_from(nerf) keeping the NeRF's silhouette."""

import math

import torch

from backend.config import DMTetConfig, NeRFConfig
from backend.core.cameras import orbit_cameras
from backend.renderers.mesh_torch import MeshRenderer
from backend.renderers.volume_torch import VolumeRenderer
from backend.representations.dmtet import DMTet, marching_tets, tet_grid
from backend.representations.nerf import NeRF


def signed_volume(v, f):
    P = v[f].double()
    return float(torch.einsum("ij,ij->i", P[:, 0], torch.linalg.cross(P[:, 1], P[:, 2])).sum() / 6)


def test_tet_grid_counts_and_orientation():
    for n in (3, 16):
        v, t = tet_grid(n)
        assert v.shape == ((n + 1) ** 3, 3) and t.shape == (6 * n**3, 4)
        P = v[t].double()
        vol = torch.linalg.det(P[:, 1:] - P[:, :1]) / 6
        assert (vol > 0).all()
        assert math.isclose(float(vol.sum()), 1.0, rel_tol=1e-9)  # the tets tile the unit cube exactly
    assert tet_grid(16)[0].shape[0] == 4913 and tet_grid(32)[1].shape[0] == 196_608


def test_marching_tets_on_a_sphere_gives_a_closed_outward_mesh_of_the_right_volume():
    g, tets = tet_grid(24)
    p = g * 2 - 1
    r = 0.6
    v, f = marching_tets(p, r - p.norm(dim=-1), tets)
    assert f.shape[0] > 1000
    # Closed and consistently wound: every directed edge appears once, its reverse once.
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert torch.unique(e, dim=0).shape[0] == e.shape[0]
    _, counts = torch.unique(e.sort(1).values, dim=0, return_counts=True)
    assert (counts == 2).all()
    vol = signed_volume(v, f)
    assert abs(vol - 4 / 3 * math.pi * r**3) < 0.03 * 4 / 3 * math.pi * r**3  # positive: normals face outwards
    assert torch.allclose(v.norm(dim=-1), torch.full((v.shape[0],), r), atol=0.02)


def test_marching_tets_is_differentiable_wrt_sdf_and_positions():
    g, tets = tet_grid(8)
    p = (g * 2 - 1).double()
    sdf = (0.53 - p.norm(dim=-1)).requires_grad_(True)  # no vertex exactly on the surface
    pos = p.clone().requires_grad_(True)

    def vol(s, q):
        v, f = marching_tets(q, s, tets)
        return signed_volume_t(v, f)

    out = vol(sdf, pos)
    out.backward()
    assert sdf.grad.abs().sum() > 0 and pos.grad.abs().sum() > 0
    # Raising the SDF everywhere grows the shape; finite differences agree with autograd.
    h = 1e-6
    d = torch.zeros_like(sdf)
    d[sdf.detach().abs() < 0.2] = 1.0
    fd = (vol(sdf.detach() + h * d, p) - vol(sdf.detach() - h * d, p)) / (2 * h)
    assert fd > 0
    assert abs(float((sdf.grad * d).sum()) - float(fd)) < 1e-5 * max(1.0, abs(float(fd)))


def signed_volume_t(v, f):
    P = v[f]
    return torch.einsum("ij,ij->i", P[:, 0], torch.linalg.cross(P[:, 1], P[:, 2])).sum() / 6


FIELD = dict(radius=1.0, grid_levels=4, grid_log2_table=12, grid_base_resolution=8, grid_scale=2.0,
             grid_start_levels=4, hidden=16, samples_per_diagonal=256, normals="none", albedo_until=1.0,
             blob_density=200.0, blob_radius=0.45)


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum()) / float((a | b).sum())


def test_create_from_nerf_preserves_the_silhouette():
    nerf = NeRF(NeRFConfig(**FIELD), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # break the blob's symmetry so the test is not just a sphere: an offset bump
        nerf.field.encoding.table.add_(torch.randn_like(nerf.field.encoding.table) * 0.5)
    nerf.refresh_occupancy()
    mesh = DMTet.create_from(nerf, DMTetConfig(**FIELD, tet_resolution=24, init_threshold=5.0),
                             generator=torch.Generator().manual_seed(0))
    assert (mesh.box[1] - mesh.box[0]).max() < 1.5  # the grid shrank to the tight bounds
    assert torch.equal(mesh.field.encoding.table, nerf.field.encoding.table)
    cams = orbit_cameras([15.0, 30.0, -10.0], [0.0, 100.0, 220.0], 2.0, 40.0, 48)
    bg = torch.ones(3, 3)
    with torch.no_grad():
        # The NeRF's silhouette at the same level: alpha of a volume render is a soft mask, so compare with
        # the occupancy of density > threshold seen through the renderer (a hard blob has alpha ~ 1 inside).
        a_nerf = VolumeRenderer().render(nerf, cams, bg).alpha
        a_mesh = MeshRenderer().render(mesh, cams, bg).alpha
    assert iou(a_nerf, a_mesh) > 0.85, iou(a_nerf, a_mesh)
    v, f = mesh.extract()
    assert f.shape[0] > 100 and v.requires_grad


def test_density_geometry_reads_the_shared_field():
    cfg = DMTetConfig(**FIELD, geometry="density", tet_resolution=12, density_threshold=0.1)
    rep = DMTet(cfg, generator=torch.Generator().manual_seed(0))
    assert rep.sdf is None
    v, f = rep.extract()
    assert f.shape[0] > 50  # the blob crosses the threshold: the mesh branch is not empty at step 0
    v.sum().backward()
    assert rep.field.encoding.table.grad is not None and rep.deformation.grad is not None
    rep.begin_step(0, 100)
    assert rep.implicit_weight == 1.0
    rep.begin_step(99, 100)
    assert rep.implicit_weight == 0.0
    names = {g["name"] for g in rep.param_groups()}
    assert names == {"field", "background", "deformation"}


def test_occupancy_level_puts_the_surface_deeper_than_a_low_density_level():
    base = dict(**FIELD, geometry="density", tet_resolution=16, density_threshold=0.1)
    low = DMTet(DMTetConfig(**base), generator=torch.Generator().manual_seed(0))
    occ = DMTet(DMTetConfig(**base, density_level="occupancy"), generator=torch.Generator().manual_seed(0))
    r_low = low.extract()[0].norm(dim=-1).mean()
    r_occ = occ.extract()[0].norm(dim=-1).mean()
    # occupancy 0.1 over one step means density = -ln(0.9) / step, far above 0.1
    sigma = -math.log(0.9) / occ.step_size
    assert sigma > 1.0 and r_occ < r_low
