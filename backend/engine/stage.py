"""What one stage of a job runs with (`Stage`), and the per-phase step timings (`Timings`, `TimedPrior`).

The loop (engine/loop.py) builds a Stage per stage config and times every step; engine/outputs.py renders and
writes from a Stage; `distillery bench` reads the Timings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from backend.config import StageConfig
from backend.core.cameras import OrbitSampler
from backend.engine.optim import Regularisers


@dataclass
class Timings:
    """Seconds per phase for every step (medians for `bench`); `sync` makes CUDA timings honest."""

    sync: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    """The stage name of every row of `history` (multi-stage presets time each stage on its own)."""
    current: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        self.current[phase] = self.current.get(phase, 0.0) + seconds

    def end_step(self, stage: str = "") -> None:
        self.history.append(self.current)
        self.stages.append(stage)
        self.current = {}

    def mark(self, device: torch.device) -> float:
        if self.sync and device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def medians(self, skip: int = 0, stage: str | None = None) -> dict[str, float]:
        """Median seconds per phase over the steps after the first `skip` (of `stage` only, when given), plus
        "step" (their sum)."""
        rows = [r for r, s in zip(self.history, self.stages, strict=True) if stage is None or s == stage][skip:]
        if not rows:
            return {}
        phases = sorted({k for r in rows for k in r})
        out = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in phases}
        out["step"] = statistics.median(sum(r.values()) for r in rows)
        return out


class TimedPrior:
    """Delegates to a prior and books the time of its network calls under "prior"."""

    def __init__(self, prior: Any, timings: Timings) -> None:
        self._prior, self._t = prior, timings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prior, name)

    def _timed(self, fn: Callable, *args: Any, **kw: Any) -> Any:
        t0 = self._t.mark(self._prior.device)
        try:
            return fn(*args, **kw)
        finally:
            self._t.add("prior", self._t.mark(self._prior.device) - t0)

    def predict_eps(self, *args: Any, **kw: Any) -> Any:
        return self._timed(self._prior.predict_eps, *args, **kw)

    def encode(self, *args: Any, **kw: Any) -> Any:
        return self._timed(self._prior.encode, *args, **kw)

    def perp_neg_unguided(self, *args: Any, **kw: Any) -> Any:  # ASD's discriminator target with Perp-Neg
        return self._timed(self._prior.perp_neg_unguided, *args, **kw)


@dataclass
class Stage:
    """Everything one stage runs with."""

    index: int
    cfg: StageConfig
    offset: int  # global step of the stage's first step
    prior: Any
    method: Any
    renderer: Any
    renderer_note: str
    rep: Any
    optimizer: torch.optim.Optimizer
    sampler: OrbitSampler
    regularisers: Regularisers
    device: torch.device
    lr_scale: float = 1.0  # halved by each rollback
    rollbacks: int = 0


class Cancelled(Exception):
    """The job was cancelled; `step` is the last completed global step."""

    def __init__(self, step: int) -> None:
        super().__init__(f"cancelled after step {step}")
        self.step = step
