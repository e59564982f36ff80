"""addon/client/convert.py is the numpy twin of backend/core/cameras.py: same numbers, and round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from addon.client import convert
from backend.core import cameras

RNG = np.random.default_rng(7)
EL = RNG.uniform(-80, 80, 64)
AZ = RNG.uniform(-400, 400, 64)
DIST = RNG.uniform(0.5, 5.0, 64)


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def test_orbit_position_and_angles_match_the_backend():
    ours = convert.orbit_position(EL, AZ, DIST)
    theirs = cameras.orbit_position(_t(EL), _t(AZ), _t(DIST)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    el, az, d = convert.angles_from_position(ours)
    tel, taz, td = (x.numpy() for x in cameras.angles_from_position(_t(ours)))
    np.testing.assert_allclose(el, tel, atol=1e-9)
    np.testing.assert_allclose(az, taz, atol=1e-9)
    np.testing.assert_allclose(d, td, atol=1e-9)
    # round trip: angles -> position -> angles
    np.testing.assert_allclose(el, EL, atol=1e-7)
    np.testing.assert_allclose(az, convert.wrap_azimuth(AZ), atol=1e-7)
    np.testing.assert_allclose(d, DIST, atol=1e-9)


def test_orbit_cameras_and_intrinsics_match_the_backend():
    w2c = convert.orbit_world_to_cam(EL, AZ, DIST)
    theirs = cameras.orbit_cameras(torch.tensor(EL), torch.tensor(AZ), torch.tensor(DIST), 50.0, 64)
    np.testing.assert_allclose(w2c, theirs.world_to_cam.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(convert.intrinsics(np.full(64, 50.0), 64, 64), theirs.K.double().numpy(), atol=1e-4)
    assert convert.intrinsics([90.0], 100, 50)[0, 1, 1] == pytest.approx(25.0)


def test_blender_opencv_flip_matches_and_round_trips():
    M = np.eye(4)
    M[:3, :3] = _random_rotation()
    M[:3, 3] = RNG.normal(size=3)
    ours = convert.blender_to_opencv_cam_to_world(M)
    np.testing.assert_allclose(ours, cameras.blender_to_opencv_cam_to_world(_t(M)).numpy(), atol=1e-12)
    np.testing.assert_allclose(convert.opencv_to_blender_cam_to_world(ours), M, atol=1e-12)
    # a Blender camera looks down its -Z: that is OpenCV's +Z (forward)
    np.testing.assert_allclose(ours[:3, 2], -M[:3, 2], atol=1e-12)


@pytest.mark.parametrize("az", [0.0, 37.0, -120.0, 179.0])
def test_front_rotation_matches_and_brings_the_camera_to_azimuth_zero(az):
    np.testing.assert_allclose(convert.front_rotation(az), cameras.front_rotation(az).double().numpy(), atol=1e-6)
    cam = np.eye(4)
    cam[:3, 3] = convert.orbit_position(20.0, az, 3.0)
    assert convert.front_azimuth(cam, np.zeros(3)) == pytest.approx(az)
    canonical = convert.front_rotation(az) @ cam[:3, 3]
    _, caz, _ = convert.angles_from_position(canonical[None])
    assert caz[0] == pytest.approx(0.0, abs=1e-9)
    # the asset's rotation undoes front_rotation: the canonical front (-Y) turns towards the camera
    rz = convert.asset_rotation_z(az)
    rot = np.array([[math.cos(rz), -math.sin(rz)], [math.sin(rz), math.cos(rz)]])
    front = rot @ np.array([0.0, -1.0])
    eye = cam[:2, 3] / np.linalg.norm(cam[:2, 3])
    np.testing.assert_allclose(front, eye, atol=1e-9)


def test_canonical_round_trip_and_scale():
    pts = RNG.normal(size=(500, 3)) * 3.0 + [10.0, -2.0, 1.0]
    center = np.array([10.0, -2.0, 1.0])
    can, scale = convert.to_canonical(pts, center, 63.0)
    assert np.linalg.norm(can, axis=1).max() == pytest.approx(0.5)
    np.testing.assert_allclose(convert.from_canonical(can, center, 63.0, scale), pts, atol=1e-9)
    with pytest.raises(ValueError, match="no extent"):
        convert.to_canonical(np.zeros((3, 3)), np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="straight above"):
        convert.front_azimuth(np.eye(4), np.zeros(3))


def test_fovy_from_blender_lens():
    # 50 mm on a 36 mm sensor, square image: fovy = 2 atan(18 / 50)
    assert convert.fovy_from_blender(50, 36, 24, "AUTO", 512, 512) == pytest.approx(math.degrees(2 * math.atan(0.36)))
    # landscape, horizontal fit: the vertical half-angle shrinks with the aspect
    assert convert.fovy_from_blender(50, 36, 24, "HORIZONTAL", 800, 400) == pytest.approx(
        math.degrees(2 * math.atan(0.18)))
    assert convert.fovy_from_blender(50, 36, 24, "VERTICAL", 800, 400) == pytest.approx(
        math.degrees(2 * math.atan(0.24)))


def test_3dgs_activations():
    assert convert.sigmoid(0.0) == pytest.approx(0.5)
    np.testing.assert_allclose(convert.sh0_to_rgb(convert.rgb_to_sh0([[0.2, 0.5, 0.9]])), [[0.2, 0.5, 0.9]])
    assert convert.sh0_to_rgb([[100.0, -100.0, 0.0]]).tolist() == [[1.0, 0.0, 0.5]]


def _random_rotation() -> np.ndarray:
    q, _ = np.linalg.qr(RNG.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))
