"""The hash-grid field and what NeRF and DMTet build on it (docs/METHODS.md §3.2): the field itself (density and
albedo heads, the blob density bias, normals), the learned background, the occupancy grid that lets the volume
renderer skip empty space, and `FieldRepresentation`, the base both representations share.

    x in [-R, R]^3 -> u = (x / R + 1) / 2 in [0, 1]^3 -> hash grid h(u) [L * F]
    sigma(x)  = softplus(density_head(h) + b(x)),   b(x) = d (1 - |x| / r)     (+d at the centre, 0 at |x| = r)
    albedo(x) = sigmoid(albedo_head(h))
    normal(x) = -grad sigma / |grad sigma|  (analytic, double backward; or central differences)

Hash grid (Instant-NGP's encoding, written out): level l has resolution N_l = floor(N_0 s^l); the 8 lattice
corners around u N_l index the level's table directly when (N_l + 1)^3 fits in it, otherwise through the
spatial hash (c_x * 1 XOR c_y * 2654435761 XOR c_z * 805459861) mod T; features are trilinearly blended.
Levels beyond the active count output zeros (coarse-to-fine growth, threestudio's progressive grid).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.config import FieldConfig
from backend.core.outputs import RenderOutput
from backend.core.sh import sh_basis

PRIMES = (1, 2654435761, 805459861)
SHADING = ("albedo", "diffuse", "textureless")


class HashGrid(nn.Module):
    """Multiresolution hash encoding of points u [N, 3] in [0, 1]^3 -> features [N, levels * features]."""

    def __init__(self, levels: int, features: int, log2_table: int, base_resolution: int, scale: float,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.levels, self.features = levels, features
        table = 2**log2_table
        resolutions, sizes, dense = [], [], []
        for level in range(levels):
            res = math.floor(base_resolution * scale**level)
            fits = (res + 1) ** 3 <= table
            resolutions.append(res)
            dense.append(fits)
            sizes.append((res + 1) ** 3 if fits else table)
        self.resolutions, self.dense, self.sizes = resolutions, dense, sizes
        self.offsets = [0, *np.cumsum(sizes).tolist()]
        init = (torch.rand(self.offsets[-1], features, generator=generator) * 2 - 1) * 1e-4
        self.table = nn.Parameter(init)
        self.register_buffer("active", torch.tensor(levels, dtype=torch.long))

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def level_indices(self, level: int, cell: Tensor) -> Tensor:
        """Table rows [N, 8] of the 8 corners of integer cells [N, 3] at `level` (offset into the one table).
        Corner c = (c >> 2 & 1, c >> 1 & 1, c & 1) is added to the cell; per-axis terms are formed once and
        combined by broadcasting ([N, 2, 1, 1] with [N, 1, 2, 1] and [N, 1, 1, 2])."""
        n = cell.shape[0]
        ends = torch.stack([cell, cell + 1], dim=1)  # [N, 2, 3]: lower and upper lattice coordinates
        res = self.resolutions[level]
        if self.dense[level]:
            stride = (res + 1)
            ax, ay, az = ends[..., 0], ends[..., 1] * stride, ends[..., 2] * (stride * stride)
            idx = ax[:, :, None, None] + ay[:, None, :, None] + az[:, None, None, :]
        else:
            # (a ^ b ^ c) mod T = (a mod T) ^ (b mod T) ^ (c mod T) for a power-of-two T.
            mask = self.sizes[level] - 1
            ax = (ends[..., 0] * PRIMES[0]) & mask
            ay = (ends[..., 1] * PRIMES[1]) & mask
            az = (ends[..., 2] * PRIMES[2]) & mask
            idx = ax[:, :, None, None] ^ ay[:, None, :, None] ^ az[:, None, None, :]
        return idx.reshape(n, 8) + self.offsets[level]

    def forward(self, u: Tensor) -> Tensor:
        assert u.dim() == 2 and u.shape[1] == 3, f"u {tuple(u.shape)}, expected [N, 3]"
        n = u.shape[0]
        u = u.clamp(0.0, 1.0)
        active = int(self.active)
        out = []
        for level in range(self.levels):
            if level >= active:
                out.append(u.new_zeros(n, self.features))
                continue
            res = self.resolutions[level]
            pos = u * res
            cell = pos.detach().floor().clamp(0, res - 1)  # [N, 3]; u = 1 falls in the last cell
            w = pos - cell  # [N, 3] in [0, 1]
            idx = self.level_indices(level, cell.long())  # [N, 8]
            feats = self.table.index_select(0, idx.reshape(-1)).view(n, 8, self.features)
            wx, wy, wz = (torch.stack([1 - w[:, i], w[:, i]], dim=1) for i in range(3))  # [N, 2] each
            weights = (wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]).reshape(n, 8)
            out.append((feats * weights[:, :, None]).sum(1))
        return torch.cat(out, dim=1)


def mlp(d_in: int, hidden: int, d_out: int, layers: int = 1) -> nn.Sequential:
    """`layers` hidden ReLU layers of `hidden` units, no biases (threestudio's VanillaMLP)."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden, bias=False), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, d_out, bias=False))
    return nn.Sequential(*mods)


class Field(nn.Module):
    """The hash-grid field: density and albedo at world points. Shared by NeRF and DMTet."""

    def __init__(self, cfg: FieldConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.radius = cfg.radius
        self.blob_density, self.blob_radius = cfg.blob_density, cfg.blob_radius
        self.encoding = HashGrid(cfg.grid_levels, cfg.grid_features, cfg.grid_log2_table, cfg.grid_base_resolution,
                                 cfg.grid_scale, generator)
        with torch.random.fork_rng(devices=[]):  # the heads' default init draws from the generator's seed
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            self.density_head = mlp(self.encoding.out_dim, cfg.hidden, 1)
            self.albedo_head = mlp(self.encoding.out_dim, cfg.hidden, 3)

    def to_unit(self, x: Tensor) -> Tensor:
        return (x / self.radius + 1.0) * 0.5

    def blob(self, x: Tensor) -> Tensor:
        """[N] density bias b(x) = d (1 - |x| / r)."""
        return self.blob_density * (1.0 - x.norm(dim=-1) / self.blob_radius)

    def forward(self, x: Tensor, albedo: bool = True) -> tuple[Tensor, Tensor | None]:
        """(sigma [N], albedo [N, 3] or None) at world points x [N, 3]."""
        assert x.dim() == 2 and x.shape[1] == 3, f"x {tuple(x.shape)}, expected [N, 3]"
        h = self.encoding(self.to_unit(x))
        sigma = F.softplus(self.density_head(h)[:, 0] + self.blob(x))
        rgb = torch.sigmoid(self.albedo_head(h)) if albedo else None
        return sigma, rgb

    def density(self, x: Tensor) -> Tensor:
        return self.forward(x, albedo=False)[0]

    def albedo(self, x: Tensor) -> Tensor:
        h = self.encoding(self.to_unit(x))
        return torch.sigmoid(self.albedo_head(h))

    def normals(self, x: Tensor, mode: str, eps: float = 0.01) -> tuple[Tensor, Tensor, Tensor]:
        """(sigma [N], albedo [N, 3], unit normals [N, 3]) with normals = -grad sigma / |grad sigma|, by double
        backward ("analytic") or central differences ("finite_difference"). Differentiable."""
        if mode == "analytic":
            keep_graph = torch.is_grad_enabled()  # previews run under no_grad but still need the gradient
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                sigma, rgb = self.forward(xg)
                (grad,) = torch.autograd.grad(sigma.sum(), xg, create_graph=keep_graph)
            if not keep_graph:
                sigma, rgb, grad = sigma.detach(), rgb.detach(), grad.detach()
        elif mode == "finite_difference":
            sigma, rgb = self.forward(x)
            offsets = torch.eye(3, dtype=x.dtype, device=x.device) * eps  # [3, 3]
            pts = torch.cat([x[:, None, :] + offsets[None], x[:, None, :] - offsets[None]], dim=1)  # [N, 6, 3]
            d = self.density(pts.reshape(-1, 3)).view(-1, 6)
            grad = (d[:, :3] - d[:, 3:]) / (2 * eps)
        else:
            raise ValueError(f"normals must be analytic or finite_difference, got {mode!r}")
        n = -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return sigma, rgb, n


class Background(nn.Module):
    """Learned background colour of a view direction: SH degree 3 -> MLP (16 units x 2 layers) -> sigmoid."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            self.net = mlp(16, 16, 3, layers=2)

    def forward(self, dirs: Tensor) -> Tensor:
        """[..., 3] colours of unit directions [..., 3]."""
        return torch.sigmoid(self.net(sh_basis(3, dirs)))


class OccupancyGrid(nn.Module):
    """Which cells of the cube may hold density (nerfacc's OccGridEstimator, written out): an EMA of
    sigma * step at a jittered point of every cell, refreshed every few steps; occupied where it exceeds
    min(mean, threshold), grown by one cell."""

    def __init__(self, resolution: int, radius: float) -> None:
        super().__init__()
        self.resolution, self.radius = resolution, radius
        self.register_buffer("density", torch.zeros(resolution, resolution, resolution))
        self.register_buffer("mask", torch.ones(resolution, resolution, resolution, dtype=torch.bool))

    def cell_of(self, x: Tensor) -> Tensor:
        """[N] flat cell index of world points x [N, 3] (points outside the cube clamp to the border)."""
        r = self.resolution
        c = ((x / self.radius + 1.0) * 0.5 * r).floor().long().clamp(0, r - 1)
        return c[:, 0] * r * r + c[:, 1] * r + c[:, 2]

    def occupied(self, x: Tensor) -> Tensor:
        return self.mask.view(-1)[self.cell_of(x)]

    @torch.no_grad()
    def refresh(self, density_fn: Any, step_size: float, decay: float, threshold: float,
                generator: torch.Generator) -> None:
        r = self.resolution
        ii = torch.arange(r, device=self.density.device)
        cells = torch.stack(torch.meshgrid(ii, ii, ii, indexing="ij"), dim=-1).reshape(-1, 3).float()
        jitter = torch.rand(cells.shape, generator=generator).to(cells.device)
        x = ((cells + jitter) / r * 2.0 - 1.0) * self.radius
        new = torch.cat([density_fn(chunk) for chunk in x.split(65536)]) * step_size
        self.density.copy_(torch.maximum(self.density * decay, new.view(r, r, r)))
        thresh = min(float(self.density.mean()), threshold)
        # One jittered point per cell can miss the part of a cell a surface cuts through: grow the occupied
        # set by one cell (a 3^3 max-pool), trading a few more samples for no holes at silhouettes.
        occupied = (self.density > thresh).float()[None, None]
        self.mask.copy_(F.max_pool3d(occupied, 3, stride=1, padding=1)[0, 0] > 0)


AUTO_DENSITY_FLOOR = 1e-5


def auto_threshold(sigma: Tensor) -> float:
    """threestudio's 'auto' level: the mean of the densities above 1e-5."""
    above = sigma[sigma > AUTO_DENSITY_FLOOR]
    return float(above.mean()) if above.numel() else AUTO_DENSITY_FLOOR


class FieldRepresentation(nn.Module):
    """What NeRF and DMTet share: the field, the learned background, the occupancy grid, the per-step hash-grid
    growth and shading draw, the parameter groups and the full state (with the generator). kind "mesh": both
    stream and export triangle meshes (each defines `snapshot` and `export_mesh`)."""

    kind = "mesh"

    def __init__(self, cfg: FieldConfig, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.field = Field(cfg, generator)
        self.background = Background(generator)
        self.occupancy = OccupancyGrid(cfg.occupancy_resolution, cfg.radius)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else 0
        # Occupancy jitter and the per-step shading draws come from this generator; it is checkpointed.
        self.generator = torch.Generator("cpu").manual_seed(seed)
        self.shading = "albedo"  # this step's shading: albedo, diffuse or textureless
        self.light_offset = torch.zeros(3)  # this step's light jitter (scaled and added to the camera direction)
        self.light_distance = 1.0
        self.to(device)
        self.field.encoding.active.fill_(min(cfg.grid_start_levels, cfg.grid_levels))
        self.refresh_occupancy()

    # ------------------------------------------------------------------------------------------ geometry

    @property
    def radius(self) -> float:
        return self.cfg.radius

    @property
    def step_size(self) -> float:
        return math.sqrt(3.0) * 2.0 * self.cfg.radius / self.cfg.samples_per_diagonal

    @property
    def count(self) -> int:
        """Occupied cells of the occupancy grid (a size for progress reports)."""
        return int(self.occupancy.mask.sum())

    def refresh_occupancy(self) -> None:
        c = self.cfg
        self.occupancy.refresh(self.field.density, self.step_size, c.occupancy_decay, c.occupancy_threshold,
                               self.generator)

    # ------------------------------------------------------------------------------------------ optimisation

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {"name": "field", "params": list(self.field.parameters()), "lr": self.cfg.field_lr},
            {"name": "background", "params": list(self.background.parameters()), "lr": self.cfg.background_lr},
        ]

    def update_learning_rates(self, optimizer: torch.optim.Optimizer, step: int, total_steps: int) -> None:
        """Constant learning rates (the optimiser config may decay them)."""

    def begin_step(self, step: int, total_steps: int) -> None:
        """Grow the hash grid and draw this step's shading (docs/METHODS.md §3.2)."""
        c = self.cfg
        grow_from = round(c.grid_grow_from * total_steps)
        added = 0 if step < grow_from else 1 + (step - grow_from) // c.grid_grow_every
        self.field.encoding.active.fill_(min(c.grid_levels, c.grid_start_levels + added))
        u = torch.rand(3, generator=self.generator)  # always drawn: the stream does not depend on the outcome
        self.light_offset = torch.randn(3, generator=self.generator)
        lo, hi = c.light_distance
        self.light_distance = lo + (hi - lo) * float(u[2])
        if c.normals == "none" or step < round(c.albedo_until * total_steps) or float(u[0]) < c.albedo_prob:
            self.shading = "albedo"
        else:
            self.shading = "diffuse" if float(u[1]) < 0.5 else "textureless"

    @torch.no_grad()
    def after_backward(self, step: int, total_steps: int, out: RenderOutput,
                       optimizers: list[torch.optim.Optimizer]) -> dict[str, int]:
        if (step + 1) % self.cfg.occupancy_every == 0:
            self.refresh_occupancy()
            return {"occupied_cells": self.count}
        return {}

    # ------------------------------------------------------------------------------------------ I/O

    def state_dict_full(self) -> dict[str, Tensor]:
        d = {k: v.detach().clone() for k, v in self.state_dict().items()}
        d["generator"] = self.generator.get_state()
        return d

    def load_state_dict_full(self, state: dict[str, Tensor]) -> None:
        state = dict(state)
        gen = state.pop("generator", None)
        self.load_state_dict(state)
        if gen is not None:
            self.generator.set_state(gen.cpu())
