"""Schedules: a value as a function of the step, for loss weights, timestep bounds and learning rates.

Spec forms (what configs hold; `u` is a fraction of the stage, 0 = first step, 1 = last):
- a number: constant;
- `[u0, v0, v1, u1]`: v0 until u0, v1 from u1, linear in between (`[0.2, 0.98, 0.5, 0.2001]` is a step change);
  three numbers mean u0 = 0;
- `["cosine", u0, v0, v1, u1]`: the same end points with a half-cosine in between.

`parse_schedule(spec, total_steps)` turns a spec into an object with `.at(step)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol


class Schedule(Protocol):
    def at(self, step: int) -> float: ...


@dataclass(frozen=True)
class Constant:
    value: float

    def at(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class Ramp:
    """v0 up to step s0, v1 from step s1, and in between a linear or half-cosine ramp (flat at both ends)."""

    s0: float
    v0: float
    v1: float
    s1: float
    shape: str = "linear"

    def at(self, step: int) -> float:
        if step <= self.s0:
            return self.v0
        if step >= self.s1:
            return self.v1
        r = (step - self.s0) / (self.s1 - self.s0)
        if self.shape == "cosine":
            r = 0.5 * (1.0 - math.cos(math.pi * r))
        return self.v0 + r * (self.v1 - self.v0)


def parse_schedule(spec: Any, total_steps: int) -> Schedule:
    """Build a schedule from a (validated) config spec over a stage of `total_steps` steps."""
    if isinstance(spec, int | float):
        return Constant(float(spec))
    items = list(spec)
    kind = "linear"
    if items and isinstance(items[0], str):
        kind = items.pop(0)
    if len(items) == 3:
        items = [0.0, *items]
    u0, v0, v1, u1 = (float(x) for x in items)
    last = max(total_steps - 1, 1)
    if kind not in ("linear", "cosine"):
        raise ValueError(f"unknown schedule kind {kind!r}")
    return Ramp(u0 * last, v0, v1, u1 * last, kind)

def log_linear(start: float, end: float, step: int, until: int) -> float:
    """exp((1-u) ln start + u ln end) with u = min(step / until, 1): the 3DGS position learning-rate decay."""
    if start <= 0 or end <= 0:
        return start if step < until else end
    u = min(step / max(until, 1), 1.0)
    return math.exp((1 - u) * math.log(start) + u * math.log(end))
