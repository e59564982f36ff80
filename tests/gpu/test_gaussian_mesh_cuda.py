"""Gaussians -> textured mesh on the GPU (pytest -m gpu): the density grid on CUDA and the bake renders by gsplat
give the same mesh and colours as the CPU path."""

import numpy as np
import pytest
import torch

from backend.config import MeshConversionConfig
from backend.renderers.base import PlainGaussians
from backend.renderers.gaussians_gsplat import GsplatGaussianRenderer
from backend.representations import gaussian_mesh as gm
from backend.representations.gaussians import SH_C0

pytestmark = pytest.mark.gpu

COLOUR = torch.tensor([0.8, 0.25, 0.1])


def ball(device, n=3000):
    g = torch.Generator().manual_seed(0)
    d = torch.randn(n, 3, generator=g)
    means = 0.4 * d / d.norm(dim=1, keepdim=True) * torch.rand(n, 1, generator=g).pow(1 / 3)
    sh = ((COLOUR - 0.5) / SH_C0).expand(n, 1, 3).clone()
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)
    cloud = PlainGaussians(means, torch.full((n, 3), 0.04), quats, torch.full((n,), 0.9), sh)
    return PlainGaussians(*(getattr(cloud, k).to(device) for k in ("means", "scales", "quats", "opacities", "sh")))


def test_cuda_density_and_gsplat_bake_match_the_cpu():
    cfg = MeshConversionConfig(resolution=96, faces=8000, texture_size=512, views=16, view_resolution=256)
    grid_cpu, lo_cpu, h_cpu = gm.density_grid(ball("cpu"), cfg.resolution, cfg.min_opacity)
    grid_gpu, lo_gpu, h_gpu = gm.density_grid(ball("cuda"), cfg.resolution, cfg.min_opacity)
    assert h_gpu == pytest.approx(h_cpu) and np.allclose(lo_gpu, lo_cpu)
    assert torch.allclose(grid_gpu.cpu(), grid_cpu, atol=1e-4)
    mesh = gm.gaussians_to_mesh(ball("cuda"), cfg, GsplatGaussianRenderer())
    assert 0 < len(mesh.faces) <= 8000
    assert np.abs(mesh.texture.reshape(-1, 3) - COLOUR.numpy()).max(axis=1).mean() < 0.03
