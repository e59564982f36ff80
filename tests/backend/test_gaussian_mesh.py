"""Gaussians -> textured mesh: the density grid, the surface, the baked texture and the GLB."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from backend.config import MeshConversionConfig
from backend.io.mesh_export import write_glb
from backend.renderers.gaussians_torch import TorchGaussianRenderer
from backend.representations import gaussian_mesh as gm
from backend.representations.gaussians import SH_C0


@dataclass
class Cloud:
    """A GaussianCloud built from activated values."""

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor
    sh_degree: int = 0


def cloud_of(means, scales, opacities, colours, quats=None) -> Cloud:
    n = len(means)
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1) if quats is None else quats
    sh = ((torch.as_tensor(colours, dtype=torch.float32).expand(n, 3) - 0.5) / SH_C0)[:, None, :]
    return Cloud(torch.as_tensor(means, dtype=torch.float32), quats, torch.as_tensor(scales, dtype=torch.float32),
                 torch.as_tensor(opacities, dtype=torch.float32).expand(n).clone(), sh)


def ball(n=1500, radius=0.4, colour=(0.8, 0.25, 0.1), seed=0) -> Cloud:
    """Gaussians filling a ball, opaque, one colour."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    r = radius * torch.rand(n, 1, generator=g).pow(1 / 3)
    return cloud_of(d * r, torch.full((n, 3), 0.05), 0.9, torch.as_tensor(colour))


def density_at(grid, lo, h, point):
    idx = np.round((np.asarray(point) - lo) / h).astype(int)
    return float(grid[tuple(idx)]), lo + idx * h


def test_density_grid_is_the_opacity_weighted_kernel_of_each_gaussian():
    # One anisotropic, rotated Gaussian (45 degrees about z) and one round one far away.
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    quats = torch.tensor([[c, 0, 0, s], [1.0, 0, 0, 0]])
    scales = torch.tensor([[0.2, 0.05, 0.1], [0.08, 0.08, 0.08]])
    cloud = cloud_of([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0]], scales, torch.tensor([0.8, 0.5]),
                     torch.tensor([0.5, 0.5, 0.5]), quats)
    grid, lo, h = gm.density_grid(cloud, resolution=96, min_opacity=0.0)
    grid = grid.numpy()
    R = np.array([[c * c - s * s, -2 * c * s, 0], [2 * c * s, c * c - s * s, 0], [0, 0, 1]])
    # Each kernel is widened by the grid's prefilter: a Gaussian of std FILTER_VOXELS voxels.
    blur = (gm.FILTER_VOXELS * h) ** 2 * np.eye(3)
    cov = R @ np.diag([0.2, 0.05, 0.1]) ** 2 @ R.T + blur
    for p in ([0.0, 0.0, 0.0], [0.1, 0.1, 0.0], [0.1, -0.1, 0.0], [0.0, 0.0, 0.1]):
        value, x = density_at(grid, lo, h, p)
        expected = 0.8 * math.exp(-0.5 * x @ np.linalg.solve(cov, x))
        assert value == pytest.approx(expected, abs=1e-4)
    # Along the long axis (the (1, 1) diagonal) it stays high; across it, it falls fast.
    along, _ = density_at(grid, lo, h, [0.1, 0.1, 0.0])
    across, _ = density_at(grid, lo, h, [0.1, -0.1, 0.0])
    assert along > 0.5 > 0.05 > across
    value, x = density_at(grid, lo, h, [1.0, 0.5, 0.0])
    var = 0.08**2 + blur[0, 0]
    assert value == pytest.approx(0.5 * math.exp(-0.5 * ((x - [1.0, 0.5, 0.0]) ** 2).sum() / var), abs=1e-4)
    # Cut off at 3 sigma: half-way between them there is nothing; the grid's border is empty (closed surfaces).
    assert density_at(grid, lo, h, [0.6, 0.3, 0.0])[0] == 0.0
    assert max(np.abs(grid[[0, -1]]).max(), np.abs(grid[:, [0, -1]]).max(), np.abs(grid[:, :, [0, -1]]).max()) == 0


def test_a_lone_gaussian_gives_a_closed_sphere_at_the_level_set_radius():
    sigma, opacity = 0.2, 0.9
    cloud = cloud_of([[0.3, -0.2, 0.1]], [[sigma] * 3], opacity, torch.tensor([0.2, 0.6, 0.9]))
    for faces in (0, 600):
        cfg = MeshConversionConfig(resolution=48, level=0.2, faces=faces)
        v, f = gm.extract_surface(cloud, cfg)
        import trimesh

        mesh = trimesh.Trimesh(v, f, process=True)
        assert mesh.is_watertight and mesh.volume > 0  # closed and wound outwards
        r = np.linalg.norm(v - [0.3, -0.2, 0.1], axis=1)
        h = 2 * gm.KERNEL_SIGMAS * sigma / 48  # the voxel size: the 3-sigma box over 48 cells
        s2 = sigma**2 + (gm.FILTER_VOXELS * h) ** 2  # the kernel after the grid's prefilter
        expected = math.sqrt(2 * s2 * math.log(opacity / 0.2))  # o exp(-r^2 / 2 s2) = level
        assert abs(r.mean() - expected) < 0.01 * expected and r.std() < 0.03 * expected
        if faces:
            assert len(f) <= faces


def test_floaters_are_dropped_and_transparent_gaussians_ignored():
    main = ball(n=800)
    extra = cloud_of([[2.0, 0, 0], [0, 2.0, 0]], [[0.02] * 3, [0.3] * 3], torch.tensor([0.9, 0.01]),
                     torch.tensor([0.5, 0.5, 0.5]))
    cloud = Cloud(*(torch.cat([getattr(main, k), getattr(extra, k)]) for k in ("means", "quats", "scales",
                                                                                 "opacities", "sh")))
    v, f = gm.extract_surface(cloud, MeshConversionConfig(resolution=64))
    assert len(f) > 100
    assert np.linalg.norm(v, axis=1).max() < 0.7  # neither the tiny floater nor the transparent blob remains


def test_baked_texture_has_the_gaussians_colour_and_renders_like_them():
    colour = torch.tensor([0.8, 0.25, 0.1])
    cloud = ball(colour=colour)
    cfg = MeshConversionConfig(resolution=40, faces=2000, texture_size=128, views=6, view_resolution=96)
    mesh = gm.gaussians_to_mesh(cloud, cfg)
    assert mesh.texture.shape == (128, 128, 3) and mesh.uv.shape == (len(mesh.vertices), 2)
    assert mesh.uv.min() >= 0 and mesh.uv.max() <= 1
    texels = mesh.texture.reshape(-1, 3)
    assert np.abs(texels - colour.numpy()).max(axis=1).mean() < 0.03  # the whole atlas, fill included
    assert np.abs(mesh.colours - colour.numpy()).max() < 0.08  # vertex colours come from the texture
    # The textured mesh seen from new cameras looks like the Gaussians: same silhouette, same colour.
    cams = gm.ring_cameras(mesh.vertices, [20.0], [10.0, 100.0, 190.0], 64)
    white = torch.ones(3, 3)
    g = TorchGaussianRenderer().render(cloud, cams, white)
    rgb, alpha = gm.textured_render_fn(mesh)(cams, white)
    inside = (g.alpha[..., 0] > 0.5) & (alpha[..., 0] > 0.5)
    union = (g.alpha[..., 0] > 0.5) | (alpha[..., 0] > 0.5)
    assert inside.sum() / union.sum() > 0.9
    solid = (g.alpha[..., 0] > 0.99) & (alpha[..., 0] > 0.99)  # not a silhouette pixel blended with white
    assert solid.sum() > 0.5 * inside.sum()
    assert (rgb[solid] - colour).abs().max() < 0.05


def test_two_coloured_halves_land_on_their_own_side_of_the_texture():
    a = ball(n=700, colour=(0.9, 0.1, 0.1), seed=1)
    b = ball(n=700, colour=(0.1, 0.2, 0.9), seed=2)
    a.means[:, 0] = a.means[:, 0].abs() + 0.02  # red on +x, blue on -x
    b.means[:, 0] = -b.means[:, 0].abs() - 0.02
    cloud = Cloud(*(torch.cat([getattr(a, k), getattr(b, k)]) for k in ("means", "quats", "scales", "opacities",
                                                                          "sh")))
    mesh = gm.gaussians_to_mesh(cloud, MeshConversionConfig(resolution=40, faces=2000, texture_size=128, views=6,
                                                            view_resolution=96))
    far = np.abs(mesh.vertices[:, 0]) > 0.15  # away from the seam
    red = mesh.colours[:, 0] > mesh.colours[:, 2]
    assert (red[far] == (mesh.vertices[far, 0] > 0)).mean() > 0.97


def test_glb_loads_back_with_its_texture(tmp_path):
    import trimesh

    mesh = gm.gaussians_to_mesh(ball(n=600), MeshConversionConfig(resolution=32, faces=1000, texture_size=128,
                                                                  views=4, view_resolution=64))
    write_glb(tmp_path / "asset.glb", mesh)
    scene = trimesh.load(tmp_path / "asset.glb")
    (geom,) = scene.geometry.values()
    assert len(geom.faces) == len(mesh.faces)
    image = geom.visual.material.baseColorTexture
    assert image.size == (128, 128)
    # A vertex's texel in the loaded image (glTF v runs bottom-up in trimesh) has the baked colour.
    uv = geom.visual.uv
    px = np.asarray(image.convert("RGB"))
    cols = np.clip((uv[:, 0] * 128).astype(int), 0, 127)
    rows = np.clip(((1 - uv[:, 1]) * 128).astype(int), 0, 127)
    assert np.abs(px[rows, cols] / 255.0 - [0.8, 0.25, 0.1]).max(axis=1).mean() < 0.05


def test_nothing_opaque_gives_an_empty_mesh():
    cloud = cloud_of([[0.0, 0, 0]], [[0.1] * 3], 0.005, torch.tensor([0.5, 0.5, 0.5]))
    mesh = gm.gaussians_to_mesh(cloud, MeshConversionConfig())
    assert mesh.faces.shape == (0, 3) and mesh.vertices.shape == (0, 3)
