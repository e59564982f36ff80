"""The DeepFloyd IF stage I prior: pixel space at 64x64, docs/METHODS.md §1.7.

- Weights: DeepFloyd/IF-I-XL-v1.0 by default (gated: accept its licence on the hub), a local folder, or
  random:ARCH; checked on disk before anything loads (backend/priors/hub.py).
- Text: T5 embeddings [77, 4096] of the plain prompt, the view-dependent prompts and the negative prompt are
  computed once and cached in memory and on disk ($DISTILLERY_CACHE/embeddings/<model>/<hash>.safetensors), so
  the T5-XXL encoder (about 9.5 GB in fp16) is loaded at most once per text and freed right after; a job whose
  texts are all on disk never loads it.
- encode: the render [B, H, W, 3] in [0, 1] resized bilinearly to the UNet's sample size (64) and mapped to
  [-1, 1]; decode is the inverse. The UNet predicts 6 channels (eps and a learned variance): the first 3
  are eps. Its noise schedule is read from the model's scheduler config (IF: squaredcos_cap_v2).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.config import DeepFloydIFPriorConfig
from backend.priors import hub
from backend.priors.diffusers_base import _EMBEDDINGS, DiffusersPrior

T5_MAX_LENGTH = 77


def embedding_cache_dir(model_key: str) -> Path:
    root = os.environ.get("DISTILLERY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "distillery")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_key).strip("-")[-80:]
    return Path(root) / "embeddings" / slug


class DeepFloydIFPrior(DiffusersPrior):
    name = "deepfloyd-if"
    kind = "deepfloyd-if"
    components = hub.IF_COMPONENTS
    out_channels = 3

    def __init__(self, cfg: DeepFloydIFPriorConfig | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg if cfg is not None else DeepFloydIFPriorConfig(), device)
        self.image_size = 0
        self.t5_loads = 0  # how often the T5 encoder was loaded (tests check the cache)

    def _load_text(self) -> tuple[Any, Any]:
        self.t5_loads += 1
        if self._random is not None:  # random weights: the text encoder stays on the CPU in fp32
            return self._random["tokenizer"], self._random["text_encoder"].eval().requires_grad_(False)
        from transformers import AutoTokenizer, T5EncoderModel

        assert self.root is not None
        tokenizer = AutoTokenizer.from_pretrained(self.root / "tokenizer")
        encoder = T5EncoderModel.from_pretrained(self.root / "text_encoder", dtype=self.dtype,
                                                 variant=hub.weight_variant(self.root / "text_encoder") or None)
        return tokenizer, encoder.to(self.device).eval().requires_grad_(False)

    def _embed_texts(self, tokenizer: Any, encoder: Any, texts: list[str]) -> list[Tensor]:
        tok = tokenizer(texts, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True,
                        add_special_tokens=True, return_tensors="pt")
        hidden = encoder(tok.input_ids.to(encoder.device), attention_mask=tok.attention_mask.to(encoder.device))[0]
        return list(hidden)  # [77, D] each

    def _disk_path(self, text: str) -> Path:
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        return embedding_cache_dir(self.model_key) / f"{digest}.safetensors"

    def _embed_from_disk(self, texts: list[str]) -> list[str]:
        if self.is_random:
            return texts
        from safetensors.torch import load_file

        missing = []
        for t in texts:
            path = self._disk_path(t)
            try:
                data = load_file(path)
                if data.get("text") is None or bytes(data["text"].tolist()).decode() != t:
                    raise ValueError("hash collision")
                self._remember(t, data["embedding"].to(self.dtype))
            except (OSError, ValueError, RuntimeError, KeyError):
                missing.append(t)
        return missing

    def _embed_to_disk(self, texts: list[str]) -> None:
        if self.is_random:
            return
        from safetensors.torch import save_file

        for t in texts:
            path = self._disk_path(t)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            text = torch.tensor(list(t.encode()), dtype=torch.uint8)
            save_file({"embedding": _EMBEDDINGS[(self.model_key, t)].contiguous(), "text": text}, str(tmp))
            os.replace(tmp, path)  # atomic: a concurrent job never reads a torn file

    def _load_networks(self) -> None:
        super()._load_networks()
        if self.unet.config.out_channels < 3 or self.unet.config.in_channels != 3:
            raise ValueError("prior.model: an IF stage I UNet takes 3 channels and predicts at least 3")
        self.image_size = int(self.unet.config.sample_size)

    def encode(self, rgb: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> [B, 3, 64, 64] in [-1, 1] float32 (bilinear, differentiable)."""
        assert rgb.dim() == 4 and rgb.shape[-1] == 3, f"rgb {tuple(rgb.shape)}, expected [B, H, W, 3]"
        x = rgb.permute(0, 3, 1, 2)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x * 2.0 - 1.0).float()

    def decode(self, z: Tensor) -> Tensor:
        assert z.dim() == 4 and z.shape[1] == 3, f"z {tuple(z.shape)}, expected [B, 3, H, W]"
        return ((z.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)
