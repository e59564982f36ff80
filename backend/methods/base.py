"""The Method seam and what update rules share: timestep sampling, w(t), and the gradient surrogate.

A method turns a render into loss terms: `losses(out, cams, cond, step) -> {name: weighted loss}`. Its own
trainable modules come from `parameters()` as optimiser groups of the engine's optimiser, or have an optimiser of
their own (VSD's particle model, the adversarial discriminator) that the method steps inside `losses`. One file
per algorithm; design.md in this folder lists what a new method touches.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput
from backend.core.schedules import Schedule, parse_schedule
from backend.priors.base import Conditioning


@runtime_checkable
class Method(Protocol):
    name: str

    def parameters(self) -> list[dict[str, Any]]:
        """Optimiser groups of the method's own trainables (empty for SDS)."""
        ...

    def losses(self, out: RenderOutput, cams: Cameras, cond: Conditioning, step: int) -> dict[str, Tensor]:
        """Weighted loss terms for this step's render; the engine sums them and calls backward once."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def grad_to_loss(x: Tensor, grad: Tensor, reduction: str = "sum") -> Tensor:
    """Surrogate loss whose gradient w.r.t. x is `grad` up to the reduction (docs/METHODS.md §1.3).

    L = 1/2 sum((x - sg(x - g))^2) / B, so dL/dx = g / B ("sum", threestudio); "mean" takes the mean over
    all B*C*H*W elements and then divides by B again, dL/dx = g / (B^2 C H W) (threestudio SDI, jsddreamer);
    "total" does not divide at all, dL/dx = g (LucidDreamer).
    Non-finite entries of g are zeroed first. Shapes: x, grad [B, ...]."""
    assert x.shape == grad.shape, f"x {tuple(x.shape)} vs grad {tuple(grad.shape)}"
    g = torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    target = (x - g).detach()
    sq = 0.5 * (x - target).pow(2)
    b = x.shape[0]
    if reduction == "sum":
        return sq.sum() / b
    if reduction == "mean":
        return sq.mean() / b
    if reduction == "total":
        return sq.sum()
    raise ValueError(f"reduction must be sum, mean or total, got {reduction!r}")


def weighting(name: str, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """w(t) [B] (docs/METHODS.md §1.8)."""
    abar = alphas_cumprod[t]
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    if name == "sds":
        return 1 - abar
    if name == "uniform":
        return torch.ones_like(abar)
    if name == "fantasia3d":
        return alpha * sigma**2
    if name == "inverse_sqrt_snr":
        return sigma / alpha
    raise ValueError(f"unknown weighting {name!r}")


def method_schedules(cfg: Any, prior: Any, total_steps: int, generator: torch.Generator
                     ) -> tuple[TimestepSampler, Schedule, Schedule]:
    """What every update rule reads from its config before its first step: the timestep sampler and the
    schedules of its loss `weight` and of its gradient clip `grad_clip` over the stage."""
    return (TimestepSampler(cfg, prior.num_train_timesteps, total_steps, generator),
            parse_schedule(cfg.weight, total_steps), parse_schedule(cfg.grad_clip, total_steps))


def clip_gradient(g: Tensor, limit: float) -> Tensor:
    """g clamped elementwise to +-limit; a limit of 0 means no clipping (docs/METHODS.md §1.3)."""
    return g.clamp(-limit, limit) if limit > 0 else g


class TimestepSampler:
    """Timesteps per step from the method config: random in [t_min, t_max] (both schedules, fractions of T,
    bounds inclusive), or deterministic annealing from t_max down to t_min (linear or sqrt in u)."""

    def __init__(self, cfg: Any, num_train_timesteps: int, total_steps: int, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.T = num_train_timesteps
        self.total = total_steps
        self.t_min = parse_schedule(cfg.t_min, total_steps)
        self.t_max = parse_schedule(cfg.t_max, total_steps)
        self.gen = generator

    def bounds(self, step: int) -> tuple[int, int]:
        lo = math.floor(self.T * self.t_min.at(step))
        hi = math.floor(self.T * self.t_max.at(step))
        lo = min(max(lo, 0), self.T - 1)
        return lo, min(max(hi, lo), self.T - 1)

    def sample(self, step: int, batch: int, device: torch.device) -> Tensor:
        """[batch] int64 timesteps."""
        lo, hi = self.bounds(step)
        kind = self.cfg.t_sampling
        if kind == "random":
            n = 1 if self.cfg.shared_t else batch
            t = torch.randint(lo, hi + 1, (n,), generator=self.gen, device=self.gen.device)
            return t.expand(batch).to(device)
        u = step / max(self.total - 1, 1)
        r = u if kind == "linear" else math.sqrt(u)
        t = round(hi - (hi - lo) * r)
        return torch.full((batch,), t, dtype=torch.long, device=device)
