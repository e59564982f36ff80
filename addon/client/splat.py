"""What the splat display needs per Gaussian, from the 3DGS arrays (numpy only, no bpy).

Computed where the PLY is decoded (a reader or import thread), so the main thread only copies arrays and the
Geometry Nodes group only instances: alpha = sigmoid(opacity); the colour, SH DC to display sRGB as the
backend renders it (0.5 + C0 f_dc, clamped to [0, 1]), kept as display values (blend "TRAINED", the default:
Blender then blends what the backend blends, exact under the Raw view transform) or taken to linear light
with the exact sRGB curve (blend "LINEAR": physically based blending, exact under Standard); the unit
quaternion (w, x, y, z); and the standard deviations exp(scale). The reader thread computes "TRAINED" colours;
`to_blend` converts them on the main thread when a scene blends in linear light.
"""

from __future__ import annotations

import numpy as np

SH_C0 = 0.28209479177387814
ALPHA = "distillery_alpha"  # FLOAT [N]
COLOR = "distillery_color"  # FLOAT_COLOR [N, 4], display values ("TRAINED") or linear ("LINEAR")
ROTATION = "distillery_rotation"  # QUATERNION [N, 4], w x y z, unit
SIGMA = "distillery_sigma"  # FLOAT_VECTOR [N, 3]
NAMES = (ALPHA, COLOR, ROTATION, SIGMA)
BLENDS = ("TRAINED", "LINEAR")  # how the stored colours blend: as the backend (display values) or in linear light


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The exact sRGB decoding curve (IEC 61966-2-1), elementwise on values in [0, 1]."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """The exact sRGB encoding curve, the inverse of srgb_to_linear, elementwise on values in [0, 1]."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055).astype(np.float32)


def check_blend(blend: str) -> str:
    if blend not in BLENDS:
        raise ValueError(f"blend {blend!r}; expected one of {', '.join(BLENDS)}")
    return blend


def to_blend(color: np.ndarray, source: str, target: str) -> np.ndarray:
    """RGBA colours [N, 4] stored for blend `source`, re-expressed for blend `target` (alpha untouched)."""
    check_blend(source), check_blend(target)
    if source == target:
        return color
    out = np.array(color, dtype=np.float32, copy=True)
    convert = srgb_to_linear if target == "LINEAR" else linear_to_srgb
    out[:, :3] = convert(out[:, :3])
    return out


def display_arrays(arrays: dict[str, np.ndarray], blend: str = "TRAINED") -> dict[str, np.ndarray]:
    """The display attributes of 3DGS arrays (PLY names -> [N]), contiguous float32; colours for `blend`."""
    check_blend(blend)
    n = len(arrays["x"])
    alpha = 1.0 / (1.0 + np.exp(-arrays["opacity"].astype(np.float32)))
    color = np.ones((n, 4), dtype=np.float32)
    for i in range(3):
        shown = np.clip(0.5 + SH_C0 * arrays[f"f_dc_{i}"], 0.0, 1.0)  # what the backend composites
        color[:, i] = srgb_to_linear(shown) if blend == "LINEAR" else shown
    q = np.stack([arrays[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float32)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), np.array([1, 0, 0, 0], np.float32))
    sigma = np.exp(np.stack([arrays[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float32))
    return {ALPHA: np.ascontiguousarray(alpha, dtype=np.float32), COLOR: color,
            ROTATION: np.ascontiguousarray(q, dtype=np.float32), SIGMA: np.ascontiguousarray(sigma, dtype=np.float32)}


def with_display(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`arrays` plus its display attributes, colours as "TRAINED" (for the reader thread)."""
    return {**arrays, **display_arrays(arrays)}
