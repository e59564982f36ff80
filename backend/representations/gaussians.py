"""3D Gaussians (docs/METHODS.md §3.1): parameters, activations, densification and the PLY snapshot.

Raw parameters (what the optimiser sees) and their activations:
    xyz [N, 3]             -> means (identity)
    log_scales [N, 3]      -> scales = exp(log_scales)          (std-devs, world units)
    rotations [N, 4]       -> quats = rotations / |rotations|   (w first)
    opacity_logits [N, 1]  -> opacities = sigmoid(logits)       [N]
    sh_dc [N, 1, 3], sh_rest [N, K-1, 3] -> sh [N, K, 3], K = (sh_degree + 1)^2, rgb = max(eval_sh + 0.5, 0)

Densification follows the 3DGS rules: average the 2D-mean gradient norm (in NDC units, x by W/2 and y by H/2
from the renderer's pixel units) over the views in which a Gaussian was visible; clone small ones above the
threshold, split large ones into two children sampled from N(mu, Sigma) with scales / 1.6; prune transparent
and oversized ones; optionally reset opacities. New rows get zeroed Adam state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from backend.config import GaussiansConfig
from backend.core.outputs import RenderOutput
from backend.core.rotations import quat_to_rotmat
from backend.core.schedules import log_linear
from backend.io.ply import gaussian_ply_names

SH_C0 = 0.28209479177387814
PARAM_NAMES = ("xyz", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "rotations")


def knn_mean_sq_dist(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """[N] mean squared distance to the k nearest other points (chunked, no N x N matrix at once)."""
    n = points.shape[0]
    if n <= 1:
        return torch.full((n,), 1e-4, device=points.device)
    k = min(k, n - 1)
    out = torch.empty(n, device=points.device)
    for i in range(0, n, chunk):
        d = torch.cdist(points[i : i + chunk], points).pow(2)
        vals = d.topk(k + 1, dim=1, largest=False).values[:, 1:]  # drop the point itself
        out[i : i + chunk] = vals.mean(dim=1)
    return out.clamp_min(1e-7)


class Gaussians(nn.Module):
    """A cloud of 3D Gaussians. Satisfies `renderers.base.GaussianCloud`."""

    kind = "gaussians"

    def __init__(self, cfg: GaussiansConfig, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None, points: Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.sh_degree = cfg.sh_degree
        dev = torch.device(device)
        g = generator
        if points is None and cfg.init == "points":
            points = torch.tensor(cfg.init_points, dtype=torch.float32)
        if points is not None:
            xyz = points.to(torch.float32).reshape(-1, 3)
        elif cfg.init == "sphere":
            d = torch.randn(cfg.init_count, 3, generator=g)
            xyz = cfg.init_radius * d / d.norm(dim=1, keepdim=True).clamp_min(1e-9)
        else:  # uniform in a ball
            d = torch.randn(cfg.init_count, 3, generator=g)
            d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-9)
            r = cfg.init_radius * torch.rand(cfg.init_count, 1, generator=g).pow(1.0 / 3.0)
            xyz = d * r
        n = xyz.shape[0]
        color = cfg.init_color + cfg.init_color_noise * (2 * torch.rand(n, 3, generator=g) - 1)
        k = (cfg.sh_degree + 1) ** 2
        log_scales = torch.log(knn_mean_sq_dist(xyz).sqrt())[:, None].repeat(1, 3)
        rot = torch.zeros(n, 4)
        rot[:, 0] = 1.0
        p = cfg.init_opacity
        self.xyz = nn.Parameter(xyz.to(dev))
        self.sh_dc = nn.Parameter(((color - 0.5) / SH_C0)[:, None, :].to(dev))
        self.sh_rest = nn.Parameter(torch.zeros(n, k - 1, 3, device=dev))
        self.opacity_logits = nn.Parameter(torch.full((n, 1), math.log(p / (1 - p)), device=dev))
        self.log_scales = nn.Parameter(log_scales.to(dev))
        self.rotations = nn.Parameter(rot.to(dev))
        # Densification statistics: summed gradient norms and the number of views each Gaussian was seen in.
        self.register_buffer("grad_accum", torch.zeros(n, device=dev))
        self.register_buffer("grad_count", torch.zeros(n, device=dev))
        # Split children are sampled from this generator; its state is checkpointed for exact resumes.
        seed = int(torch.randint(0, 2**62, (1,), generator=g)) if g is not None else 0
        self.split_generator = torch.Generator("cpu").manual_seed(seed)

    # ------------------------------------------------------------------------------------------ activations

    @property
    def count(self) -> int:
        return self.xyz.shape[0]

    @property
    def means(self) -> Tensor:
        return self.xyz

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    @property
    def quats(self) -> Tensor:
        return self.rotations / self.rotations.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)[:, 0]

    @property
    def sh(self) -> Tensor:
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    # ------------------------------------------------------------------------------------------ optimisation

    def param_groups(self) -> list[dict[str, Any]]:
        c = self.cfg
        return [
            {"name": "xyz", "params": [self.xyz], "lr": c.position_lr},
            {"name": "sh_dc", "params": [self.sh_dc], "lr": c.color_lr},
            {"name": "sh_rest", "params": [self.sh_rest], "lr": c.color_lr / 20.0},
            {"name": "opacity_logits", "params": [self.opacity_logits], "lr": c.opacity_lr},
            {"name": "log_scales", "params": [self.log_scales], "lr": c.scaling_lr},
            {"name": "rotations", "params": [self.rotations], "lr": c.rotation_lr},
        ]

    def update_learning_rates(self, optimizer: torch.optim.Optimizer, step: int, total_steps: int) -> None:
        """Position learning rate: log-linear decay from position_lr to position_lr_final."""
        until = max(1, round(self.cfg.position_lr_decay_until * (total_steps - 1)))
        lr = log_linear(self.cfg.position_lr, self.cfg.position_lr_final, step, until)
        for group in optimizer.param_groups:
            if group.get("name") == "xyz":
                group["lr"] = lr

    @torch.no_grad()
    def after_backward(self, step: int, total_steps: int, out: RenderOutput,
                       optimizers: list[torch.optim.Optimizer]) -> dict[str, int]:
        """Accumulate densification statistics from this step's render, and densify/prune/reset when due.
        Call after backward() and before the optimiser step. Returns counts of what changed."""
        c = self.cfg
        info: dict[str, int] = {}
        lo, hi = round(c.densify_from * total_steps), round(c.densify_until * total_steps)
        if c.densify_every <= 0 or not (lo <= step <= hi):
            return info
        self._accumulate(out)
        if step > lo and step % c.densify_every == 0:
            opt = optimizers[0]
            info.update(self.densify_and_prune(opt))
            if c.opacity_reset_every > 0 and step % c.opacity_reset_every == 0:
                self.reset_opacity(opt)
                info["opacity_reset"] = 1
        return info

    def _accumulate(self, out: RenderOutput) -> None:
        means2d = out.aux.get("means2d")
        if means2d is None or means2d.grad is None:
            return
        grad = means2d.grad  # [C, N, 2] in pixels
        c_views, _, _ = grad.shape
        h, w = out.rgb.shape[1], out.rgb.shape[2]
        # Pixel -> NDC units, and undo the 1/C of the view-averaged loss so thresholds do not depend on C.
        scale = torch.tensor([w / 2.0, h / 2.0], device=grad.device) * c_views
        norms = (grad * scale).norm(dim=-1)  # [C, N]
        visible = out.aux["radii"] > 0  # [C, N]
        self.grad_accum += (norms * visible).sum(0)
        self.grad_count += visible.sum(0)

    def densify_and_prune(self, opt: torch.optim.Optimizer) -> dict[str, int]:
        c = self.cfg
        avg = self.grad_accum / self.grad_count.clamp_min(1)
        selected = avg >= c.densify_grad_threshold
        max_scale = self.scales.max(dim=1).values
        small = max_scale <= c.percent_dense * c.extent
        room = max(0, c.max_count - self.count)
        clone = selected & small
        split = selected & ~small
        # Respect the cap: keep the candidates with the largest gradients (a split adds one net Gaussian).
        wanted = int(clone.sum() + split.sum())
        if wanted > room:
            keep = torch.zeros_like(selected)
            order = torch.argsort(torch.where(selected, avg, torch.full_like(avg, -1.0)), descending=True)
            keep[order[:room]] = True
            clone &= keep
            split &= keep
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            self._append(opt, {name: getattr(self, name)[clone] for name in PARAM_NAMES})
        if n_split:
            idx = torch.nonzero(split)[:, 0]
            self._split(opt, idx)
        # Prune: transparent, oversized, and the split parents (which sit at the end after _append of clones).
        prune = (self.opacities < c.min_opacity) | (self.scales.max(dim=1).values > c.prune_scale * c.extent)
        if n_split:
            prune[split.nonzero()[:, 0]] = True  # parents keep their indices: clones/children were appended
        n_prune = int(prune.sum())
        if n_prune and n_prune < self.count:
            self._keep(opt, ~prune)
        self.grad_accum = torch.zeros(self.count, device=self.xyz.device)
        self.grad_count = torch.zeros(self.count, device=self.xyz.device)
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune, "count": self.count}

    def _split(self, opt: torch.optim.Optimizer, idx: Tensor) -> None:
        n_children = 2
        scales = self.scales[idx].repeat(n_children, 1)
        rot = quat_to_rotmat(self.quats[idx]).repeat(n_children, 1, 1)
        z = torch.randn(scales.shape, generator=self.split_generator).to(scales.device) * scales
        new_xyz = (rot @ z[:, :, None])[:, :, 0] + self.xyz[idx].repeat(n_children, 1)
        new = {name: getattr(self, name)[idx].repeat(n_children, *([1] * (getattr(self, name).dim() - 1)))
               for name in PARAM_NAMES}
        new["xyz"] = new_xyz
        new["log_scales"] = torch.log(scales / (0.8 * n_children))
        self._append(opt, new)

    def reset_opacity(self, opt: torch.optim.Optimizer) -> None:
        """opacity <- min(opacity, 0.01), with fresh Adam state for the opacities."""
        p = 0.01
        value = torch.minimum(self.opacity_logits, torch.full_like(self.opacity_logits, math.log(p / (1 - p))))
        self._replace(opt, "opacity_logits", value, reset_state=True)

    # ------------------------------------------------------------------------------------------ tensor surgery

    def _groups(self, opt: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
        return {g["name"]: g for g in opt.param_groups if g.get("name") in PARAM_NAMES}

    def _swap(self, opt: torch.optim.Optimizer, name: str, new_param: nn.Parameter,
              state_fn: Any) -> None:
        groups = self._groups(opt)
        old = getattr(self, name)
        if name in groups:
            group = groups[name]
            state = opt.state.pop(old, None)
            group["params"] = [new_param]
            if state is not None:
                opt.state[new_param] = {k: (state_fn(v) if torch.is_tensor(v) and v.dim() > 0 else v)
                                        for k, v in state.items()}
        setattr(self, name, new_param)

    def _append(self, opt: torch.optim.Optimizer, new: dict[str, Tensor]) -> None:
        n_new = new["xyz"].shape[0]
        for name in PARAM_NAMES:
            old = getattr(self, name)
            param = nn.Parameter(torch.cat([old.detach(), new[name].detach()], dim=0))
            self._swap(opt, name, param,
                       lambda v, n=n_new: torch.cat([v, torch.zeros((n, *v.shape[1:]), dtype=v.dtype,
                                                                     device=v.device)], dim=0))
        pad = torch.zeros(n_new, device=self.xyz.device)
        self.grad_accum = torch.cat([self.grad_accum, pad])
        self.grad_count = torch.cat([self.grad_count, pad])

    def _keep(self, opt: torch.optim.Optimizer, mask: Tensor) -> None:
        for name in PARAM_NAMES:
            param = nn.Parameter(getattr(self, name).detach()[mask])
            self._swap(opt, name, param, lambda v: v[mask])
        self.grad_accum = self.grad_accum[mask]
        self.grad_count = self.grad_count[mask]

    def _replace(self, opt: torch.optim.Optimizer, name: str, value: Tensor, reset_state: bool) -> None:
        param = nn.Parameter(value.detach().clone())
        self._swap(opt, name, param, (lambda v: torch.zeros_like(v)) if reset_state else (lambda v: v))

    # ------------------------------------------------------------------------------------------ I/O

    def snapshot(self, max_points: int | None = None) -> dict[str, np.ndarray]:
        """Arrays in the standard 3DGS PLY layout (docs/DESIGN.md §4), float32 [N] each, the most opaque
        `max_points` first. Non-finite rows are dropped so NaN never reaches a client."""
        with torch.no_grad():
            cols = {
                "xyz": self.xyz, "f_dc": self.sh_dc[:, 0, :],
                # f_rest is channel-major: all coefficients of red, then green, then blue.
                "f_rest": self.sh_rest.transpose(1, 2).reshape(self.count, -1),
                "opacity": self.opacity_logits, "scale": self.log_scales, "rot": self.rotations,
            }
            flat = torch.cat([v.reshape(self.count, -1) for v in cols.values()], dim=1).float()
            finite = torch.isfinite(flat).all(dim=1)
            order = torch.argsort(self.opacity_logits[:, 0].masked_fill(~finite, -float("inf")), descending=True)
            order = order[: int(finite.sum())]
            if max_points is not None:
                order = order[:max_points]
            flat = flat[order].cpu().numpy()
        names = gaussian_ply_names(self.sh_degree)
        out: dict[str, np.ndarray] = {}
        layout = ["x", "y", "z", *[f"f_dc_{i}" for i in range(3)],
                  *[f"f_rest_{i}" for i in range(3 * ((self.sh_degree + 1) ** 2 - 1))],
                  "opacity", *[f"scale_{i}" for i in range(3)], *[f"rot_{i}" for i in range(4)]]
        for j, name in enumerate(layout):
            out[name] = np.ascontiguousarray(flat[:, j])
        n = flat.shape[0]
        for name in ("nx", "ny", "nz"):
            out[name] = np.zeros(n, dtype=np.float32)
        return {name: out[name] for name in names}

    def state_dict_full(self) -> dict[str, Tensor]:
        """Parameters and densification buffers (sizes vary, so load with `load_state_dict_full`)."""
        d = {name: getattr(self, name).detach().clone() for name in PARAM_NAMES}
        d["grad_accum"] = self.grad_accum.clone()
        d["grad_count"] = self.grad_count.clone()
        d["split_generator"] = self.split_generator.get_state()
        return d

    def load_state_dict_full(self, d: dict[str, Tensor]) -> None:
        for name in PARAM_NAMES:
            setattr(self, name, nn.Parameter(d[name].to(self.xyz.device).clone()))
        self.grad_accum = d["grad_accum"].to(self.xyz.device).clone()
        self.grad_count = d["grad_count"].to(self.xyz.device).clone()
        if "split_generator" in d:
            self.split_generator.set_state(d["split_generator"].cpu())

    @classmethod
    def from_ply_arrays(cls, arrays: dict[str, np.ndarray], cfg: GaussiansConfig | None = None,
                        device: torch.device | str = "cpu") -> Gaussians:
        """Rebuild a cloud from PLY arrays (the inverse of `snapshot`)."""
        n_rest = len([k for k in arrays if k.startswith("f_rest_")])
        degree = {0: 0, 9: 1, 24: 2, 45: 3}[n_rest]
        n = len(arrays["x"])
        cfg = dataclasses.replace(cfg or GaussiansConfig(), sh_degree=degree, init="points", init_points=None)
        rep = cls(cfg, device, points=torch.zeros(n, 3))

        def col(*names: str) -> Tensor:
            return torch.from_numpy(np.stack([arrays[k] for k in names], axis=1).astype(np.float32))

        k = (degree + 1) ** 2
        state = {
            "xyz": col("x", "y", "z"),
            "sh_dc": col("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :],
            "sh_rest": (col(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k - 1).transpose(1, 2)
                        if n_rest else torch.zeros(n, 0, 3)),
            "opacity_logits": col("opacity"),
            "log_scales": col("scale_0", "scale_1", "scale_2"),
            "rotations": col("rot_0", "rot_1", "rot_2", "rot_3"),
            "grad_accum": torch.zeros(n), "grad_count": torch.zeros(n),
        }
        rep.load_state_dict_full(state)
        return rep

