"""Camera and frame conversions for the add-on: the numpy twin of `backend/core/cameras.py`.

The convention (docs/CAMERAS.md): world right-handed with +Z up like Blender; objects face -Y; azimuth 0 is
the front and grows counter-clockwise seen from above (+90 puts the camera on +X); camera frames are OpenCV
(+x right, +y down, +z forward). `tests/addon/test_convert.py` checks every function here against its torch
original, and round trips. Nothing else in the add-on flips an axis. numpy only (no bpy): callers pass
matrices as nested sequences or arrays (`numpy.array(obj.matrix_world)`).
"""

from __future__ import annotations

import math

import numpy as np

# Blender cameras look down their local -Z with +Y up; OpenCV looks down +Z with +Y down.
BLENDER_TO_OPENCV_AXES = np.diag([1.0, -1.0, -1.0, 1.0])


def wrap_azimuth(az: np.ndarray | float) -> np.ndarray:
    """Wrap degrees to [-180, 180)."""
    return np.remainder(np.asarray(az, dtype=np.float64) + 180.0, 360.0) - 180.0


def orbit_position(elevation: np.ndarray, azimuth: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """[C, 3] camera centres on the orbit (degrees in, world units out)."""
    el, az = np.deg2rad(np.asarray(elevation, float)), np.deg2rad(np.asarray(azimuth, float))
    d = np.asarray(distance, float)
    return np.stack([d * np.sin(az) * np.cos(el), -d * np.cos(az) * np.cos(el), d * np.sin(el)], axis=-1)


def angles_from_position(position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(elevation, azimuth, distance) [C] of camera centres [C, 3] relative to the origin."""
    p = np.asarray(position, dtype=np.float64).reshape(-1, 3)
    d = np.linalg.norm(p, axis=-1)
    el = np.rad2deg(np.arcsin(np.clip(p[:, 2] / np.maximum(d, 1e-12), -1.0, 1.0)))
    az = np.rad2deg(np.arctan2(p[:, 0], -p[:, 1]))
    return el, wrap_azimuth(az), d


def look_at(eye: np.ndarray, target: np.ndarray, right_hint: np.ndarray) -> np.ndarray:
    """World-to-camera [C, 4, 4] (OpenCV) for cameras at `eye` [C, 3] looking at `target` [C, 3], with the
    roll given by the horizontal `right_hint` [C, 3] (the orbit's tangent)."""
    eye, target, right_hint = (np.asarray(a, np.float64).reshape(-1, 3) for a in (eye, target, right_hint))
    forward = target - eye
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    right = right_hint - (right_hint * forward).sum(-1, keepdims=True) * forward
    right /= np.maximum(np.linalg.norm(right, axis=-1, keepdims=True), 1e-12)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward], axis=1)  # rows are the camera axes in world coordinates
    M = np.tile(np.eye(4), (eye.shape[0], 1, 1))
    M[:, :3, :3] = R
    M[:, :3, 3] = -(R @ eye[:, :, None])[:, :, 0]
    return M


def intrinsics(fovy_deg: np.ndarray, width: int, height: int) -> np.ndarray:
    """[C, 3, 3] pinhole intrinsics in pixels: square pixels, principal point at the image centre."""
    fovy = np.asarray(fovy_deg, dtype=np.float64).reshape(-1)
    fy = (height / 2.0) / np.tan(np.deg2rad(fovy) / 2.0)
    K = np.zeros((fovy.shape[0], 3, 3))
    K[:, 0, 0] = fy
    K[:, 1, 1] = fy
    K[:, 0, 2] = width / 2.0
    K[:, 1, 2] = height / 2.0
    K[:, 2, 2] = 1.0
    return K


def orbit_world_to_cam(elevation: np.ndarray, azimuth: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """[C, 4, 4] world-to-camera matrices of orbit cameras looking at the origin (no perturbation)."""
    az = wrap_azimuth(np.asarray(azimuth, float).reshape(-1))
    eye = orbit_position(np.asarray(elevation, float).reshape(-1), az, np.asarray(distance, float).reshape(-1))
    a = np.deg2rad(az)
    right_hint = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=-1)
    return look_at(eye, np.zeros_like(eye), right_hint)


def blender_to_opencv_cam_to_world(matrix_world: np.ndarray) -> np.ndarray:
    """Blender camera `matrix_world` [..., 4, 4] (x right, y up, looks down -z) to an OpenCV cam-to-world."""
    return np.asarray(matrix_world, dtype=np.float64) @ BLENDER_TO_OPENCV_AXES


def opencv_to_blender_cam_to_world(cam_to_world: np.ndarray) -> np.ndarray:
    """Inverse of `blender_to_opencv_cam_to_world` (the axis flip is its own inverse)."""
    return np.asarray(cam_to_world, dtype=np.float64) @ BLENDER_TO_OPENCV_AXES


def front_rotation(front_azimuth_deg: float) -> np.ndarray:
    """[3, 3] rotation about +Z mapping a world whose front is seen from azimuth `front_azimuth_deg` to the
    canonical one (front seen from azimuth 0)."""
    a = math.radians(-front_azimuth_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------- Blender side


def front_azimuth(camera_matrix_world: np.ndarray, center: np.ndarray) -> float:
    """Azimuth (degrees) of a Blender camera seen from `center` (where the asset will stand): the camera that
    defines the "front". Only the camera's position counts, not where it looks."""
    eye = np.asarray(camera_matrix_world, dtype=np.float64)[:3, 3] - np.asarray(center, dtype=np.float64)
    if np.hypot(eye[0], eye[1]) < 1e-9:
        raise ValueError("the camera stands straight above or below the target: no front direction")
    _, az, _ = angles_from_position(eye[None])
    return float(az[0])


def asset_rotation_z(front_azimuth_deg: float) -> float:
    """Rotation about +Z (radians) that turns a generated asset (front towards -Y) to face a camera standing at
    azimuth `front_azimuth_deg`: the inverse of `front_rotation`."""
    return math.radians(front_azimuth_deg)


def to_canonical(points: np.ndarray, center: np.ndarray, front_azimuth_deg: float, radius: float = 0.5
                 ) -> tuple[np.ndarray, float]:
    """World points [N, 3] -> the backend's canonical frame: centred on `center`, turned so the front camera
    sits at azimuth 0, scaled so the farthest point lies at `radius`. Returns (points [N, 3] float64, scale)
    where `scale` multiplies canonical lengths back to world lengths."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3) - np.asarray(center, dtype=np.float64)
    p = p @ front_rotation(front_azimuth_deg).T
    extent = float(np.linalg.norm(p, axis=1).max()) if len(p) else 0.0
    if extent < 1e-9:
        raise ValueError("the points have no extent")
    return p * (radius / extent), extent / radius


def from_canonical(points: np.ndarray, center: np.ndarray, front_azimuth_deg: float, scale: float = 1.0
                   ) -> np.ndarray:
    """Inverse of `to_canonical`: canonical points [N, 3] to world points [N, 3]."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3) * scale
    return p @ front_rotation(front_azimuth_deg) + np.asarray(center, dtype=np.float64)


def fovy_from_blender(lens_mm: float, sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str,
                      width: int, height: int) -> float:
    """Vertical field of view (degrees) of a Blender perspective camera rendering width x height pixels."""
    if sensor_fit == "AUTO":
        sensor_fit = "HORIZONTAL" if width >= height else "VERTICAL"
        sensor = sensor_width_mm
    else:
        sensor = sensor_width_mm if sensor_fit == "HORIZONTAL" else sensor_height_mm
    if sensor_fit == "HORIZONTAL":
        half_w = sensor / 2.0 / lens_mm
        half_h = half_w * height / width
    else:
        half_h = sensor / 2.0 / lens_mm
    return math.degrees(2.0 * math.atan(half_h))


# ---------------------------------------------------------------------------------------------- 3DGS values


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Opacity logits -> alpha."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def sh0_to_rgb(f_dc: np.ndarray) -> np.ndarray:
    """Degree-0 SH coefficients [N, 3] -> RGB in [0, 1] (0.5 + C0 f_dc, clamped)."""
    return np.clip(0.5 + 0.28209479177387814 * np.asarray(f_dc, dtype=np.float64), 0.0, 1.0)


def rgb_to_sh0(rgb: np.ndarray) -> np.ndarray:
    return (np.asarray(rgb, dtype=np.float64) - 0.5) / 0.28209479177387814
