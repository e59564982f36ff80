"""The reference prior's particle model for VSD/ESD/ASD: the exact plain-prompt denoiser plus a small trainable
residual network with camera conditioning,

    eps_phi(x_t, t, y, c) = eps_ref(x_t, t; every reference of y) + r_psi(x_t, eps_ref, t, c),

the analogue of a LoRA on Stable Diffusion (whose base knows nothing of the camera either). The residual's
output convolution starts at zero (like LoRA's B), so phi equals the prior's plain prediction exactly at
initialisation whatever the camera MLP holds; the output layer gets a gradient from the first step and every
other layer from the second, so the residual moves at the particle learning rate. The camera enters like the
diffusers camera MLP: `Linear(16, E) -> SiLU -> Linear(E, E)` added to the timestep embedding. With
camera_init "default" (PyTorch's init; what "auto" gives on the reference prior) camera and null camera give
different embeddings from the start, so ESD's entropy term (their difference) grows as soon as the output
layer moves; with "zero" its output layer is zero too and that difference starts at second order (measured
on mug renders under "a duck", AdamW at lr 1e-4: RMS camera-vs-null difference at t = 200 of 0.013 after 100
steps and 0.025 after 200 with "default", 0.0035 and 0.013 with "zero", while phi's denoising error there
falls from 0.60 to 0.20 either way). Pixel space, eps prediction, [B, 3, 64, 64].
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from backend.priors.base import Conditioning, ParticleOptions

WIDTH = 32  # feature channels at 32x32 (half at 64x64)
EMBED = 64  # timestep + camera embedding size


def timestep_features(t: Tensor, dim: int = EMBED) -> Tensor:
    """Sinusoidal features [B, dim] of integer timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class _Block(nn.Module):
    """GroupNorm -> SiLU -> conv, with the embedding added as a per-channel shift, and a skip."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.emb = nn.Linear(EMBED, ch)
        self.norm2, self.conv2 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(torch.nn.functional.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(torch.nn.functional.silu(self.norm2(h)))
        return x + h


class ResidualNet(nn.Module):
    """r_psi on [x_t, eps_ref] (6 channels): one convolution in and out at 64x64, two embedding-conditioned
    residual blocks at 32x32 (most of the work at a quarter of the pixels keeps a CPU step cheap)."""

    def __init__(self, camera_init: str = "zero") -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(EMBED, EMBED), nn.SiLU(), nn.Linear(EMBED, EMBED))
        self.camera_mlp = nn.Sequential(nn.Linear(16, EMBED), nn.SiLU(), nn.Linear(EMBED, EMBED))
        if camera_init == "zero":
            nn.init.zeros_(self.camera_mlp[2].weight)
            nn.init.zeros_(self.camera_mlp[2].bias)
        elif camera_init != "default":
            raise ValueError(f"method.camera_init must be zero or default, got {camera_init!r}")
        self.inp = nn.Conv2d(6, WIDTH // 2, 3, padding=1)
        self.down = nn.Conv2d(WIDTH // 2, WIDTH, 4, stride=2, padding=1)
        self.block1, self.block2 = _Block(WIDTH), _Block(WIDTH)
        self.up = nn.ConvTranspose2d(WIDTH, WIDTH // 2, 4, stride=2, padding=1)
        self.out = nn.Conv2d(WIDTH // 2, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # phi starts equal to its base
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: Tensor, eps_ref: Tensor, t: Tensor, camera: Tensor) -> Tensor:
        emb = self.time_mlp(timestep_features(t)) + self.camera_mlp(camera)
        h = torch.nn.functional.silu(self.inp(torch.cat([x_t, eps_ref], dim=1)))  # [B, W/2, 64, 64]
        lo = self.block2(self.block1(self.down(h), emb), emb)  # [B, W, 32, 32]
        return self.out(torch.nn.functional.silu(h + self.up(lo)))


class ReferenceParticleModel:
    prediction_type = "epsilon"

    def __init__(self, prior: Any, options: ParticleOptions) -> None:
        self.prior = prior
        self.alphas_cumprod = prior.alphas_cumprod
        self.net = ResidualNet(options.camera_init).to(prior.device)

    def parameters(self) -> list[Tensor]:
        return list(self.net.parameters())

    def predict(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        B = x_t.shape[0]
        assert x_t.dim() == 4 and x_t.shape[1] == 3, f"x_t {tuple(x_t.shape)}, expected [B, 3, 64, 64]"
        assert camera.shape == (B, 16), f"camera {tuple(camera.shape)}, expected ({B}, 16)"
        with torch.no_grad():
            base = self.prior.branch_eps(x_t, t, cond, "plain")  # exact, float32
        x = x_t.float()
        return base + self.net(x, base, t, camera.to(x))

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        return self.predict(x_t, t, cond, camera)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state)
