"""View-dependent prompting (docs/METHODS.md §1.5): bucket assignment, prompt suffixes, and Perp-Neg."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.core.cameras import wrap_azimuth

SUFFIXES = {"front": ", front view", "side": ", side view", "back": ", back view", "overhead": ", overhead view"}
BUCKETS = tuple(SUFFIXES)


def view_buckets(elevation: Tensor, azimuth: Tensor, front: float = 45.0, back: float = 45.0,
                 overhead: float = 60.0) -> list[str]:
    """Bucket per view, later rules overriding earlier ones: side; front if |a| < front; back if
    |a| > 180 - back; overhead if e > overhead. Angles in degrees, [C] each."""
    out = []
    for e, a in zip(elevation.tolist(), wrap_azimuth(azimuth).tolist(), strict=True):
        b = "side"
        if abs(a) < front:
            b = "front"
        if abs(a) > 180.0 - back:
            b = "back"
        if e > overhead:
            b = "overhead"
        out.append(b)
    return out


def view_prompt(prompt: str, bucket: str) -> str:
    return prompt + SUFFIXES[bucket] if bucket else prompt


def interpolation_weights(elevation: Tensor, azimuth: Tensor, overhead: float = 60.0) -> list[dict[str, float]]:
    """The positional ("interpolated") view embedding of docs/METHODS.md §1.5 as bucket weights per view: for
    |a| < 90, r = 1 - |a| / 90 and front r + side (1 - r); otherwise r = 2 - |a| / 90 and side r + back (1 - r);
    views above `overhead` elevation use the overhead bucket alone. Text priors blend the bucket embeddings
    with these weights; the reference prior blends the buckets' reference sets."""
    out = []
    for e, a in zip(elevation.tolist(), wrap_azimuth(azimuth).tolist(), strict=True):
        if e > overhead:
            out.append({"overhead": 1.0})
            continue
        if abs(a) < 90.0:
            r = 1.0 - abs(a) / 90.0
            w = {"front": r, "side": 1.0 - r}
        else:
            r = 2.0 - abs(a) / 90.0
            w = {"side": r, "back": 1.0 - r}
        out.append({k: v for k, v in w.items() if v > 0})
    return out
# ---------------------------------------------------------------------------------------------- Perp-Neg

# f(r) = a exp(-b r) + c, threestudio's defaults (docs/METHODS.md §1.5)
PERP_NEG_F_SB = (1.0, 0.5, -0.606)
PERP_NEG_F_FSB = (1.0, 0.5, 0.967)
PERP_NEG_F_FS = (4.0, 0.5, -2.426)
PERP_NEG_F_SF = (4.0, 0.5, -2.426)


def _decay(f: tuple[float, float, float], r: float) -> float:
    a, b, c = f
    return a * math.exp(-b * r) + c


@dataclass(frozen=True)
class PerpNegView:
    """Perp-Neg's plan for one view: the positive embedding is sum_k mix[k] * e(bucket k); the two negatives are
    the embeddings of `negatives` with guidance weights `weights` (already negative)."""

    mix: tuple[tuple[str, float], ...]
    negatives: tuple[str, str]
    weights: tuple[float, float]


def perp_neg_plan(bucket: str, azimuth: float) -> PerpNegView:
    """The interpolated positive and the weighted negatives of one view (threestudio's form). `azimuth` in
    degrees, wrapped here; overhead views keep their own embedding and get zero-weight negatives."""
    a = abs((azimuth + 180.0) % 360.0 - 180.0)
    if bucket == "overhead":
        return PerpNegView((("overhead", 1.0),), ("front", "side"), (0.0, 0.0))
    if a < 90.0:
        r = 1.0 - a / 90.0  # 1 = fully front, 0 = fully side
        return PerpNegView((("front", r), ("side", 1.0 - r)), ("front", "side"),
                           (-_decay(PERP_NEG_F_FS, r), -_decay(PERP_NEG_F_SF, 1.0 - r)))
    r = 2.0 - a / 90.0  # 1 = fully side, 0 = fully back
    return PerpNegView((("side", r), ("back", 1.0 - r)), ("side", "front"),
                       (-_decay(PERP_NEG_F_SB, r), -_decay(PERP_NEG_F_FSB, r)))


def perpendicular(x: Tensor, y: Tensor) -> Tensor:
    """x minus its projection on y, per sample: x - (<x, y> / max(<y, y>, 1e-6)) y. Shapes [B, ...]."""
    dims = tuple(range(1, x.dim()))
    coef = (x * y).sum(dims, keepdim=True) / (y * y).sum(dims, keepdim=True).clamp_min(1e-6)
    return x - coef * y


def perp_neg_combine(eps_u: Tensor, eps_pos: Tensor, eps_negs: list[Tensor], weights: Tensor, scale: float) -> Tensor:
    """eps_u + s (e_pos + sum_i w_i perp(e_i, e_pos)), e = eps - eps_u. eps_* [B, C, h, w], weights [B, n]."""
    e_pos = eps_pos - eps_u
    acc = torch.zeros_like(e_pos)
    for i, eps_n in enumerate(eps_negs):
        acc = acc + weights[:, i].view(-1, *([1] * (e_pos.dim() - 1))).to(e_pos) * perpendicular(eps_n - eps_u, e_pos)
    return eps_u + scale * (e_pos + acc)
