"""Image operations shared by the layers: compositing a render over its background, total variation."""

from __future__ import annotations

import torch
from torch import Tensor


def composite(rgb_premultiplied: Tensor, alpha: Tensor, background: Tensor | None) -> Tensor:
    """Straight rgb [C, H, W, 3] over a solid background [C, 3] (None: white)."""
    C = rgb_premultiplied.shape[0]
    assert alpha.shape == (*rgb_premultiplied.shape[:3], 1), f"alpha {tuple(alpha.shape)}"
    if background is None:
        background = torch.ones(C, 3, dtype=rgb_premultiplied.dtype, device=rgb_premultiplied.device)
    assert background.shape == (C, 3), f"background {tuple(background.shape)}, expected ({C}, 3)"
    return rgb_premultiplied + (1.0 - alpha) * background[:, None, None, :].to(rgb_premultiplied)


def total_variation(img: Tensor) -> Tensor:
    """2 (mean squared vertical difference + mean squared horizontal difference) of [C, H, W, D]."""
    dv = (img[:, 1:] - img[:, :-1]).pow(2).mean()
    dh = (img[:, :, 1:] - img[:, :, :-1]).pow(2).mean()
    return 2 * (dv + dh)
