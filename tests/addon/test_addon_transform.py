"""addon/client/transform.py: Export's world-space arrays, checked against the backend's SH and rotations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from addon.client import ply, transform
from backend.core.rotations import quat_to_rotmat
from backend.core.sh import eval_sh


def _cloud(n: int, degree: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = {k: rng.normal(size=n).astype(np.float32) for k in ply.gaussian_names(degree)}
    for i in range(3):
        a[f"scale_{i}"] = np.log(rng.uniform(0.01, 0.1, n)).astype(np.float32)
    return a


def _cov(a: dict) -> np.ndarray:
    q = torch.tensor(np.stack([a[f"rot_{i}"] for i in range(4)], 1), dtype=torch.float64)
    r = quat_to_rotmat(q / q.norm(dim=1, keepdim=True)).numpy()
    s = np.exp(np.stack([a[f"scale_{i}"] for i in range(3)], 1).astype(np.float64))
    return r @ (s[:, :, None] ** 2 * np.swapaxes(r, 1, 2))


def _colour(a: dict, degree: int, dirs: np.ndarray) -> np.ndarray:
    k = (degree + 1) ** 2
    rest = (k - 1)
    coeffs = np.zeros((len(a["x"]), k, 3))
    for ch in range(3):
        coeffs[:, 0, ch] = a[f"f_dc_{ch}"]
        for j in range(rest):
            coeffs[:, 1 + j, ch] = a[f"f_rest_{ch * rest + j}"]
    return eval_sh(degree, torch.tensor(coeffs), torch.tensor(dirs)).numpy()


@pytest.mark.parametrize("kind", ["similarity", "mirror", "shear"])
def test_positions_covariances_and_view_dependent_colour_follow_the_matrix(kind):
    rz = np.array([[math.cos(0.7), -math.sin(0.7), 0], [math.sin(0.7), math.cos(0.7), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(-1.1), -math.sin(-1.1)], [0, math.sin(-1.1), math.cos(-1.1)]])
    lin = {"similarity": 2.5 * rz @ rx, "mirror": np.diag([-1.0, 1.0, 1.0]) @ rz,
           "shear": rz @ np.array([[1.0, 0.4, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]])}[kind]
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = lin, (1.0, -2.0, 0.5)
    a = _cloud(200, 3)
    b = transform.transform_gaussians(a, m)
    assert set(b) == set(a) and all(v.dtype == np.float32 for v in b.values())
    pos = np.stack([a["x"], a["y"], a["z"]], 1) @ lin.T + m[:3, 3]
    np.testing.assert_allclose(np.stack([b["x"], b["y"], b["z"]], 1), pos, atol=1e-5)
    np.testing.assert_allclose(_cov(b), lin @ _cov(a) @ lin.T, atol=1e-6, rtol=1e-4)
    # the colour seen along U d after the transform is the colour seen along d before (U: A's rotation part)
    w, _, vt = np.linalg.svd(lin)
    u = w @ vt
    d = np.random.default_rng(1).normal(size=(200, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(_colour(b, 3, d @ u.T), _colour(a, 3, d), atol=1e-4)
    np.testing.assert_array_equal(b["opacity"], a["opacity"])


def test_a_degenerate_matrix_is_refused():
    with pytest.raises(ValueError, match="zero scale"):
        transform.transform_gaussians(_cloud(3, 0), np.diag([1.0, 0.0, 1.0, 1.0]))
