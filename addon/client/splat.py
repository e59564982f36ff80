"""What the splat display needs per Gaussian, from the 3DGS arrays (numpy only, no bpy).

Computed where the PLY is decoded (a reader or import thread), so the main thread only copies arrays and the
Geometry Nodes group only instances: alpha = sigmoid(opacity); the colour, SH DC to display sRGB as the
backend renders it (0.5 + C0 f_dc, clamped to [0, 1]) and then to linear with the exact sRGB curve; the unit
quaternion (w, x, y, z); and the standard deviations exp(scale).
"""

from __future__ import annotations

import numpy as np

SH_C0 = 0.28209479177387814
ALPHA = "distillery_alpha"  # FLOAT [N]
COLOR = "distillery_color"  # FLOAT_COLOR [N, 4], linear
ROTATION = "distillery_rotation"  # QUATERNION [N, 4], w x y z, unit
SIGMA = "distillery_sigma"  # FLOAT_VECTOR [N, 3]
NAMES = (ALPHA, COLOR, ROTATION, SIGMA)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The exact sRGB decoding curve (IEC 61966-2-1), elementwise on values in [0, 1]."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def display_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The display attributes of 3DGS arrays (PLY names -> [N]), contiguous float32."""
    n = len(arrays["x"])
    alpha = 1.0 / (1.0 + np.exp(-arrays["opacity"].astype(np.float32)))
    color = np.ones((n, 4), dtype=np.float32)
    for i in range(3):
        color[:, i] = srgb_to_linear(np.clip(0.5 + SH_C0 * arrays[f"f_dc_{i}"], 0.0, 1.0))
    q = np.stack([arrays[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float32)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), np.array([1, 0, 0, 0], np.float32))
    sigma = np.exp(np.stack([arrays[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float32))
    return {ALPHA: np.ascontiguousarray(alpha, dtype=np.float32), COLOR: color,
            ROTATION: np.ascontiguousarray(q, dtype=np.float32), SIGMA: np.ascontiguousarray(sigma, dtype=np.float32)}


def with_display(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`arrays` plus its display attributes (for the reader thread)."""
    return {**arrays, **display_arrays(arrays)}
