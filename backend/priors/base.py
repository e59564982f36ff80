"""The Prior seam: a frozen 2D diffusion model as score distillation sees it.

One classifier-free guidance convention in the whole code base (docs/METHODS.md §1.2):
    eps_hat = eps_u + s * (eps_c - eps_u)
so s = 1 is the conditional prediction alone and s = 0 the unconditional one. "Unconditional" means the
negative prompt's condition (default ""), never zeros.

Spaces: `encode` maps renders [B, H, W, 3] in [0, 1] to the prior's space [B, C, h, w] (latents for Stable
Diffusion, 64x64 pixels in [-1, 1] for pixel priors), differentiably; `decode` goes back for previews.
Noise: x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps with integer timesteps 0..T-1 and `alphas_cumprod` [T]
read from the prior (never hard-coded elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from backend.core.cameras import Cameras


def scaled_linear_alphas_cumprod(num_steps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> Tensor:
    """Stable Diffusion 1.x/2.x noise schedule: betas = linspace(sqrt(b0), sqrt(b1), T)^2; returns abar [T]
    in float64 precision cast to float32."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


@dataclass
class Conditioning:
    """What `Prior.condition` returns: opaque to methods, one entry per view of the batch.

    `prompt`/`negative` are the plain texts; `views` the bucket names per view ("front", ...; "" when view
    prompts are off); `data` holds the prior's own tensors (text embeddings, reference indices, ...);
    `background` [C, 3] is the solid colour the condition was made for (None when the prior ignores it), so
    that a method can make further conditions for the same views (e.g. ISM's null condition)."""

    prompt: str
    negative: str
    views: list[str]
    data: dict[str, Any] = field(default_factory=dict)
    background: Tensor | None = None

    def __len__(self) -> int:
        return len(self.views)


@runtime_checkable
class Prior(Protocol):
    name: str
    alphas_cumprod: Tensor  # [T] float32, on the prior's device
    num_train_timesteps: int
    device: torch.device

    def prepare(self, prompt: str, negative: str) -> None:
        """Called once before the first step: check the prompts and load what they need (weights,
        embeddings, references), so that problems surface before any work with a clear error."""
        ...

    def condition(self, prompt: str, negative: str, cams: Cameras, background: Tensor | None = None) -> Conditioning:
        """Condition for each camera of the batch. `background` [C, 3] in [0, 1] is the solid colour the
        renders were composited on; priors that model backgrounds themselves ignore it.

        An empty `prompt` is the null condition: the empty text for every view, without view suffixes, so
        that `predict_eps(x, t, condition("", "", cams), 1.0)` is the model's unconditional prediction
        eps(x, t, "") (ISM inverts with it; docs/METHODS.md §2.4). It may differ from the unconditional branch of
        guidance, which is the negative prompt's."""
        ...

    def encode(self, rgb: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> [B, C, h, w] in the prior's space, differentiable."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """[B, C, h, w] -> [B, H', W', 3] in [0, 1] (for previews and image-space losses)."""
        ...

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, guidance_scale: float = 1.0) -> Tensor:
        """Guided noise prediction eps_u + s (eps_c - eps_u) at integer timesteps t [B] (any level, so DDIM
        inversion can use it). s = 1 evaluates only the conditional branch, s = 0 only the unconditional;
        negative s is allowed (guidance away from the prompt, JSD's inversion)."""
        ...

    def trainable_copy(self, options: ParticleOptions | None = None) -> TrainablePrior:
        """A trainable copy that starts equal to this prior (VSD's particle score model): a peft LoRA for
        diffusers priors, a zero-initialised residual network for the reference prior."""
        ...


@dataclass
class ParticleOptions:
    """How `Prior.trainable_copy` builds the particle model (docs/METHODS.md §2.2). `model` names another base UNet
    ("" = the prior's own weights); `share_base` puts the adapter on the prior's own network (single-model
    mode); `camera_init` "zero" makes the camera MLP start at zero so the copy equals its base exactly."""

    rank: int = 4
    alpha: float = 4.0
    camera_init: str = "zero"
    model: str = ""
    share_base: bool = False


@runtime_checkable
class TrainablePrior(Protocol):
    """The particle score model of VSD/ESD/ASD: its base prior's network plus trainable parts and a camera
    input. It reads the plain prompt (no view suffix) from the Conditioning. Outputs are float32."""

    prediction_type: str  # "epsilon" or "v_prediction": what `predict` returns, hence the training target
    alphas_cumprod: Tensor  # [T] of its own schedule (equal to the prior's)

    def parameters(self) -> Any:
        """The trainable tensors only (LoRA + camera MLP, or the residual network)."""
        ...

    def predict(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        """Raw output in the model's parameterisation, [B, C, h, w] float32. `camera` [B, 16] flattened
        camera-to-world matrices; zeros are the null camera."""
        ...

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        """The same prediction as eps (v -> eps converted: eps = sigma_t x_t + alpha_t v), float32."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The trainable tensors (small: no frozen base weights)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def camera_vectors(cams: Cameras) -> Tensor:
    """[C, 16] camera-to-world matrices (OpenCV axes) flattened row-major: the particle model's camera input."""
    return cams.cam_to_world.reshape(len(cams), 16).to(torch.float32)


def v_to_eps(v: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """eps = sigma_t x_t + alpha_t v (docs/METHODS.md §1.1)."""
    abar = alphas_cumprod[t].to(v.dtype).view(-1, *([1] * (v.dim() - 1)))
    return (1 - abar).sqrt() * x_t.to(v.dtype) + abar.sqrt() * v


def v_target(eps: Tensor, x0: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """v = alpha_t eps - sigma_t x0 (docs/METHODS.md §1.1)."""
    abar = alphas_cumprod[t].to(eps.dtype).view(-1, *([1] * (eps.dim() - 1)))
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def noise_to_level(z: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) z + sqrt(1 - abar_t) noise, per sample ([B] timesteps)."""
    abar = alphas_cumprod[t].to(z.dtype).view(-1, *([1] * (z.dim() - 1)))
    return abar.sqrt() * z + (1 - abar).sqrt() * noise


def tweedie_x0(x_t: Tensor, eps: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """x0_hat = (x_t - sigma_t eps) / alpha_t."""
    abar = alphas_cumprod[t].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
