"""View-dependent prompting (METHODS.md §1.5): bucket assignment and prompt suffixes."""

from __future__ import annotations

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
    """The positional ("interpolated") view embedding of METHODS.md §1.5 as bucket weights per view: for
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
