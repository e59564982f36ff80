"""The Renderer seam: render(rep, cams, background) -> RenderOutput.

Every GPU renderer has a pure-torch twin with the same signature that runs on the CPU. `auto` picks once per
job and the choice is announced in the job's first status event (never a silent fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from backend.core.cameras import Cameras
from backend.core.outputs import RenderOutput


@runtime_checkable
class GaussianCloud(Protocol):
    """Activated 3D Gaussians as renderers read them. Shapes: means [N, 3] (world), scales [N, 3] (std-devs,
    world units), quats [N, 4] (unit, w first), opacities [N] in (0, 1), sh [N, (sh_degree + 1)^2, 3]
    (3DGS convention: rgb = max(eval_sh(sh, dir) + 0.5, 0))."""

    sh_degree: int

    @property
    def means(self) -> Tensor: ...

    @property
    def scales(self) -> Tensor: ...

    @property
    def quats(self) -> Tensor: ...

    @property
    def opacities(self) -> Tensor: ...

    @property
    def sh(self) -> Tensor: ...


@dataclass
class PlainGaussians:
    """A GaussianCloud held as plain tensors (loaded assets, tests)."""

    means: Tensor
    scales: Tensor
    quats: Tensor
    opacities: Tensor
    sh: Tensor
    sh_degree: int = 0

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        assert self.means.shape == (n, 3), f"means {tuple(self.means.shape)}"
        assert self.scales.shape == (n, 3), f"scales {tuple(self.scales.shape)}"
        assert self.quats.shape == (n, 4), f"quats {tuple(self.quats.shape)}"
        assert self.opacities.shape == (n,), f"opacities {tuple(self.opacities.shape)}"
        assert self.sh.shape == (n, (self.sh_degree + 1) ** 2, 3), f"sh {tuple(self.sh.shape)}"


@runtime_checkable
class Renderer(Protocol):
    name: str

    def render(self, rep: object, cams: Cameras, background: Tensor) -> RenderOutput:
        """Render `rep` from every camera over a solid `background` [C, 3] in [0, 1]. A row of NaNs asks for the
        representation's learned background instead (NeRF and DMTet; config.validate allows it only there)."""
        ...
