"""Variational score distillation (ProlificDreamer), docs/METHODS.md §2.2.

A particle model phi (a trainable copy of the prior: LoRA + camera MLP for diffusers priors, whose camera MLP
keeps PyTorch's default init as threestudio's does, so phi differs from the prior by a camera-dependent shift
from step 0; a zero-initialised residual network for the reference prior) estimates the score of the renders'
distribution; the render follows the difference between the prior's guided score and phi's:

    x_t = alpha_t z + sigma_t eps
    g   = w(t) (eps_hat_s(x_t; y_view, y_neg) - eps_phi(x_t; y, c))       eps_hat in eps_u + s (eps_c - eps_u)
    L   = grad_to_loss(z, g)

phi is v -> eps converted when it predicts v, reads the plain prompt y and the camera c (camera-to-world, 16
numbers). With s_L = 1 the null-camera half of phi's CFG contributes nothing, so plain VSD skips it.

phi's own step, in the same iteration and on the detached render z' = sg(z): tau ~ U{0..T-1} per view, fresh
noise eps', x_tau = alpha_tau z' + sigma_tau eps'; with probability `camera_dropout`, drawn once per step,
the camera becomes the null camera (zeros); L_phi = mean((phi(x_tau, tau, y, c) - target)^2) in fp32 with
target v* = alpha_tau eps' - sigma_tau z' for a v model, eps' for an eps model. phi has its own AdamW (lr 1e-4,
wd 0.01 by default) and is stepped here, inside `losses` (the two losses touch disjoint parameters, so this
equals threestudio's single backward); phi's gradient uses phi before this update, as in the reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.config import VSDConfig
from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput
from backend.methods.base import clip_gradient, grad_to_loss, method_schedules, weighting
from backend.priors.base import Conditioning, ParticleOptions, Prior, camera_vectors, noise_to_level, v_target


def camera_init(choice: str, prior: Prior) -> str:
    """method.camera_init with "auto" resolved: the prior's reference init (`reference_camera_init`; diffusers
    priors: PyTorch's default, as threestudio), "zero" for a prior that names none."""
    if choice != "auto":
        return choice
    return getattr(prior, "reference_camera_init", "zero")


class VSD:
    name = "vsd"
    loss_name = "vsd"

    def __init__(self, cfg: VSDConfig, prior: Prior, total_steps: int, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.prior = prior
        self.gen = generator
        self.timesteps, self.weight, self.grad_clip = method_schedules(cfg, prior, total_steps, generator)
        self.phi = prior.trainable_copy(ParticleOptions(
            rank=cfg.lora_rank, alpha=cfg.lora_alpha, camera_init=camera_init(cfg.camera_init, prior),
            model=cfg.particle_model, share_base=cfg.share_prior_unet))
        self.optimizer = torch.optim.AdamW(self.phi.parameters(), lr=cfg.lora_lr, betas=tuple(cfg.lora_betas),
                                           eps=cfg.lora_eps, weight_decay=cfg.lora_weight_decay)
        self.last_camera_dropped = False

    def parameters(self) -> list[dict[str, Any]]:
        return []  # phi has its own optimiser, stepped in `losses`

    # ------------------------------------------------------------------------------------------ the render's update

    def particle_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        """phi's estimate of the renders' eps; s_L = 1: the camera-conditional prediction alone."""
        return self.phi.predict_eps(x_t, t, cond, camera)

    def gradient(self, z: Tensor, cond: Conditioning, camera: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """g [B, C, h, w] on the prior-space render z, and the timesteps [B]."""
        t = self.timesteps.sample(step, z.shape[0], z.device)
        noise = torch.randn(z.shape, generator=self.gen, device=self.gen.device).to(z.device, z.dtype)
        with torch.no_grad():
            x_t = noise_to_level(z.detach(), noise, t, self.prior.alphas_cumprod)
            eps_prior = self.prior.predict_eps(x_t, t, cond, self.cfg.guidance_scale)
            eps_phi = self.particle_eps(x_t, t, cond, camera).to(z.dtype)
            w = weighting(self.cfg.weighting, self.prior.alphas_cumprod, t).view(-1, 1, 1, 1).to(z.dtype)
            g = w * (eps_prior - eps_phi)
            g = clip_gradient(g, self.grad_clip.at(step))
        return g, t

    # ------------------------------------------------------------------------------------------ phi's own step

    def particle_inputs(self, z_bar: Tensor, camera: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(tau [B], eps' [B, C, h, w], x_tau, camera input [B, 16]) for phi's training step. The dropout coin
        is drawn every step (one per step), so the random stream does not depend on its outcome."""
        B = z_bar.shape[0]
        T = self.prior.num_train_timesteps
        tau = torch.randint(0, T, (B,), generator=self.gen, device=self.gen.device).to(z_bar.device)
        eps2 = torch.randn(z_bar.shape, generator=self.gen, device=self.gen.device).to(z_bar.device, z_bar.dtype)
        coin = torch.rand((), generator=self.gen, device=self.gen.device)
        self.last_camera_dropped = bool(coin < self.cfg.camera_dropout)
        cam_in = torch.zeros_like(camera) if self.last_camera_dropped else camera
        x_tau = noise_to_level(z_bar, eps2, tau, self.phi.alphas_cumprod)
        return tau, eps2, x_tau, cam_in

    def particle_target(self, eps: Tensor, z_bar: Tensor, tau: Tensor) -> Tensor:
        """What phi regresses for noise `eps` on the clean render: v* (v model) or eps itself."""
        if self.phi.prediction_type == "v_prediction":
            return v_target(eps, z_bar, tau, self.phi.alphas_cumprod)
        return eps

    def particle_loss(self, z_bar: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        tau, eps2, x_tau, cam_in = self.particle_inputs(z_bar, camera)
        out = self.phi.predict(x_tau, tau, cond, cam_in).float()
        return F.mse_loss(out, self.particle_target(eps2, z_bar, tau).float())

    def train_particle(self, z_bar: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        """One AdamW step of phi on the detached renders; returns its loss (detached). A non-finite loss skips
        the step."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = self.particle_loss(z_bar, cond, camera)
            if torch.isfinite(loss):
                (self.cfg.lora_loss_weight * loss).backward()
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # ------------------------------------------------------------------------------------------ the seam

    def losses(self, out: RenderOutput, cams: Cameras, cond: Conditioning, step: int) -> dict[str, Tensor]:
        z = self.prior.encode(out.rgb)  # [B, C, h, w]
        camera = camera_vectors(cams).to(z.device)  # [B, 16]
        g, _ = self.gradient(z, cond, camera, step)
        lora = self.train_particle(z.detach(), cond, camera)
        # "lora" is reported for progress only: phi was already stepped, it carries no gradient.
        return {self.loss_name: self.weight.at(step) * grad_to_loss(z, g, self.cfg.reduction), "lora": lora}

    def state_dict(self) -> dict[str, Any]:
        return {"phi": self.phi.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phi.load_state_dict(state["phi"])
        self.optimizer.load_state_dict(state["optimizer"])
