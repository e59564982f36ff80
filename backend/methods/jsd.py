"""Jensen-Shannon score distillation, as its public reference code computes it (docs/METHODS.md §2.5).

What the paper claims. SDS minimises a reverse KL divergence, which is unbounded and mode seeking. JSD instead
derives a bounded objective from the Jensen-Shannon divergence, through the generator loss of a GAN: with an
optimal discriminator that is a log-odds classifier, D(x) = sigmoid(log p(x) - log q(x)) (p the prior's image
distribution, q the renders'), the generator loss -log D(x) is bounded below by 0 where the renders already
look real, and its gradient is
    grad_x(-log D) = -(1 - D(x)) (grad log p(x) - grad log q(x)),
a VSD-like score difference weighted by 1 - D, which switches itself off where D -> 1 (renders the prior
finds likely). The score of q is estimated by "minority sampling": samples pushed towards regions of low
density under the prior, instead of a trained model of q.

What the public code does, and this file reproduces. There is no discriminator and no trainable model. Each
step builds two targets in the prior's space and pulls the render z towards both with an L2 loss:

1. Inversion ("high-density") target. z is DDIM-inverted along a fixed grid (levels 1, 1 + 1000/n, ... below t)
   up to t_hi = t + U{0..jitter-1}, with the guidance scale `inversion_guidance_scale` (negative: away from the
   prompt) and eta noise after each move; the inverted latent is denoised in one Tweedie step with the main
   guidance scale: x0_hd = x0_hat(x_inv, t_hi).
2. Minority ("low-density") target, weight k: x0_hd is re-noised with fresh noise to level t and denoised
   again with the main guidance: x0_ld = x0_hat(alpha_t x0_hd + sigma_t eps', t).

    L = 1/2 |z - sg(x0_hd)|^2 + k/2 |z - sg(x0_ld)|^2      (element mean / views, as the reference)

so the gradient is (z - x0_hd) + k (z - x0_ld). t falls deterministically (980 -> 250 over the run by default).
Reading it against the paper: the inversion target plays the role of the prior's score (where the prior would
take this render), the re-noised target a second, noisier estimate drawn around it; the code has neither the
1 - D weighting nor a model of q, so the "bounded" property is the paper's claim, not something this update
computes. Perp-Neg, which the reference runs with, is guidance inside the prior (`predict_eps`), not part of
this method.

The reference code's bugs, and what this file does instead (docs/METHODS.md §2.5):
1. With k <= 0, or before the warm-up, the minority target was never assigned and the code crashed: the term is
   skipped.
2. Batches of more than one view broke (t repeated per sample, `int()` of a tensor): any B works, views may even
   have different timesteps (per-view grids are padded with no-op moves).
3. The first inversion call fed timestep -99 to the model: the grid starts at timestep 1
   (`reference_start` restores -99, with the boundary abar_0, for priors that accept it).
4. The inverted latent sits at t_hi but was denoised as level t: denoised at t_hi
   (`reference_denoise_level` restores the mismatch).
5. The eta noise is added on top of a deterministic DDIM move (not DDIM-eta): kept, as documented here.
6. The guidance kept its own maximum step count (10 000) for the t schedule: the schedule follows the stage.
7. With Perp-Neg off the code guided in form eps_c + s (eps_c - eps_u): every scale here is in the project's
   eps_u + s (eps_c - eps_u) form (presets convert).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from backend.config import JSDConfig
from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput
from backend.methods.base import clip_gradient, grad_to_loss, method_schedules
from backend.priors.base import Conditioning, Prior, noise_to_level, tweedie_x0
from backend.priors.ddim import ddim_walk, stack_paths


class JSD:
    name = "jsd"

    def __init__(self, cfg: JSDConfig, prior: Prior, total_steps: int, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.prior = prior
        self.gen = generator
        self.total = total_steps
        self.timesteps, self.weight, self.grad_clip = method_schedules(cfg, prior, total_steps, generator)

    def parameters(self) -> list[dict[str, Any]]:
        return []

    def inversion_path(self, t: int, t_hi: int) -> list[int]:
        """Levels of one view's inversion: the grid points below t, then t_hi (docs/METHODS.md §2.5)."""
        stride = self.prior.num_train_timesteps // self.cfg.inversion_steps
        grid = [1 + i * stride for i in range(self.cfg.inversion_steps)]
        path = [g for g in grid if g < t] or [min(t, 1)]
        if self.cfg.reference_start:
            path = [grid[0] - stride, *path]
        if t_hi > path[-1]:
            path.append(t_hi)
        return path

    def minority_active(self, step: int) -> bool:
        return self.cfg.k > 0 and step >= round(self.cfg.warmup * self.total)

    @torch.no_grad()
    def targets(self, z: Tensor, cond: Conditioning, step: int) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """(x0_hd [B, C, h, w], x0_ld or None, t [B], t_hi [B]) for the prior-space render z."""
        B = z.shape[0]
        T = self.prior.num_train_timesteps
        abar = self.prior.alphas_cumprod
        gdev = self.gen.device
        t = self.timesteps.sample(step, B, z.device)
        # One jitter per step, shared by the views (the reference draws one number).
        jitter = self.cfg.inversion_jitter
        dt = int(torch.randint(0, jitter, (1,), generator=self.gen, device=gdev)) if jitter > 0 else 0
        t_hi = (t + dt).clamp_max(T - 1)
        paths = stack_paths([self.inversion_path(a, b) for a, b in zip(t.tolist(), t_hi.tolist(), strict=True)],
                            z.device)
        x_inv, _ = ddim_walk(self.prior, z.detach(), cond, paths, self.cfg.inversion_guidance_scale,
                             eta=self.cfg.inversion_eta, generator=self.gen)
        level = t if self.cfg.reference_denoise_level else t_hi
        eps = self.prior.predict_eps(x_inv, level, cond, self.cfg.guidance_scale)
        x0_hd = tweedie_x0(x_inv, eps, level, abar)
        x0_ld = None
        if self.minority_active(step):
            noise = torch.randn(z.shape, generator=self.gen, device=gdev).to(z.device, z.dtype)
            x_ld = noise_to_level(x0_hd, noise, t, abar)
            eps_ld = self.prior.predict_eps(x_ld, t, cond, self.cfg.guidance_scale)
            x0_ld = tweedie_x0(x_ld, eps_ld, t, abar)
        return x0_hd, x0_ld, t, t_hi

    def gradient(self, z: Tensor, cond: Conditioning, step: int) -> Tensor:
        """g = (z - x0_hd) + k (z - x0_ld) [B, C, h, w] (the minority term only once active)."""
        x0_hd, x0_ld, _, _ = self.targets(z, cond, step)
        zd = z.detach()
        g = zd - x0_hd
        if x0_ld is not None:
            g = g + self.cfg.k * (zd - x0_ld)
        g = clip_gradient(g, self.grad_clip.at(step))
        return g

    def losses(self, out: RenderOutput, cams: Cameras, cond: Conditioning, step: int) -> dict[str, Tensor]:
        z = self.prior.encode(out.rgb)  # [B, C, h, w]
        g = self.gradient(z, cond, step)
        return {"jsd": self.weight.at(step) * grad_to_loss(z, g, self.cfg.reduction)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
