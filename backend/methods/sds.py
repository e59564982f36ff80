"""Score distillation sampling (DreamFusion), docs/METHODS.md §2.1.

    x_t = alpha_t z + sigma_t eps
    g   = w(t) (eps_hat(x_t; y_view, y_neg) - eps),   eps_hat = eps_u + s (eps_c - eps_u)
    L   = grad_to_loss(z, g)                           (the UNet Jacobian is dropped)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from backend.config import SDSConfig
from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput
from backend.methods.base import clip_gradient, grad_to_loss, method_schedules, weighting
from backend.priors.base import Conditioning, Prior, noise_to_level


class SDS:
    name = "sds"

    def __init__(self, cfg: SDSConfig, prior: Prior, total_steps: int, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.prior = prior
        self.gen = generator
        self.timesteps, self.weight, self.grad_clip = method_schedules(cfg, prior, total_steps, generator)

    def parameters(self) -> list[dict[str, Any]]:
        return []

    def gradient(self, z: Tensor, cond: Conditioning, step: int) -> tuple[Tensor, Tensor]:
        """The SDS gradient g [B, C, h, w] on the prior-space render z, and the timesteps [B] used."""
        t = self.timesteps.sample(step, z.shape[0], z.device)
        noise = torch.randn(z.shape, generator=self.gen, device=self.gen.device).to(z.device, z.dtype)
        with torch.no_grad():
            x_t = noise_to_level(z.detach(), noise, t, self.prior.alphas_cumprod)
            eps_hat = self.prior.predict_eps(x_t, t, cond, self.cfg.guidance_scale)
            w = weighting(self.cfg.weighting, self.prior.alphas_cumprod, t).view(-1, 1, 1, 1).to(z.dtype)
            g = w * (eps_hat - noise)
            g = clip_gradient(g, self.grad_clip.at(step))
        return g, t

    def losses(self, out: RenderOutput, cams: Cameras, cond: Conditioning, step: int) -> dict[str, Tensor]:
        z = self.prior.encode(out.rgb)  # [B, C, h, w]
        g, _ = self.gradient(z, cond, step)
        return {"sds": self.weight.at(step) * grad_to_loss(z, g, self.cfg.reduction)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
