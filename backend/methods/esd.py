"""Entropic score distillation (ESD), docs/METHODS.md §2.3.

ESD restores an entropy term of weight lambda on the renders' distribution q:

    grad = E[(grad log p(x | y) - lambda grad log q(x | null) - (1 - lambda) grad log q(x | c)) dx/dtheta]

where q(x | null) is the camera marginal, which the particle model phi learns through its camera dropout (the
null camera is 16 zeros; never disable the dropout, p = 0.1). In eps form:

    g = w(t) [eps_hat_s(x_t; y_view, y_neg) - lambda eps_phi(x_t; y, null) - (1 - lambda) eps_phi(x_t; y, c)]

with lambda = 1 - guidance_scale_lora (s_L): s_L = 1 is VSD exactly, the ESD authors' default is 0.5 ("may
vary"). Both phi halves take the plain conditional prompt; only the camera differs (threestudio PR #261).
phi's training step is VSD's. The camera MLP keeps PyTorch's default init on diffusers priors (threestudio's), so
the two halves differ from the first step; a zero-initialised MLP would make ESD equal VSD until it learns.
"""

from __future__ import annotations

import torch
from torch import Tensor

from backend.methods.vsd import VSD
from backend.priors.base import Conditioning


class ESD(VSD):
    name = "esd"
    loss_name = "esd"

    def particle_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        """lambda eps_phi(null) + (1 - lambda) eps_phi(c), lambda = 1 - s_L. Both halves are always computed
        (unlike VSD, the null-camera half cannot be skipped)."""
        lam = 1.0 - self.cfg.guidance_scale_lora
        eps_null = self.phi.predict_eps(x_t, t, cond, torch.zeros_like(camera))
        eps_cam = self.phi.predict_eps(x_t, t, cond, camera)
        return lam * eps_null + (1.0 - lam) * eps_cam
