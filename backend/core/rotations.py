"""Quaternion helpers (w first, the 3DGS PLY convention)."""

from __future__ import annotations

import torch
from torch import Tensor


def quat_to_rotmat(q: Tensor) -> Tensor:
    """Unit quaternions [N, 4] (w, x, y, z) -> rotation matrices [N, 3, 3]."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)
