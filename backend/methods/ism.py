"""Interval score matching (LucidDreamer), docs/METHODS.md §2.4.

SDS compares the guided prediction with the random noise it added, which is a one-sample estimate of a very
noisy target. ISM replaces that noise with a deterministic, consistent one: the render is DDIM-inverted with
the unconditional model (the empty prompt for every view, without view suffix or Perp-Neg; not the negative
prompt) up to a level s = t - delta_T, one more DDIM step takes it to t, and the target is the unconditional
prediction made at x_s, the one that drives that last step:

    x_0' = alpha_0 z + sigma_0 eps                      (eps: fresh noise plus a per-channel offset)
    x_s  = DDIM-invert(x_0' : 0 -> s, eps(.; ""), stride delta_S, at most `inversion_max_steps` moves)
    e_s  = eps(x_s, s; "");   x_t = alpha_t x0_hat(x_s, e_s) + sigma_t e_s
    g    = lambda w(t) (eps_u + s_cfg (eps_c - eps_u) at x_t  -  e_s),   w = sigma_t / alpha_t

With delta_T = 0 (s = t, x_s = x_t) and the null condition equal to the unconditional branch (negative ""),
g = lambda w(t) s_cfg (eps_c - eps_u): pure classifier score distillation.

A step renders 4 views that share one t; t's upper bound and delta_T shrink over the first part of the run;
with probability `depth_prob` the step distils the normalised disparity image instead of the colour
(depth-guidance step); images are mirrored with probability `flip_prob`. LucidDreamer's regularisers are the
engine's `tv_rgb` and `mean_scale` plus this method's `tv_disparity` (total variation of the same disparity).

Disparity (LucidDreamer's rasteriser returns accumulated depth D and transmittance T = 1 - alpha):
    disp = f / (D + 10 T + 1e-5),   f = 1 / (2 tan(fov_x / 2)) = K_00 / W,
min-max normalised per view over its pixels with T <= 0.1 (min) and all pixels (max), clamped to [0, 1].
Our renderers return depth already divided by alpha, so D = depth * alpha.

What the target assumes: g = lambda (x0_hat_null(x_s) - x0_hat_guided(x_t)) exactly (w = sigma_t / alpha_t),
i.e. SDS's residual z - x0_hat_guided with z replaced by the null model's reconstruction of z at level s. That
is a good stand-in only if the prior's inversion reconstructs renders that are not training images, as a
trained network does. The reference prior over its bare references does not: its denoiser snaps any image
to the nearest reference at low noise, the render's deviation is then amplified ~sigma_s / sigma_0 times by the
first inversion step, and the update no longer depends on the render (ISM drifts). `prior.data_noise` > 0
smooths that prior so that it keeps renders near the references; luciddreamer-quick uses it.

Cost per step (B views): up to `inversion_max_steps` unconditional predictions on B samples, one for e_s, and
one guided prediction (two branches); no backward through the prior.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from backend.config import ISMConfig
from backend.core.cameras import Cameras
from backend.core.image_ops import total_variation
from backend.core.outputs import RenderOutput
from backend.core.schedules import parse_schedule
from backend.methods.base import clip_gradient, grad_to_loss, method_schedules, weighting
from backend.priors.base import Conditioning, Prior, noise_to_level
from backend.priors.ddim import ddim_step, ddim_timesteps, ddim_walk, stack_paths


def normalised_disparity(out: RenderOutput, cams: Cameras) -> Tensor:
    """LucidDreamer's depth image: [C, H, W, 1] in [0, 1], near = 1, differentiable (see the module docstring)."""
    assert out.depth is not None, "ISM's disparity needs a renderer that returns depth"
    C, H, W, _ = out.alpha.shape
    alpha = out.alpha
    T = 1.0 - alpha
    D = out.depth * alpha  # accumulated depth
    f = (cams.K[:, 0, 0] / cams.width).to(alpha).view(C, 1, 1, 1)
    disp = f / (D + 10.0 * T + 1e-5)
    flat, fg = disp.reshape(C, -1), (T <= 0.1).reshape(C, -1)
    lo = torch.where(fg, flat, torch.full_like(flat, math.inf)).min(dim=1).values
    lo = torch.where(fg.any(dim=1), lo, flat.min(dim=1).values)  # no opaque pixel: the whole view
    hi = flat.max(dim=1).values
    norm = (flat - lo[:, None]) / (hi - lo).clamp_min(1e-8)[:, None]
    return norm.clamp(0.0, 1.0).reshape(C, H, W, 1)


class ISM:
    name = "ism"

    def __init__(self, cfg: ISMConfig, prior: Prior, total_steps: int, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.prior = prior
        self.gen = generator
        self.timesteps, self.weight, self.grad_clip = method_schedules(cfg, prior, total_steps, generator)
        self.delta_t = parse_schedule(cfg.delta_t, total_steps)
        self.tv_disparity = parse_schedule(cfg.tv_disparity, total_steps)

    def parameters(self) -> list[dict[str, Any]]:
        return []

    def inversion_path(self, s: int) -> list[int]:
        """Levels 0 -> s: stride delta_S, or `inversion_max_steps` equal steps when the stride would need more."""
        if s <= 0:
            return [0]
        if math.ceil(s / self.cfg.inversion_stride) <= self.cfg.inversion_max_steps:
            return ddim_timesteps(0, s, stride=self.cfg.inversion_stride)
        return ddim_timesteps(0, s, num_steps=self.cfg.inversion_max_steps)

    @torch.no_grad()
    def gradient(self, z: Tensor, cond: Conditioning, null: Conditioning, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ISM gradient g [B, C, h, w] on the prior-space render z, and the levels t, s [B] it used."""
        B, C = z.shape[:2]
        abar = self.prior.alphas_cumprod
        t = self.timesteps.sample(step, B, z.device)
        s = (t - round(self.delta_t.at(step))).clamp_min(0)
        gdev = self.gen.device
        noise = torch.randn(z.shape, generator=self.gen, device=gdev)
        offset = torch.randn(1, C, *([1] * (z.dim() - 2)), generator=self.gen, device=gdev)
        noise = (noise + self.cfg.offset_noise * offset).to(z.device, z.dtype)
        x = noise_to_level(z.detach(), noise, torch.zeros_like(t), abar)
        paths = stack_paths([self.inversion_path(int(v)) for v in s.tolist()], z.device)
        x_s, _ = ddim_walk(self.prior, x, null, paths, guidance_scale=1.0)
        e_s = self.prior.predict_eps(x_s, s, null, 1.0)
        same = (s == t).view(-1, *([1] * (z.dim() - 1)))
        x_t = torch.where(same, x_s, ddim_step(x_s, e_s, s, t, abar))
        eps_hat = self.prior.predict_eps(x_t, t, cond, self.cfg.guidance_scale)
        w = weighting(self.cfg.weighting, abar, t).view(-1, *([1] * (z.dim() - 1))).to(z.dtype)
        g = w * (eps_hat - e_s)
        g = clip_gradient(g, self.grad_clip.at(step))
        return g, t, s

    def losses(self, out: RenderOutput, cams: Cameras, cond: Conditioning, step: int) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        disp = normalised_disparity(out, cams) if out.depth is not None else None
        w_tv = self.tv_disparity.at(step)
        if w_tv > 0 and disp is not None:
            terms["tv_disparity"] = w_tv * total_variation(disp)
        # Always draw both numbers so the random stream does not depend on the outcomes.
        u = torch.rand(2, generator=self.gen, device=self.gen.device).tolist()
        img = out.rgb
        if u[0] < self.cfg.depth_prob and disp is not None:
            img = disp.expand(-1, -1, -1, 3)
        if u[1] < self.cfg.flip_prob:
            img = img.flip(2)
        z = self.prior.encode(img)  # [B, C, h, w]
        null = self.prior.condition("", "", cams, cond.background)
        g, _, _ = self.gradient(z, cond, null, step)
        terms["ism"] = self.weight.at(step) * grad_to_loss(z, g, self.cfg.reduction)
        return terms

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
