"""The Representation seam: what the engine loop needs from anything it optimises.

Representations are `torch.nn.Module`s. Their sizes may change during optimisation (densification), so
checkpoints use `state_dict_full` / `load_state_dict_full` (tensors only) instead of the fixed-shape
`state_dict`, and optimiser groups are rebuilt after loading.

Optional parts the engine uses when present:
- `begin_step(step, total_steps)`: per-step state drawn before rendering (a NeRF's hash-grid growth and
  shading draw, the dual renderer's implicit weight);
- `create_from(other, cfg, device, generator)` (classmethod): start from the previous stage's representation
  of another kind (NeRF -> DMTet; config.CONVERSIONS lists what validate() allows);
- `export_mesh()` for kind "mesh": the final mesh (io/mesh_export.ExportMesh), written as PLY and GLB.

Snapshot layouts by kind: "gaussians" -> the 3DGS PLY arrays; "mesh" -> x y z nx ny nz (float32), red green
blue (uint8) per vertex, plus "faces" [F, 3] (int32).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from backend.core.outputs import RenderOutput


@runtime_checkable
class Representation(Protocol):
    kind: str  # "gaussians" or "mesh": which snapshot/asset layout it writes (docs/DESIGN.md §4)
    cfg: Any

    @property
    def count(self) -> int:
        """Primitives (Gaussians, vertices) for progress reports."""
        ...

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups, each with a unique "name" and its own "lr"."""
        ...

    def update_learning_rates(self, optimizer: torch.optim.Optimizer, step: int, total_steps: int) -> None:
        """Apply the representation's own learning-rate schedules (called before every step)."""
        ...

    def after_backward(self, step: int, total_steps: int, out: RenderOutput,
                       optimizers: list[torch.optim.Optimizer]) -> dict[str, int]:
        """After backward, before the optimiser step: densify, prune, reset (may replace parameters and
        their optimiser state in place)."""
        ...

    def snapshot(self, max_points: int | None = None) -> dict[str, np.ndarray]:
        """Per-vertex arrays for the wire, in the PLY layout of `kind`; never non-finite."""
        ...

    def state_dict_full(self) -> dict[str, Tensor]: ...

    def load_state_dict_full(self, state: dict[str, Tensor]) -> None: ...
