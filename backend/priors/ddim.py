"""Deterministic DDIM moves on the Prior protocol: inversion (towards noise) and sampling (towards data).

With x_t = alpha_t x0 + sigma_t eps (alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t)), one DDIM move from
level t to level t' (either direction) with the prediction eps_hat = eps(x_t, t) is (docs/METHODS.md §1.1)

    x0_hat = (x_t - sigma_t eps_hat) / alpha_t,      x_t' = alpha_t' x0_hat + sigma_t' eps_hat.

It keeps the predicted noise and swaps the noise level: eta = 0 DDIM, the probability-flow ODE's first-order
step. Inversion walks up a grid of levels, sampling walks down; each step costs one `predict_eps` call on the
batch, with any guidance scale (1 = conditional branch only, 0 = unconditional only, negative allowed).

Levels are integer timesteps 0..T-1 read through the prior's `alphas_cumprod`. A negative level (JSD's
reference code starts its grid at -99) stands for the boundary alpha abar_0, as Stable Diffusion 2.1's
schedulers do with `set_alpha_to_one=False`; the model is still called with the negative timestep, which only
some priors accept (the reference prior refuses it with a clear error).

Used by ISM (unconditional inversion with a stride, docs/METHODS.md §2.4) and JSD (a fixed grid with guidance and
eta noise, §2.5).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from backend.priors.base import Conditioning, Prior


def abar_at(alphas_cumprod: Tensor, t: int | Tensor) -> Tensor:
    """abar at level(s) t (int, or [B] tensor); negative levels give the boundary abar_0."""
    t = torch.as_tensor(t, device=alphas_cumprod.device).long()
    return alphas_cumprod[t.clamp_min(0)]


def ddim_step(x: Tensor, eps: Tensor, t_from: int | Tensor, t_to: int | Tensor, alphas_cumprod: Tensor) -> Tensor:
    """One deterministic DDIM move of x [B, ...] from level t_from to t_to (ints or [B]) with prediction eps."""
    assert x.shape == eps.shape, f"x {tuple(x.shape)} vs eps {tuple(eps.shape)}"
    shape = (-1, *([1] * (x.dim() - 1)))
    a_from = abar_at(alphas_cumprod, t_from).to(x.dtype).reshape(shape)
    a_to = abar_at(alphas_cumprod, t_to).to(x.dtype).reshape(shape)
    x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


def eta_sigma(alphas_cumprod: Tensor, t_a: int | Tensor, t_b: int | Tensor) -> Tensor:
    """DDIM's sigma for a step between levels t_a and t_b (either order; ints or [B]):
    sqrt((1 - abar_lo) / (1 - abar_hi) * (1 - abar_hi / abar_lo)), lo the less noisy level; 0 when equal."""
    a = abar_at(alphas_cumprod, t_a).double()
    b = abar_at(alphas_cumprod, t_b).double()
    a_lo, a_hi = torch.maximum(a, b), torch.minimum(a, b)  # less noise = larger abar
    var = (1 - a_lo) / (1 - a_hi).clamp_min(1e-12) * (1 - a_hi / a_lo)
    return var.clamp_min(0).sqrt().to(alphas_cumprod.dtype)


def stack_paths(paths: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> list[Tensor]:
    """Per-view level paths of different lengths as one path of [B] level tensors: shorter paths repeat their
    last level, and a move from a level to itself leaves x unchanged (eps is kept, the level too)."""
    n = max(len(p) for p in paths)
    padded = [list(p) + [p[-1]] * (n - len(p)) for p in paths]
    return [torch.tensor([p[i] for p in padded], dtype=torch.long, device=device) for i in range(n)]


def ddim_timesteps(t_from: int, t_to: int, *, stride: int | None = None, num_steps: int | None = None) -> list[int]:
    """Levels from t_from to t_to, both included, in either direction: a fixed `stride` (the last step may be
    shorter), or `num_steps` steps as equal as integers allow. Exactly one of the two must be given."""
    if (stride is None) == (num_steps is None):
        raise ValueError("give exactly one of stride and num_steps")
    if t_from == t_to:
        return [t_from]
    sign = 1 if t_to > t_from else -1
    span = abs(t_to - t_from)
    if stride is not None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        offsets = [*range(0, span, stride), span]
    else:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        n = min(num_steps, span)
        offsets = sorted({round(i * span / n) for i in range(n + 1)})
    return [t_from + sign * o for o in offsets]


@torch.no_grad()
def ddim_walk(prior: Prior, x: Tensor, cond: Conditioning, timesteps: Sequence[int | Tensor],
              guidance_scale: float = 1.0, eta: float = 0.0,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
    """Move x [B, C, h, w] along `timesteps` (each an int shared by the batch or a [B] tensor of per-view levels,
    see `stack_paths`), predicting eps at each point of departure.

    Returns (x at the last level, the eps predicted at the last departure; None when there was no move).
    `eta` > 0 adds eta * sigma * N(0, I) after each deterministic move, as JSD's reference code does (this is
    not DDIM-eta, whose deterministic part would shrink to make room for the noise; docs/METHODS.md §2.5)."""
    B = x.shape[0]
    levels = [torch.as_tensor(t, device=x.device).long().expand(B) for t in timesteps]
    eps = None
    for t_from, t_to in itertools.pairwise(levels):
        eps = prior.predict_eps(x, t_from, cond, guidance_scale)
        moved = ddim_step(x, eps, t_from, t_to, prior.alphas_cumprod)
        x = torch.where((t_from == t_to).view(-1, *([1] * (x.dim() - 1))), x, moved)
        if eta > 0:
            sigma = eta_sigma(prior.alphas_cumprod, t_from, t_to).to(x.device, x.dtype)
            dev = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape, generator=generator, device=dev).to(x.device, x.dtype)
            x = x + eta * sigma.view(-1, *([1] * (x.dim() - 1))) * noise
    return x, eps


def ddim_invert(prior: Prior, x: Tensor, cond: Conditioning, t_from: int, t_to: int, *, stride: int | None = None,
                num_steps: int | None = None, guidance_scale: float = 1.0) -> Tensor:
    """Deterministic DDIM inversion (eta 0) of x at level t_from up to level t_to >= t_from."""
    if t_to < t_from:
        raise ValueError(f"inversion goes up in noise: t_to {t_to} < t_from {t_from}")
    path = ddim_timesteps(t_from, t_to, stride=stride, num_steps=num_steps)
    return ddim_walk(prior, x, cond, path, guidance_scale)[0]


def ddim_sample(prior: Prior, x: Tensor, cond: Conditioning, t_from: int, t_to: int, *, stride: int | None = None,
                num_steps: int | None = None, guidance_scale: float = 1.0) -> Tensor:
    """Deterministic DDIM sampling (eta 0) of x at level t_from down to level t_to <= t_from."""
    if t_to > t_from:
        raise ValueError(f"sampling goes down in noise: t_to {t_to} > t_from {t_from}")
    path = ddim_timesteps(t_from, t_to, stride=stride, num_steps=num_steps)
    return ddim_walk(prior, x, cond, path, guidance_scale)[0]
