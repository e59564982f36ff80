"""NeRF: the hash grid against its closed form, volume rendering of a known density against the known
transmittance, occupancy skipping, normals, learned backgrounds and the per-step schedule."""

import math
from types import SimpleNamespace

import torch

from backend.config import NeRFConfig
from backend.core.cameras import orbit_cameras
from backend.renderers.volume_torch import VolumeRenderer, ray_box
from backend.representations.field import PRIMES, HashGrid
from backend.representations.nerf import NeRF

SMALL = dict(radius=1.0, grid_levels=4, grid_log2_table=12, grid_base_resolution=8, grid_scale=2.0,
             grid_start_levels=4, hidden=16, samples_per_diagonal=256, normals="none", albedo_until=1.0)


def test_hash_grid_indexing_and_trilinear_interpolation_are_the_closed_form():
    grid = HashGrid(levels=2, features=1, log2_table=10, base_resolution=8, scale=4.0)
    assert grid.resolutions == [8, 32] and grid.dense == [True, False]  # 9^3 fits 1024 entries, 33^3 does not
    cell = torch.tensor([[3, 5, 7]])
    dense = grid.level_indices(0, cell)[0]
    assert dense[0] == 3 + 9 * (5 + 9 * 7) and dense[7] == 4 + 9 * (6 + 9 * 8)
    hashed = grid.level_indices(1, cell)[0]
    expected = ((3 * PRIMES[0]) ^ (5 * PRIMES[1]) ^ (7 * PRIMES[2])) % 1024 + grid.offsets[1]
    assert hashed[0] == expected
    # Trilinear interpolation reproduces a linear function of the lattice: store x + 2y - z at each corner.
    with torch.no_grad():
        r = 9
        i = torch.arange(r**3)
        x, y, z = i % r, (i // r) % r, i // (r * r)
        grid.table[: r**3, 0] = (x + 2 * y - z).float()
    grid.active.fill_(1)
    u = torch.rand(50, 3)
    feats = grid(u)
    assert feats.shape == (50, 2)
    want = 8 * (u[:, 0] + 2 * u[:, 1] - u[:, 2])
    assert torch.allclose(feats[:, 0], want, atol=1e-4)
    assert (feats[:, 1] == 0).all()  # inactive levels output zeros


class BallField(torch.nn.Module):
    """Constant density inside a ball, constant colour: the transmittance is closed-form."""

    def __init__(self, sigma, radius):
        super().__init__()
        self.sigma, self.r = sigma, radius

    def forward(self, x, albedo=True):
        s = torch.where(x.norm(dim=-1) < self.r, torch.full_like(x[:, 0], self.sigma), torch.zeros_like(x[:, 0]))
        return s, torch.full_like(x, 0.25)

    def density(self, x):
        return self.forward(x)[0]


def test_volume_rendering_of_a_known_density_gives_the_known_transmittance():
    sigma, r0 = 3.0, 0.5
    cfg = NeRFConfig(radius=1.0, samples_per_diagonal=2048, alpha_threshold=0.0, normals="none")
    occupancy = SimpleNamespace(occupied=lambda x: torch.ones(x.shape[0], dtype=torch.bool))
    rep = SimpleNamespace(cfg=cfg, field=BallField(sigma, r0), occupancy=occupancy, radius=1.0,
                          step_size=math.sqrt(3) * 2 / 2048, shading="albedo", background=None)
    cams = orbit_cameras([20.0], [30.0], 2.0, 40.0, 32)
    out = VolumeRenderer().render(rep, cams, torch.tensor([[1.0, 0.0, 0.0]]))
    o, d = cams.pixel_rays()
    b = torch.linalg.cross(o.reshape(-1, 3), d.reshape(-1, 3)).norm(dim=-1)  # ray distance to the centre
    chord = 2 * (r0**2 - b**2).clamp_min(0).sqrt()
    alpha = 1 - torch.exp(-sigma * chord)
    got = out.alpha.reshape(-1)
    inside = b < r0 - 0.02  # away from the rim, where the step grid cannot resolve the chord
    assert inside.sum() > 100
    assert torch.allclose(got[inside], alpha[inside], atol=0.01)
    assert (got[b > r0 + 0.01] == 0).all()
    # Colour over the red background: 0.25 * alpha + (1 - alpha) * bg.
    rgb = out.rgb.reshape(-1, 3)
    assert torch.allclose(rgb[inside, 1], 0.25 * got[inside], atol=1e-5)
    assert torch.allclose(rgb[inside, 0], 0.25 * got[inside] + 1 - got[inside], atol=1e-5)


def test_ray_box_intersection():
    o = torch.tensor([[0.0, -3.0, 0.0], [0.0, -3.0, 2.0]])
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    near, far = ray_box(o, d, 1.0)
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert far[1] <= near[1]  # misses


def test_occupancy_skipping_changes_nothing_visible_and_gradients_reach_the_grid():
    cfg = NeRFConfig(**SMALL, blob_density=40.0, alpha_threshold=0.0)
    rep = NeRF(cfg, generator=torch.Generator().manual_seed(0))
    assert 0 < rep.count < rep.occupancy.mask.numel()  # the blob occupies part of the cube
    cams = orbit_cameras([15.0, 40.0], [0.0, 120.0], 2.0, 40.0, 24)
    bg = torch.ones(2, 3)
    out = VolumeRenderer().render(rep, cams, bg)
    full = NeRF(cfg, generator=torch.Generator().manual_seed(0))
    full.occupancy.mask.fill_(True)
    ref = VolumeRenderer().render(full, cams, bg)
    assert out.aux["samples"] < 0.3 * ref.aux["samples"]
    assert (out.alpha - ref.alpha).abs().max() < 0.01
    assert out.alpha.max() > 0.9  # the blob is visible
    # The alpha threshold drops faint samples too (nerfacc's rule): fewer samples again.
    pruned = NeRF(NeRFConfig(**SMALL, blob_density=40.0), generator=torch.Generator().manual_seed(0))
    assert VolumeRenderer().render(pruned, cams, bg).aux["samples"] < out.aux["samples"]
    out.rgb.sum().backward()
    assert rep.field.encoding.table.grad.abs().sum() > 0
    assert rep.field.albedo_head[0].weight.grad is not None


def test_blob_normals_point_outwards_and_both_kinds_agree():
    rep = NeRF(NeRFConfig(**SMALL), generator=torch.Generator().manual_seed(1))
    x = torch.randn(64, 3)
    x = 0.3 * x / x.norm(dim=-1, keepdim=True)
    _, _, na = rep.field.normals(x, "analytic")
    _, _, nf = rep.field.normals(x, "finite_difference", 1e-3)
    radial = x / x.norm(dim=-1, keepdim=True)
    assert ((na * radial).sum(-1) > 0.9).all()
    assert ((na * nf).sum(-1) > 0.99).all()


def test_learned_background_fills_nan_rows_and_normals_feed_orientation():
    cfg = NeRFConfig(**{**SMALL, "normals": "finite_difference"})
    rep = NeRF(cfg, generator=torch.Generator().manual_seed(0))
    cams = orbit_cameras([15.0, 15.0], [0.0, 90.0], 2.0, 40.0, 16)
    out = VolumeRenderer().render(rep, cams, torch.tensor([[float("nan")] * 3, [0.0, 0.0, 0.0]]))
    assert torch.isfinite(out.rgb).all()
    corner = out.rgb[:, 0, 0]  # empty pixels show the background
    assert (corner[0] > 0.3).all() and (corner[1] == 0).all()  # sigmoid(~0) vs black
    assert "orientation" in out.aux and torch.isfinite(out.aux["orientation"])
    out.rgb[0].sum().backward()
    assert rep.background.net[0].weight.grad.abs().sum() > 0


def test_begin_step_grows_the_grid_and_draws_shading_reproducibly():
    cfg = NeRFConfig(**{**SMALL, "grid_levels": 6, "grid_start_levels": 2, "grid_grow_from": 0.5,
                        "grid_grow_every": 10, "normals": "analytic", "albedo_until": 0.5, "albedo_prob": 0.0})
    a = NeRF(cfg, generator=torch.Generator().manual_seed(3))
    b = NeRF(cfg, generator=torch.Generator().manual_seed(3))
    a.begin_step(10, 100)
    assert int(a.field.encoding.active) == 2 and a.shading == "albedo"
    a.begin_step(50, 100)
    assert int(a.field.encoding.active) == 3
    a.begin_step(99, 100)
    assert int(a.field.encoding.active) == 6 and a.shading in ("diffuse", "textureless")
    for s in (10, 50, 99):
        b.begin_step(s, 100)
    assert b.shading == a.shading and torch.equal(a.light_offset, b.light_offset)
    state = a.state_dict_full()
    c = NeRF(cfg, generator=torch.Generator().manual_seed(9))
    c.load_state_dict_full(state)
    assert torch.equal(c.field.encoding.table, a.field.encoding.table)
    assert torch.equal(c.generator.get_state(), a.generator.get_state())
