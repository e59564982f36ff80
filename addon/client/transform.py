"""Apply an affine transform to 3DGS arrays (numpy only, no bpy): what Export does with an object's matrix.

positions: A x + t. Covariances: Sigma' = A Sigma A^T, re-factored as R' diag(s'^2) R'^T (an eigendecomposition;
a rotation times a uniform scale takes the exact shortcut q' = q_A q, log s' = log s + log k). View-dependent
colour: the SH bands rotate with the rotation part U of A (A = U P), so a Gaussian seen from U d looks as it
did from d. Each band's rotation matrix is solved by least squares on sample directions, in the basis the
renderer uses (the 3DGS one: band 1 is (-C1 y, C1 z, -C1 x)), which keeps the code free of Wigner formulas.
Opacity and the DC colour do not change.
"""

from __future__ import annotations

import numpy as np

from .ply import REST_COUNTS, sh_degree_of

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: np.ndarray) -> np.ndarray:
    """Bands 1-3 of the real SH basis [M, 15] at unit directions [M, 3] (the 3DGS signs and order)."""
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    return np.stack([
        -SH_C1 * y, SH_C1 * z, -SH_C1 * x,
        SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy),
        SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
        SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy), SH_C3[5] * z * (xx - yy),
        SH_C3[6] * x * (xx - 3 * yy),
    ], axis=1)


def sh_rotation(u: np.ndarray, degree: int) -> np.ndarray:
    """[K, K] (K = (degree+1)^2 - 1) matrix X with basis(U^T d) = basis(d) X for the orthogonal U: new
    coefficients c' = X c keep colour(U d) = old colour(d)."""
    k = (degree + 1) ** 2 - 1
    if k == 0:
        return np.zeros((0, 0))
    rng = np.random.default_rng(0)
    d = rng.normal(size=(128, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = sh_basis(d)[:, :k]
    b_rot = sh_basis(d @ u)[:, :k]  # rows: (U^T d)^T
    x = np.zeros((k, k))
    start = 0
    for band in range(1, degree + 1):  # bands never mix under rotations
        sl = slice(start, start + 2 * band + 1)
        x[sl, sl] = np.linalg.lstsq(b[:, sl], b_rot[:, sl], rcond=None)[0]
        start += 2 * band + 1
    return x


def _quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """[N, 3, 3] from unit quaternions [N, 4] (w, x, y, z)."""
    w, x, y, z = q.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=1).reshape(-1, 3, 3)


def _rotmat_to_quat(r: np.ndarray) -> np.ndarray:
    """[N, 4] unit quaternions (w, x, y, z) from proper rotations [N, 3, 3] (Shepperd's method)."""
    n = r.shape[0]
    q = np.empty((n, 4))
    tr = r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]
    diag = np.stack([tr, r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]], axis=1)
    case = diag.argmax(axis=1)
    for c in range(4):
        m = case == c
        if not m.any():
            continue
        rr = r[m]
        if c == 0:
            s = np.sqrt(1 + tr[m]) * 2
            q[m] = np.stack([0.25 * s, (rr[:, 2, 1] - rr[:, 1, 2]) / s, (rr[:, 0, 2] - rr[:, 2, 0]) / s,
                             (rr[:, 1, 0] - rr[:, 0, 1]) / s], axis=1)
        else:
            i = c - 1
            j, k = (i + 1) % 3, (i + 2) % 3
            s = np.sqrt(1 + rr[:, i, i] - rr[:, j, j] - rr[:, k, k]) * 2
            v = np.empty((len(rr), 4))
            v[:, 0] = (rr[:, k, j] - rr[:, j, k]) / s
            v[:, 1 + i] = 0.25 * s
            v[:, 1 + j] = (rr[:, j, i] + rr[:, i, j]) / s
            v[:, 1 + k] = (rr[:, k, i] + rr[:, i, k]) / s
            q[m] = v
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def transform_gaussians(arrays: dict[str, np.ndarray], matrix: np.ndarray) -> dict[str, np.ndarray]:
    """The 3DGS arrays (PLY names -> [N]) moved by the affine `matrix` [4, 4]; float32 out, same keys."""
    m = np.asarray(matrix, dtype=np.float64)
    a, t = m[:3, :3], m[:3, 3]
    if not np.isfinite(m).all() or abs(np.linalg.det(a)) < 1e-12:
        raise ValueError("the object's transform is degenerate (zero scale); apply a valid scale first")
    out = {k: np.asarray(v) for k, v in arrays.items()}
    n = len(out["x"])
    pos = np.stack([out["x"], out["y"], out["z"]], axis=1).astype(np.float64) @ a.T + t
    out["x"], out["y"], out["z"] = pos[:, 0], pos[:, 1], pos[:, 2]

    # Polar decomposition A = U P (U orthogonal) for the SH bands and the similarity test.
    w, _, vt = np.linalg.svd(a)
    u = w @ vt
    k = float(np.cbrt(abs(np.linalg.det(a))))
    q = np.stack([out[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    log_s = np.stack([out[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float64)
    if np.allclose(a.T @ a, k * k * np.eye(3), rtol=1e-6, atol=1e-9) and np.linalg.det(u) > 0:
        qa = _rotmat_to_quat(u[None])[0]
        q = _quat_mul(np.broadcast_to(qa, q.shape), q)
        log_s = log_s + np.log(k)
    elif n:
        r = _quat_to_rotmat(q)
        cov = r * np.exp(2 * log_s)[:, None, :] @ np.swapaxes(r, 1, 2)  # R diag(s^2) R^T  [N, 3, 3]
        cov = a @ cov @ a.T
        vals, vecs = np.linalg.eigh(cov)
        vecs[np.linalg.det(vecs) < 0, :, 0] *= -1  # a proper rotation
        q = _rotmat_to_quat(vecs)
        log_s = 0.5 * np.log(np.maximum(vals, 1e-30))
    for i in range(4):
        out[f"rot_{i}"] = q[:, i]
    for i in range(3):
        out[f"scale_{i}"] = log_s[:, i]

    degree = sh_degree_of(list(out))
    if degree > 0:
        kk = REST_COUNTS[degree] // 3
        x = sh_rotation(u, degree)
        for ch in range(3):
            names = [f"f_rest_{ch * kk + j}" for j in range(kk)]
            coeffs = np.stack([out[nm] for nm in names], axis=1).astype(np.float64)  # [N, K]
            rotated = coeffs @ x.T
            for j, nm in enumerate(names):
                out[nm] = rotated[:, j]
    return {key: np.ascontiguousarray(v, dtype=np.float32) for key, v in out.items()}
