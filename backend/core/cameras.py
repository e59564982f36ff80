"""Cameras: the one convention of the whole backend, and the orbit sampler.

The convention (docs/CAMERAS.md has the same page with a picture in words):

- World: right-handed, +Z up, like Blender. Objects face -Y: their "front" is seen by a camera standing on
  the -Y axis (Blender's Front view, numpad 1).
- Angles are degrees. Azimuth 0 is the front; it grows counter-clockwise seen from above, so azimuth +90
  puts the camera on +X. Azimuths are wrapped to [-180, 180). Elevation is the angle above the XY plane.
  Camera position: d * (sin(az) cos(el), -cos(az) cos(el), sin(el)).
- Camera frame: OpenCV. +x right, +y down, +z forward (looking direction). `world_to_cam` maps homogeneous
  world points to camera coordinates; `K` holds intrinsics in pixels.
- Pixels: row 0 is the top of the image; pixel (u, v) covers [u, u+1) x [v, v+1), its centre is
  (u + 0.5, v + 0.5). The principal point of an orbit camera is (W/2, H/2).

Every conversion to another convention (Blender's camera, OpenGL clip space) lives in this module and in its
numpy twin `addon/client/convert.py`; nothing else flips an axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Blender cameras look down their local -Z with +Y up; OpenCV looks down +Z with +Y down.
_BLENDER_TO_OPENCV_AXES = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class Cameras:
    """A batch of C pinhole cameras sharing one image size.

    Shapes: world_to_cam [C, 4, 4], K [C, 3, 3], elevation/azimuth/distance/fovy [C] (degrees and world
    units). The angles are the nominal orbit values used for view-dependent prompting; with perturbations the
    matrices may differ slightly from them.
    """

    world_to_cam: Tensor
    K: Tensor
    width: int
    height: int
    elevation: Tensor
    azimuth: Tensor
    distance: Tensor
    fovy: Tensor

    def __post_init__(self) -> None:
        c = self.world_to_cam.shape[0]
        assert self.world_to_cam.shape == (c, 4, 4), f"world_to_cam {tuple(self.world_to_cam.shape)}"
        assert self.K.shape == (c, 3, 3), f"K {tuple(self.K.shape)}"
        for name in ("elevation", "azimuth", "distance", "fovy"):
            v = getattr(self, name)
            assert v.shape == (c,), f"{name} {tuple(v.shape)}, expected ({c},)"

    def __len__(self) -> int:
        return self.world_to_cam.shape[0]

    @property
    def device(self) -> torch.device:
        return self.world_to_cam.device

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(
            self.world_to_cam.to(device), self.K.to(device), self.width, self.height,
            self.elevation.to(device), self.azimuth.to(device), self.distance.to(device), self.fovy.to(device),
        )

    def __getitem__(self, idx: int | slice | Tensor) -> Cameras:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Cameras(
            self.world_to_cam[idx], self.K[idx], self.width, self.height,
            self.elevation[idx], self.azimuth[idx], self.distance[idx], self.fovy[idx],
        )

    @staticmethod
    def cat(items: list[Cameras]) -> Cameras:
        w, h = items[0].width, items[0].height
        assert all(c.width == w and c.height == h for c in items), "cameras of different image sizes"
        return Cameras(
            torch.cat([c.world_to_cam for c in items]), torch.cat([c.K for c in items]), w, h,
            torch.cat([c.elevation for c in items]), torch.cat([c.azimuth for c in items]),
            torch.cat([c.distance for c in items]), torch.cat([c.fovy for c in items]),
        )

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras rendering a different image size (intrinsics scaled)."""
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return Cameras(self.world_to_cam, K, width, height, self.elevation, self.azimuth, self.distance, self.fovy)

    @property
    def cam_to_world(self) -> Tensor:
        """[C, 4, 4] camera-to-world matrices (OpenCV axes)."""
        return torch.linalg.inv(self.world_to_cam)

    @property
    def positions(self) -> Tensor:
        """[C, 3] camera centres in world coordinates."""
        R = self.world_to_cam[:, :3, :3]
        t = self.world_to_cam[:, :3, 3]
        return -(R.transpose(1, 2) @ t[:, :, None])[:, :, 0]

    def pixel_rays(self) -> tuple[Tensor, Tensor]:
        """Ray origins and unit directions through pixel centres: both [C, H, W, 3], world frame."""
        dev, dt = self.K.device, self.K.dtype
        v, u = torch.meshgrid(
            torch.arange(self.height, device=dev, dtype=dt) + 0.5,
            torch.arange(self.width, device=dev, dtype=dt) + 0.5,
            indexing="ij",
        )
        fx, fy = self.K[:, 0, 0, None, None], self.K[:, 1, 1, None, None]
        cx, cy = self.K[:, 0, 2, None, None], self.K[:, 1, 2, None, None]
        d_cam = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u).expand_as(fx * u)], dim=-1)
        R_c2w = self.world_to_cam[:, :3, :3].transpose(1, 2)
        d = torch.einsum("cij,chwj->chwi", R_c2w, d_cam)
        d = d / d.norm(dim=-1, keepdim=True)
        o = self.positions[:, None, None, :].expand_as(d)
        return o, d


def wrap_azimuth(az: Tensor) -> Tensor:
    """Wrap degrees to [-180, 180)."""
    return torch.remainder(az + 180.0, 360.0) - 180.0


def orbit_position(elevation: Tensor, azimuth: Tensor, distance: Tensor) -> Tensor:
    """[C, 3] camera centres on the orbit (degrees in, world units out)."""
    el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    return torch.stack(
        [distance * torch.sin(az) * torch.cos(el), -distance * torch.cos(az) * torch.cos(el), distance * torch.sin(el)],
        dim=-1,
    )


def look_at(eye: Tensor, target: Tensor, right_hint: Tensor) -> Tensor:
    """World-to-camera [C, 4, 4] (OpenCV) for cameras at `eye` [C, 3] looking at `target` [C, 3].

    `right_hint` [C, 3] is a horizontal vector that gives the roll. Using the orbit's tangent
    (cos az, sin az, 0) instead of an "up" vector keeps views straight above and below well defined.
    """
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = right_hint - (right_hint * forward).sum(-1, keepdim=True) * forward
    right = right / right.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    down = torch.cross(forward, right, dim=-1)
    R = torch.stack([right, down, forward], dim=1)  # rows are the camera axes in world coordinates
    M = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    M[:, :3, :3] = R
    M[:, :3, 3] = -(R @ eye[:, :, None])[:, :, 0]
    return M


def intrinsics(fovy_deg: Tensor, width: int, height: int) -> Tensor:
    """[C, 3, 3] pinhole intrinsics in pixels with square pixels and a centred principal point."""
    fy = (height / 2.0) / torch.tan(torch.deg2rad(fovy_deg) / 2.0)
    K = torch.zeros(fovy_deg.shape[0], 3, 3, dtype=fovy_deg.dtype, device=fovy_deg.device)
    K[:, 0, 0] = fy
    K[:, 1, 1] = fy
    K[:, 0, 2] = width / 2.0
    K[:, 1, 2] = height / 2.0
    K[:, 2, 2] = 1.0
    return K


def orbit_cameras(
    elevation: Tensor | list[float],
    azimuth: Tensor | list[float],
    distance: Tensor | list[float] | float,
    fovy: Tensor | list[float] | float,
    width: int,
    height: int | None = None,
    *,
    eye_offset: Tensor | None = None,
    target: Tensor | None = None,
) -> Cameras:
    """Cameras on the orbit, looking at `target` (default: the origin). Angles in degrees.

    `eye_offset` [C, 3] and `target` [C, 3] are the optional perturbations; the nominal angles are kept for
    prompting.
    """
    height = width if height is None else height
    el = torch.as_tensor(elevation, dtype=torch.float32).reshape(-1)
    az = wrap_azimuth(torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1))
    c = max(el.shape[0], az.shape[0])
    el, az = el.expand(c).clone(), az.expand(c).clone()
    dist = torch.as_tensor(distance, dtype=torch.float32).reshape(-1).expand(c).clone()
    fov = torch.as_tensor(fovy, dtype=torch.float32).reshape(-1).expand(c).clone()
    eye = orbit_position(el, az, dist)
    if eye_offset is not None:
        eye = eye + eye_offset
    tgt = torch.zeros_like(eye) if target is None else target
    a = torch.deg2rad(az)
    right_hint = torch.stack([torch.cos(a), torch.sin(a), torch.zeros_like(a)], dim=-1)
    w2c = look_at(eye, tgt, right_hint)
    return Cameras(w2c, intrinsics(fov, width, height), width, height, el, az, dist, fov)


def blender_to_opencv_cam_to_world(matrix_world: Tensor) -> Tensor:
    """Blender camera `matrix_world` [..., 4, 4] (x right, y up, looks down -z) to an OpenCV cam-to-world."""
    return matrix_world @ _BLENDER_TO_OPENCV_AXES.to(matrix_world)


def opencv_to_blender_cam_to_world(cam_to_world: Tensor) -> Tensor:
    """Inverse of `blender_to_opencv_cam_to_world` (the axis flip is its own inverse)."""
    return cam_to_world @ _BLENDER_TO_OPENCV_AXES.to(cam_to_world)


def opencv_to_clip(cams: Cameras, near: float = 0.01, far: float = 100.0) -> Tensor:
    """[C, 4, 4] world -> OpenGL clip space for rasterisers that take clip coordinates (nvdiffrast).

    clip = P @ world_to_cam @ [x, y, z, 1] with, for OpenCV camera coordinates (x right, y down, z forward),
        x_c = (2 fx / W) x + (2 cx / W - 1) z,   y_c = (2 fy / H) y + (2 cy / H - 1) z,
        z_c = ((f + n) z - 2 f n) / (f - n),      w_c = z,
    so NDC x = 2 u / W - 1 and y = 2 v / H - 1 for the pixel coordinates (u, v) of `K`, and depth -1 at the near
    plane, +1 at the far one. nvdiffrast's image row 0 is NDC y = -1, which is therefore pixel row 0 (the
    top), as everywhere in this project: no image flip is needed.
    """
    C = len(cams)
    K = cams.K
    P = torch.zeros(C, 4, 4, dtype=K.dtype, device=K.device)
    P[:, 0, 0] = 2 * K[:, 0, 0] / cams.width
    P[:, 0, 2] = 2 * K[:, 0, 2] / cams.width - 1
    P[:, 1, 1] = 2 * K[:, 1, 1] / cams.height
    P[:, 1, 2] = 2 * K[:, 1, 2] / cams.height - 1
    P[:, 2, 2] = (far + near) / (far - near)
    P[:, 2, 3] = -2 * far * near / (far - near)
    P[:, 3, 2] = 1.0
    return P @ cams.world_to_cam.to(K.dtype)


def clip_to_pixels(clip: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (u, v) [...] and camera depth z [...] of clip-space points [..., 4] (the inverse map
    of `opencv_to_clip` for points in front of the camera)."""
    w = clip[..., 3]
    u = (clip[..., 0] / w + 1) * width / 2
    v = (clip[..., 1] / w + 1) * height / 2
    return torch.stack([u, v], dim=-1), w


def angles_from_position(position: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(elevation, azimuth, distance) [C] of camera centres [C, 3] relative to the origin (inverse of
    `orbit_position`)."""
    d = position.norm(dim=-1)
    el = torch.rad2deg(torch.asin((position[:, 2] / d.clamp_min(1e-12)).clamp(-1, 1)))
    az = torch.rad2deg(torch.atan2(position[:, 0], -position[:, 1]))
    return el, wrap_azimuth(az), d


def front_rotation(front_azimuth_deg: float) -> Tensor:
    """[3, 3] rotation about +Z that maps a world whose front is seen from azimuth `front_azimuth_deg` to the
    canonical one (front seen from azimuth 0). Used when a Blender camera defines the front."""
    a = math.radians(-front_azimuth_deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class OrbitSampler:
    """Random orbit cameras for training (docs/METHODS.md §4), from a `config.CameraConfig`.

    Elevation: uniform in angle, uniform on the sphere band (arcsin of a uniform over [sin lo, sin hi]), or
    a 50:50 mix per view (threestudio). Azimuth: stratified over the step's views with jitter, or uniform.
    Distance and field of view: uniform in their ranges. Randomness comes only from `generator`.
    """

    def __init__(self, cfg, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.gen = generator

    def resolution_at(self, step: int, total_steps: int) -> int:
        c = self.cfg
        if c.resolution_final and step >= round(c.resolution_switch * total_steps):
            return c.resolution_final
        return c.resolution

    def _uniform(self, n: int, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.gen)

    def sample(self, step: int, total_steps: int, n: int | None = None) -> Cameras:
        c = self.cfg
        n = c.views if n is None else n
        res = self.resolution_at(step, total_steps)
        lo, hi = c.elevation_range
        el_angle = self._uniform(n, lo, hi)
        s = self._uniform(n, math.sin(math.radians(lo)), math.sin(math.radians(hi)))
        el_sphere = torch.rad2deg(torch.asin(s))
        if c.elevation_sampling == "uniform_angle":
            el = el_angle
        elif c.elevation_sampling == "uniform_sphere":
            el = el_sphere
        else:
            el = torch.where(torch.rand(n, generator=self.gen) < 0.5, el_angle, el_sphere)
        a_lo, a_hi = c.azimuth_range
        if getattr(c, "view_azimuth_step", 0.0) > 0:  # views at fixed offsets from a random first one (Real3D)
            az = self._uniform(1, a_lo, a_hi) + torch.arange(n) * c.view_azimuth_step
        elif c.stratified_azimuth:
            az = (torch.rand(n, generator=self.gen) + torch.arange(n)) / n * (a_hi - a_lo) + a_lo
        else:
            az = self._uniform(n, a_lo, a_hi)
        dist = self._uniform(n, *c.distance_range)
        fov = self._uniform(n, *c.fovy_range)
        eye_offset = target = None
        if c.position_jitter > 0:
            eye_offset = (2 * torch.rand(n, 3, generator=self.gen) - 1) * c.position_jitter
        if c.center_jitter > 0:
            target = torch.randn(n, 3, generator=self.gen) * c.center_jitter
        return orbit_cameras(el, az, dist, fov, res, eye_offset=eye_offset, target=target)

    def ring(self, n: int, elevation: float, resolution: int, azimuth_start: float = 0.0) -> Cameras:
        """n views evenly spaced in azimuth at the middle distance and field of view (previews, turntables)."""
        c = self.cfg
        az = azimuth_start + torch.arange(n, dtype=torch.float32) * 360.0 / n
        dist = 0.5 * (c.distance_range[0] + c.distance_range[1])
        fov = 0.5 * (c.fovy_range[0] + c.fovy_range[1])
        return orbit_cameras(torch.full((n,), float(elevation)), az, dist, fov, resolution)
