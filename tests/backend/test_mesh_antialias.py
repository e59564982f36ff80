"""Edge gradients of the pure-torch mesh rasteriser: the analytic antialiasing step against the closed-form
projected area of a triangle, its gradient against finite differences, and the mesh renderer on a cube."""

import numpy as np
import torch

from backend.core.cameras import Cameras, orbit_cameras
from backend.renderers.mesh_torch import (
    MeshRenderer,
    antialias,
    edge_topology,
    interpolate,
    laplacian_smoothness,
    normal_consistency,
    rasterize,
    vertex_normals,
)


def pinhole(width=40, height=32, f=36.0, dtype=torch.float64):
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)[None]
    z = torch.zeros(1, dtype=dtype)
    return Cameras(torch.eye(4, dtype=dtype)[None], K, width, height, z, z, z + 1.0, z + 40.0)


TRIANGLE = torch.tensor([[-0.61, -0.43, 2.0], [0.83, -0.22, 3.1], [-0.12, 0.71, 2.4]], dtype=torch.float64)
FACES = torch.tensor([[0, 1, 2]])


def projected_area(cams, verts):
    K = cams.K[0]
    uv = torch.stack([K[0, 0] * verts[:, 0] / verts[:, 2] + K[0, 2], K[1, 1] * verts[:, 1] / verts[:, 2] + K[1, 2]], -1)
    a, b, c = uv
    return 0.5 * abs(float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])))


def coverage(verts, cams):
    rast = rasterize(verts, FACES, cams)
    alpha = rast.mask[..., None].to(verts.dtype)
    return antialias(alpha, rast, verts, FACES, cams)


def test_antialiased_coverage_of_a_triangle_is_its_projected_area():
    cams = pinhole()
    hard = rasterize(TRIANGLE, FACES, cams).mask.sum().item()
    soft = coverage(TRIANGLE, cams).sum().item()
    area = projected_area(cams, TRIANGLE)
    assert abs(soft - area) < 0.02 * area, (soft, area, hard)
    # Antialiasing only touches pixels on either side of the silhouette.
    aa = coverage(TRIANGLE, cams)[0, ..., 0]
    changed = aa != rasterize(TRIANGLE, FACES, cams).mask[0].to(aa.dtype)
    assert 0 < changed.sum() < 0.5 * hard


def test_gradient_of_coverage_matches_the_area_gradient_and_finite_differences():
    cams = pinhole()
    v = TRIANGLE.clone().requires_grad_(True)
    coverage(v, cams).sum().backward()
    h = 1e-5
    fd_area = torch.zeros_like(TRIANGLE)
    for i in range(3):
        for j in range(3):
            dv = torch.zeros_like(TRIANGLE)
            dv[i, j] = h
            fd_area[i, j] = (projected_area(cams, TRIANGLE + dv) - projected_area(cams, TRIANGLE - dv)) / (2 * h)
    assert fd_area.abs().max() > 10  # teeth: moving a corner changes the area a lot
    # The antialiased gradient follows the true area gradient (pixel-grid discretisation: ~10%).
    cos = torch.nn.functional.cosine_similarity(v.grad.reshape(-1), fd_area.reshape(-1), dim=0)
    assert cos > 0.97, (v.grad, fd_area)
    assert torch.allclose(v.grad, fd_area, rtol=0.2, atol=0.15 * fd_area.abs().max())
    # Locally (no pixel changes face) the analytic gradient is the exact derivative of the antialiased image.
    w = torch.rand(1, cams.height, cams.width, 1, dtype=torch.float64)

    def f(x):
        return (coverage(x, cams) * w).sum()

    v2 = TRIANGLE.clone().requires_grad_(True)
    f(v2).backward()
    h = 1e-7
    for i, j in ((0, 0), (1, 1), (2, 0)):
        dv = torch.zeros_like(TRIANGLE)
        dv[i, j] = h
        fd = (f(TRIANGLE + dv) - f(TRIANGLE - dv)) / (2 * h)
        assert abs(float(v2.grad[i, j]) - float(fd)) < 1e-4 * max(1.0, abs(float(fd))), (i, j, v2.grad, fd)


def cube(half=0.4):
    c = torch.tensor([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)],
                     dtype=torch.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, cc, d in quads:
        faces += [(a, b, cc), (a, cc, d)]
    faces = torch.tensor(faces)
    # wind outward
    centre = c[faces].mean(1)
    n = torch.linalg.cross(c[faces[:, 1]] - c[faces[:, 0]], c[faces[:, 2]] - c[faces[:, 0]])
    flip = (n * centre).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return c, faces


def test_mesh_helpers_on_a_cube():
    v, f = cube()
    edges, face_edges = edge_topology(f)
    assert edges.shape == (18, 2) and face_edges.shape == (12, 3)
    n = vertex_normals(v, f)
    assert ((n * v).sum(-1) > 0).all()  # outward
    assert normal_consistency(v, f) > 0
    assert laplacian_smoothness(v, f) > 0
    # A sphere-like refinement is smoother than the cube's corners: a flat fan has zero normal consistency loss.
    flat = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    assert normal_consistency(flat, torch.tensor([[0, 1, 2], [1, 3, 2]])) < 1e-6


class _Field:
    def albedo(self, x):
        return (x * 0 + torch.tensor([0.2, 0.6, 0.9])).to(x)


class _Rep:
    shading = "albedo"
    field = _Field()

    def __init__(self, v, f):
        self.v, self.f = v, f

    def extract(self):
        return self.v, self.f


def test_mesh_renderer_silhouette_gradients_grow_a_cube_towards_a_target():
    v, f = cube(0.3)
    cams = orbit_cameras([20.0, 10.0], [30.0, 120.0], 2.0, 40.0, 48)
    target = MeshRenderer().render(_Rep(cube(0.4)[0], f), cams, torch.ones(2, 3)).alpha.detach()
    scale = torch.tensor(1.0, requires_grad=True)
    out = MeshRenderer().render(_Rep(v * scale, f), cams, torch.ones(2, 3))
    assert out.rgb.shape == (2, 48, 48, 3) and out.alpha.shape == (2, 48, 48, 1)
    covered = out.alpha[..., 0] == 1
    assert covered.sum() > 300
    assert np.allclose(out.rgb[covered].detach().numpy(), [0.2, 0.6, 0.9], atol=1e-6)
    assert torch.allclose(out.rgb[out.alpha[..., 0] == 0], torch.ones(3))
    ((out.alpha - target) ** 2).sum().backward()
    assert scale.grad < 0  # growing the cube reduces the silhouette error: only edges carry this gradient
    assert out.aux["normal_consistency"] > 0 and out.aux["faces"] == 12


def test_interpolate_and_antialias_keep_interior_untouched():
    cams = pinhole()
    rast = rasterize(TRIANGLE, FACES, cams)
    img = interpolate(torch.eye(3, dtype=torch.float64), rast, FACES)
    aa = antialias(img, rast, TRIANGLE, FACES, cams)
    interior = (rast.bary > 0.1).all(-1)
    assert torch.equal(aa[interior], img[interior])
    assert not torch.equal(aa, img)
