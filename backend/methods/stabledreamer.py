"""StableDreamer's update: SDS written as an L2 loss to a denoised pseudo ground truth (docs/METHODS.md §2.7).

From the Tweedie estimate x0_hat = (x_t - sigma_t eps_hat) / alpha_t with x_t = alpha_t z + sigma_t eps:

    z - x0_hat = (sigma_t / alpha_t) (eps_hat - eps),

so SDS's gradient w_SDS (eps_hat - eps) is exactly the gradient of

    1/2 w_L2 |z - sg(x0_hat)|^2,     w_L2 = w_SDS alpha_t / sigma_t

(w_SDS = 1 - abar_t gives w_L2 = alpha_t sigma_t). This file computes that loss literally: the target x0_hat
is the prior's pseudo ground truth for the render (pixels on a pixel prior, latents on a latent prior;
`pseudo_ground_truth()` decodes the last one for display, the paper's debugging use).

The paper's other two ingredients live in the preset: annealing of the noise level (the stage's timestep
schedule: shrinking-uniform, linear or sqrt deterministic) and two stages on one set of anisotropic 3D
Gaussians, an image-space prior for geometry then a latent prior for colour. The paper publishes no code or
configuration; every number of those schedules is inferred (docs/METHODS.md §2.7).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from backend.config import StableDreamerConfig
from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput
from backend.methods.base import method_schedules, weighting
from backend.priors.base import Conditioning, Prior, noise_to_level, tweedie_x0


def l2_weight(name: str, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """w_L2(t) = w_SDS(t) alpha_t / sigma_t [B] for the SDS weighting `name`."""
    abar = alphas_cumprod[t]
    return weighting(name, alphas_cumprod, t) * abar.sqrt() / (1 - abar).sqrt()


class StableDreamer:
    name = "stabledreamer"

    def __init__(self, cfg: StableDreamerConfig, prior: Prior, total_steps: int, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.prior = prior
        self.gen = generator
        self.timesteps, self.weight, self.grad_clip = method_schedules(cfg, prior, total_steps, generator)
        self.last_target: Tensor | None = None

    def parameters(self) -> list[dict[str, Any]]:
        return []

    @torch.no_grad()
    def target(self, z: Tensor, cond: Conditioning, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """(x0_hat [B, C, h, w], w_L2 [B], t [B]): the pseudo ground truth of the prior-space render z.
        Draws t, then the noise, in the same order as SDS (same generator state -> same t and noise)."""
        t = self.timesteps.sample(step, z.shape[0], z.device)
        noise = torch.randn(z.shape, generator=self.gen, device=self.gen.device).to(z.device, z.dtype)
        abar = self.prior.alphas_cumprod
        x_t = noise_to_level(z.detach(), noise, t, abar)
        eps_hat = self.prior.predict_eps(x_t, t, cond, self.cfg.guidance_scale)
        x0 = tweedie_x0(x_t, eps_hat, t, abar)
        w = l2_weight(self.cfg.weighting, abar, t).to(z.dtype)
        clip = self.grad_clip.at(step)
        if clip > 0:  # clamp the implied gradient w_L2 (z - x0) to +-clip, as SDS clamps its g
            shape = (-1, *([1] * (z.dim() - 1)))
            residual = (w.view(shape) * (z.detach() - x0)).clamp(-clip, clip)
            x0 = z.detach() - residual / w.view(shape)
        return x0, w, t

    def losses(self, out: RenderOutput, cams: Cameras, cond: Conditioning, step: int) -> dict[str, Tensor]:
        z = self.prior.encode(out.rgb)  # [B, C, h, w]
        x0, w, _ = self.target(z, cond, step)
        self.last_target = x0
        sq = 0.5 * w.view(-1, *([1] * (z.dim() - 1))) * (z - x0).pow(2)
        B = z.shape[0]
        if self.cfg.reduction == "sum":
            loss = sq.sum() / B
        elif self.cfg.reduction == "mean":
            loss = sq.mean() / B
        else:
            loss = sq.sum()
        return {"l2": self.weight.at(step) * loss}

    def pseudo_ground_truth(self) -> Tensor | None:
        """The last step's target decoded to images [B, H, W, 3] in [0, 1] (None before the first step)."""
        if self.last_target is None:
            return None
        with torch.no_grad():
            return self.prior.decode(self.last_target)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
