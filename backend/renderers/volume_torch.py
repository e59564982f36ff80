"""Volume rendering of a NeRF field in pure torch (docs/METHODS.md §3.2), with occupancy-grid skipping.

For each pixel ray x(t) = o + t d (unit d) clipped to the cube [-R, R]^3, samples sit at the midpoints
t_k = t_near + (k + 1/2) delta of a fixed step delta = sqrt(3) 2 R / samples_per_diagonal, and

    alpha_k = 1 - exp(-sigma_k delta),   T_k = exp(-sum_{j<k} sigma_j delta),   w_k = T_k alpha_k
    rgb = sum_k w_k c_k + (1 - sum_k w_k) bg,   opacity = sum_k w_k,   depth = sum_k w_k z_k / opacity.

Skipping, as nerfacc does it: samples in cells the occupancy grid marks empty are dropped; the rest get one
density pass without gradients, and only samples with alpha >= alpha_threshold and T >= 1e-4 (early ray
termination) are evaluated again with gradients. Skipped samples contribute (nearly) nothing, so the image is
the same as the dense sum up to those thresholds.

Shading (the representation draws it per step): albedo; diffuse = albedo (a + (1 - a) max(0, n.l)); or
textureless = a + (1 - a) max(0, n.l), with a point light at `light_distance` along the jittered camera
direction. Background: each view's solid colour [3], or, for rows that are NaN, the representation's learned
background network evaluated along the ray direction.

Outputs: rgb, alpha, depth (camera z), normal (world, opacity-weighted; zeros without normals) and
aux["orientation"]: sum of sg(w) max(0, n.d)^2 over samples / number of pixels with opacity > 0 (DreamFusion's
orientation loss, unweighted), aux["volume_views"]: all True.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput

TRANSMITTANCE_EPS = 1e-4  # early ray termination (nerfacc's early_stop_eps)
DENSITY_CHUNK = 1 << 17  # points per no-grad density call


def ray_box(o: Tensor, d: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """Entry and exit distances [N] of rays o + t d with the cube [-radius, radius]^3 (t >= 0; exit <= entry
    when the ray misses)."""
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    inv = 1.0 / safe
    t0, t1 = (-radius - o) * inv, (radius - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def segment_exclusive_cumsum(values: Tensor, first: Tensor) -> Tensor:
    """Exclusive cumulative sums of `values` [N] within segments of consecutive equal ids; `first` [N] is the
    index of the first element of each element's segment. Float64 inside: segments are short but the global
    sum is long."""
    cs = values.double().cumsum(0)
    before = cs - values.double()
    return (before - before[first]).to(values.dtype)


def _first_of_segment(ids: Tensor) -> Tensor:
    """For sorted ids [N], the index of the first element with the same id, per element."""
    return torch.searchsorted(ids, ids, right=False)


class VolumeRenderer:
    """render(nerf, cams, background) -> RenderOutput. Works on anything with the NeRF attributes: field,
    occupancy, background, step_size, radius, shading, light_offset, light_distance and cfg."""

    name = "torch"

    def render(self, rep: Any, cams: Cameras, background: Tensor) -> RenderOutput:
        C, H, W = len(cams), cams.height, cams.width
        assert background.shape == (C, 3), f"background {tuple(background.shape)}, expected ({C}, 3)"
        cfg = rep.cfg
        delta = rep.step_size
        o, d = cams.pixel_rays()  # [C, H, W, 3] each, world
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        n_rays = o.shape[0]
        view_of_ray = torch.arange(C, device=o.device).repeat_interleave(H * W)
        forward = cams.world_to_cam[:, 2, :3]  # [C, 3]: the camera's +z axis in world coordinates
        z_per_t = (d * forward[view_of_ray]).sum(-1)  # camera z grows by this per unit of t

        # 1. Sample positions inside the cube, on occupied cells.
        near, far = ray_box(o, d, rep.radius)
        counts = torch.where(far > near, torch.ceil((far - near) / delta), torch.zeros_like(far)).long()
        ray_ids = torch.repeat_interleave(torch.arange(n_rays, device=o.device), counts)
        starts = counts.cumsum(0) - counts
        k = torch.arange(ray_ids.numel(), device=o.device) - starts[ray_ids]
        t = near[ray_ids] + (k.to(o.dtype) + 0.5) * delta
        keep = t < far[ray_ids]
        ray_ids, t = ray_ids[keep], t[keep]
        x = o[ray_ids] + t[:, None] * d[ray_ids]
        keep = rep.occupancy.occupied(x)
        ray_ids, t, x = ray_ids[keep], t[keep], x[keep]

        # 2. A density pass without gradients: drop transparent samples and those behind opaque ones.
        if ray_ids.numel():
            with torch.no_grad():
                sigma = torch.cat([rep.field.density(c) for c in x.split(DENSITY_CHUNK)])
                tau = sigma * delta
                trans = torch.exp(-segment_exclusive_cumsum(tau, _first_of_segment(ray_ids)))
                alpha = 1.0 - torch.exp(-tau)
                keep = (alpha >= cfg.alpha_threshold) & (trans >= TRANSMITTANCE_EPS)
            ray_ids, t, x = ray_ids[keep], t[keep], x[keep]

        # 3. The samples that matter, with gradients.
        use_normals = cfg.normals != "none"
        if use_normals:
            sigma, albedo, normals = rep.field.normals(x, cfg.normals, cfg.normal_eps)
        else:
            sigma, albedo = rep.field(x)
            normals = None
        tau = sigma * delta
        trans = torch.exp(-segment_exclusive_cumsum(tau, _first_of_segment(ray_ids)))
        w = trans * (1.0 - torch.exp(-tau))  # [S]

        colour = albedo
        if normals is not None and rep.shading != "albedo":
            cam_pos = cams.positions.to(x.dtype)  # [C, 3]
            light_dir = F.normalize(cam_pos + rep.light_offset.to(x), dim=-1) * rep.light_distance  # [C, 3]
            to_light = F.normalize(light_dir[view_of_ray[ray_ids]] - x, dim=-1)
            lambert = (normals * to_light).sum(-1, keepdim=True).clamp_min(0.0)
            light = cfg.ambient + (1.0 - cfg.ambient) * lambert
            colour = albedo * light if rep.shading == "diffuse" else light.expand(-1, 3)

        def accumulate(values: Tensor) -> Tensor:
            out = values.new_zeros(n_rays, values.shape[1])
            return out.index_add(0, ray_ids, values * w[:, None])

        rgb = accumulate(colour)  # [n_rays, 3] premultiplied
        opacity = accumulate(torch.ones_like(w)[:, None])  # [n_rays, 1]
        z = accumulate((t * z_per_t[ray_ids])[:, None])
        depth = torch.where(opacity > 0, z / opacity.clamp_min(1e-10), torch.zeros_like(z))
        normal = accumulate(normals) if normals is not None else rgb.new_zeros(n_rays, 3)

        # Background: solid rows, or the learned network where a row is NaN.
        bg = background.to(rgb.dtype)[view_of_ray]  # [n_rays, 3]
        learned = torch.isnan(background).any(-1)  # [C]
        if bool(learned.any()):
            rows = learned[view_of_ray]
            bg = bg.clone()
            bg[rows] = rep.background(d[rows])
        rgb = rgb + (1.0 - opacity) * bg

        aux: dict[str, Any] = {"volume_views": torch.ones(C, dtype=torch.bool, device=o.device),
                               "samples": int(ray_ids.numel())}
        if normals is not None:
            facing = (normals * d[ray_ids]).sum(-1).clamp_min(0.0) ** 2
            covered = (opacity > 0).sum().clamp_min(1)
            aux["orientation"] = (w.detach() * facing).sum() / covered
        return RenderOutput(rgb.view(C, H, W, 3), opacity.view(C, H, W, 1), depth.view(C, H, W, 1),
                            normal.view(C, H, W, 3), aux)

