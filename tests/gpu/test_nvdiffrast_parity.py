"""nvdiffrast and the pure-torch mesh renderer agree (run on the GPU machine: pytest -m gpu): coverage and
interpolated attributes inside triangles, depth, the antialiased image, and the gradients w.r.t. vertex
positions and colours.

Tolerances: both sample pixel centres, but a centre lying within float rounding of an edge may be claimed by
either neighbour, and the two antialiasing steps differ in details (nvdiffrast picks silhouette edges from its
topology hash per pixel pair; ours by the same rule in a different order), so a few silhouette pixels may
differ; interiors agree to float32 precision. Gradients are compared by direction and size over the whole mesh.
"""

import pytest
import torch

from backend.core.cameras import orbit_cameras
from backend.renderers.mesh_nvdiffrast import NvdiffrastMeshRenderer
from backend.renderers.mesh_torch import MeshRenderer

pytestmark = pytest.mark.gpu


def icosphere_like(n=24, r=0.4):
    """A UV sphere: closed, outward wound."""
    th = torch.linspace(0, torch.pi, n + 1)[1:-1]
    ph = torch.linspace(0, 2 * torch.pi, 2 * n + 1)[:-1]
    t, p = torch.meshgrid(th, ph, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 0, 1]]), ring, torch.tensor([[0.0, 0, -1]])]) * r
    verts = verts * torch.tensor([1.0, 0.7, 1.2])  # not a sphere: silhouettes differ per view
    m = 2 * n
    faces = []
    for j in range(m):
        faces.append([0, 1 + j, 1 + (j + 1) % m])
    for i in range(n - 2):
        for j in range(m):
            a, b = 1 + i * m + j, 1 + i * m + (j + 1) % m
            faces += [[a, a + m, b], [b, a + m, b + m]]
    last = verts.shape[0] - 1
    base = 1 + (n - 2) * m
    for j in range(m):
        faces.append([base + j, last, base + (j + 1) % m])
    faces = torch.tensor(faces)
    P = verts[faces]
    nrm = torch.linalg.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
    flip = (nrm * P.mean(1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return verts, faces


class Rep:
    shading = "albedo"

    def __init__(self, verts, faces, colours):
        self.v, self.f, self.c = verts, faces, colours
        outer = self

        class Field:
            def albedo(self, x):
                # colour from position: smooth, so interpolated positions give comparable colours
                return (x * 0.8 + 0.5).clamp(0, 1) * outer.c

        self.field = Field()

    def extract(self):
        return self.v, self.f


def render(renderer, verts, faces, colour, cams, bg, weights):
    v = verts.detach().cuda().requires_grad_()
    c = colour.detach().cuda().requires_grad_()
    out = renderer.render(Rep(v, faces.cuda(), c), cams.to("cuda"), bg.cuda())
    loss = (out.rgb * weights).sum() + (out.alpha * weights[..., :1]).sum()
    loss.backward()
    return out, v.grad, c.grad


def test_nvdiffrast_matches_the_torch_mesh_renderer():
    verts, faces = icosphere_like()
    colour = torch.tensor([0.9, 0.6, 0.3])
    cams = orbit_cameras([15.0, -20.0, 60.0], [30.0, 200.0, -75.0], 2.0, 45.0, 96, 80)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.5, 0.7]])
    weights = torch.rand(3, 80, 96, 3, generator=torch.Generator().manual_seed(0)).cuda()
    a, gv_a, gc_a = render(NvdiffrastMeshRenderer(), verts, faces, colour, cams, bg, weights)
    b, gv_b, gc_b = render(MeshRenderer(), verts, faces, colour, cams, bg, weights)
    hard_a, hard_b = a.alpha[..., 0] == 1, b.alpha[..., 0] == 1
    agree = (hard_a == hard_b).float().mean()
    assert agree > 0.99
    both = hard_a & hard_b
    assert both.sum() > 1000
    assert torch.allclose(a.rgb[both], b.rgb[both], atol=1e-4)
    assert torch.allclose(a.depth[both], b.depth[both], atol=1e-4)
    assert (a.alpha - b.alpha).abs().mean() < 2e-3
    assert (a.rgb - b.rgb).abs().mean() < 2e-3
    cos = torch.nn.functional.cosine_similarity(gv_a.reshape(-1), gv_b.reshape(-1), dim=0)
    assert cos > 0.95, cos
    assert 0.8 < float(gv_a.norm() / gv_b.norm()) < 1.25
    assert torch.allclose(gc_a, gc_b, rtol=1e-2, atol=1e-2)
