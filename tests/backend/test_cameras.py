"""The one camera convention: +Z up, objects face -Y, azimuth 0 = front, OpenCV camera axes."""

import math

import torch

from backend.config import CameraConfig
from backend.core.cameras import (
    OrbitSampler,
    angles_from_position,
    blender_to_opencv_cam_to_world,
    front_rotation,
    opencv_to_blender_cam_to_world,
    orbit_cameras,
    orbit_position,
    wrap_azimuth,
)


def project(cams, points):
    """[C, P, 2] pixel coordinates and [C, P] depth of world points [P, 3]."""
    ph = torch.cat([points, torch.ones(points.shape[0], 1)], dim=1)
    cam = (cams.world_to_cam @ ph.T).transpose(1, 2)[..., :3]
    uv = (cams.K @ cam.transpose(1, 2)).transpose(1, 2)
    return uv[..., :2] / uv[..., 2:3], cam[..., 2]


def test_front_camera_sits_on_minus_y_and_sees_x_right_z_up():
    cams = orbit_cameras([0.0], [0.0], 2.0, 40.0, 64)
    assert torch.allclose(cams.positions, torch.tensor([[0.0, -2.0, 0.0]]), atol=1e-6)
    uv, depth = project(cams, torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.3]]))
    assert torch.allclose(uv[0, 0], torch.tensor([32.0, 32.0]), atol=1e-4)  # origin at the image centre
    assert uv[0, 1, 0] > 32 and abs(uv[0, 1, 1] - 32) < 1e-4  # +X appears to the right
    assert uv[0, 2, 1] < 32 and abs(uv[0, 2, 0] - 32) < 1e-4  # +Z appears up (smaller row)
    assert torch.allclose(depth[0, 0], torch.tensor(2.0))


def test_azimuth_90_puts_camera_on_plus_x_and_top_view_is_defined():
    cams = orbit_cameras([0.0, 89.9, -89.9], [90.0, 30.0, -120.0], 3.0, 50.0, 32)
    assert torch.allclose(cams.positions[0], torch.tensor([3.0, 0.0, 0.0]), atol=1e-5)
    assert torch.isfinite(cams.world_to_cam).all()
    R = cams.world_to_cam[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(3), atol=1e-5)  # proper rotations


def test_angles_round_trip_and_wrap():
    el = torch.tensor([-30.0, 0.0, 15.0, 60.0])
    az = torch.tensor([-170.0, 0.0, 90.0, 179.0])
    d = torch.tensor([1.0, 2.0, 3.5, 1.2])
    e2, a2, d2 = angles_from_position(orbit_position(el, az, d))
    assert torch.allclose(e2, el, atol=1e-4) and torch.allclose(a2, az, atol=1e-4) and torch.allclose(d2, d)
    assert torch.allclose(wrap_azimuth(torch.tensor([180.0, -180.0, 190.0, 360.0])),
                          torch.tensor([-180.0, -180.0, -170.0, 0.0]))


def test_intrinsics_match_fov_and_resize():
    cams = orbit_cameras([10.0], [20.0], 2.0, 60.0, 100, 50)
    fy = 25.0 / math.tan(math.radians(30.0))
    assert torch.allclose(cams.K[0], torch.tensor([[fy, 0, 50.0], [0, fy, 25.0], [0, 0, 1.0]]))
    small = cams.resized(50, 25)
    assert torch.allclose(small.K[0, :2], cams.K[0, :2] / 2)
    o, d = cams.pixel_rays()
    assert o.shape == (1, 50, 100, 3) and torch.allclose(d.norm(dim=-1), torch.ones(1, 50, 100), atol=1e-5)


def test_pixel_rays_project_back_to_their_pixels():
    cams = orbit_cameras([25.0, -5.0], [40.0, -100.0], [1.7, 2.3], [45.0, 55.0], 16, 12)
    o, d = cams.pixel_rays()
    pts = (o + 0.8 * d).reshape(2, -1, 3)
    for c in range(2):
        uv, _ = project(cams[c], pts[c])
        v, u = torch.meshgrid(torch.arange(12) + 0.5, torch.arange(16) + 0.5, indexing="ij")
        assert torch.allclose(uv[0], torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3)


def test_blender_conversion_round_trip_and_axes():
    # A Blender camera at -Y looking at the origin: rotation of 90 degrees about X.
    mw = torch.eye(4)
    mw[:3, :3] = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    mw[:3, 3] = torch.tensor([0.0, -2.0, 0.0])
    c2w = blender_to_opencv_cam_to_world(mw)
    ours = orbit_cameras([0.0], [0.0], 2.0, 40.0, 8).cam_to_world[0]
    assert torch.allclose(c2w, ours, atol=1e-5)
    assert torch.allclose(opencv_to_blender_cam_to_world(c2w), mw, atol=1e-6)


def test_front_rotation_brings_a_chosen_front_to_azimuth_zero():
    R = front_rotation(90.0)  # the user's front camera stands on +X
    p = R @ torch.tensor([3.0, 0.0, 0.0])
    assert torch.allclose(p, torch.tensor([0.0, -3.0, 0.0]), atol=1e-6)


def test_sampler_respects_ranges_and_is_deterministic():
    cfg = CameraConfig(elevation_range=[-10.0, 45.0], azimuth_range=[-180.0, 180.0], distance_range=[1.5, 2.0],
                       fovy_range=[40.0, 70.0], views=4, resolution=32)
    a = OrbitSampler(cfg, torch.Generator().manual_seed(3)).sample(0, 100)
    b = OrbitSampler(cfg, torch.Generator().manual_seed(3)).sample(0, 100)
    assert torch.equal(a.world_to_cam, b.world_to_cam)
    s = OrbitSampler(cfg, torch.Generator().manual_seed(4))
    for _ in range(20):
        c = s.sample(0, 100)
        assert ((c.elevation >= -10) & (c.elevation <= 45)).all()
        assert ((c.distance >= 1.5) & (c.distance <= 2.0)).all() and ((c.fovy >= 40) & (c.fovy <= 70)).all()
        # stratified: one azimuth per quarter of the circle
        quarters = ((c.azimuth + 180) // 90).long().sort().values
        assert quarters.tolist() == [0, 1, 2, 3]
        assert c.width == 32


def test_sampler_switches_resolution():
    cfg = CameraConfig(resolution=64, resolution_final=128, resolution_switch=0.5, views=1)
    s = OrbitSampler(cfg, torch.Generator().manual_seed(0))
    assert s.sample(10, 100).width == 64 and s.sample(60, 100).width == 128


def test_opengl_clip_space_round_trip():
    from backend.core.cameras import clip_to_pixels, opencv_to_clip

    cams = orbit_cameras([10.0, 35.0], [20.0, -140.0], [2.0, 1.6], [40.0, 55.0], 48, 32)
    pts = torch.randn(100, 3) * 0.4
    clip = torch.einsum("cij,vj->cvi", opencv_to_clip(cams, 0.1, 50.0), torch.cat([pts, torch.ones(100, 1)], 1))
    uv, z = clip_to_pixels(clip, cams.width, cams.height)
    cam = torch.einsum("cij,vj->cvi", cams.world_to_cam[:, :3, :3], pts) + cams.world_to_cam[:, None, :3, 3]
    K = cams.K
    u = K[:, 0, 0, None] * cam[..., 0] / cam[..., 2] + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * cam[..., 1] / cam[..., 2] + K[:, 1, 2, None]
    assert torch.allclose(uv[..., 0], u, atol=1e-3) and torch.allclose(uv[..., 1], v, atol=1e-3)
    assert torch.allclose(z, cam[..., 2], atol=1e-5)
    # NDC depth: -1 at the near plane, +1 at the far plane; row 0 of the image is NDC y = -1.
    near = torch.tensor([[0.0, 0.0, 0.1, 1.0], [0.0, 0.0, 50.0, 1.0]])
    P = opencv_to_clip(cams, 0.1, 50.0) @ torch.linalg.inv(cams.world_to_cam)
    ndc = torch.einsum("cij,vj->cvi", P, near)
    assert torch.allclose(ndc[..., 2] / ndc[..., 3], torch.tensor([-1.0, 1.0]).expand(2, 2), atol=1e-4)
    top = torch.tensor([[0.0, -1.0, 1.0, 1.0]])  # camera-space point above the axis (y down): image top
    ndc_top = torch.einsum("cij,vj->cvi", P, top)
    assert (ndc_top[..., 1] / ndc_top[..., 3] < 0).all()
