"""Evaluation of an asset against the reference library (`distillery evaluate`), and the library's contact
sheet.

The asset is rendered at 24 reference cameras (elevations 15 and 30, azimuths every 30 degrees, 64x64, white
background) and compared with the references of its prompt at the same cameras:
- psnr: mean over views of the PSNR (peak 1.0) of the render against the reference;
- mask_iou: intersection over union of alpha > 0.5, pooled over all views;
- view_accuracy: share of views whose best-matching reference (lowest MSE among ALL 36 azimuths of the
  object's references at that elevation) lies within 30 degrees of the true azimuth. A Janus asset (a face on
  every side) scores low here even when its PSNR looks fine, and so does a consistent object that is merely
  turned about the up axis.

Rotation-invariant figures (a text prior does not fix which way an object faces):
- alignment_azimuth: the turn delta (a multiple of 10 degrees) that best maps the asset onto the references:
  the render at camera azimuth a is compared with the reference at a + delta, and delta minimises the summed
  MSE over the 24 views. Azimuths "in the object's frame" below are a + delta.
- aligned_view_accuracy: view_accuracy measured in the object's frame (best match within 30 degrees of
  a + delta): about 1 for a correct object however it is turned.
- multi_face_rate: among the views of the back half (more than 90 degrees from the front in the
  object's frame), the share whose best-matching reference is a front view (within 30 degrees of azimuth 0):
  the multi-face (Janus) artefact. 0 for a correct object.
- diversity (over several assets of one prompt, `diversity`): the mean over pairs of the RMS pixel difference
  of their aligned renders (each rendered in its own object frame at the 24 views); 0 for identical assets.
- detail (`detail=True`): psnr_128 is the aligned PSNR at 128 px against the mesh rendered at 128 px;
  hf_energy_128 the mean squared response of a 3x3 Laplacian on the grey render (high-frequency energy), and
  hf_energy_ratio that over the reference's (1 = as much fine structure as the object, < 1 blurrier).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from backend.core.cameras import Cameras, wrap_azimuth
from backend.core.image_ops import composite
from backend.priors.reference.cache import (
    NUM_AZIMUTHS,
    REFERENCE_AZIMUTH_STEP,
    REFERENCE_ELEVATIONS,
    load_references,
    reference_cameras,
)
from backend.priors.reference.library import OBJECTS, Mesh, build
from backend.priors.reference.prompts import parse_prompt
from backend.priors.reference.render import render_mesh

EVAL_ELEVATIONS = (15.0, 30.0)
EVAL_AZIMUTH_STEP = 30.0
VIEW_TOLERANCE = 30.0  # degrees
NOT_FRONT = 90.0  # degrees: views of the back half (beyond this from the front) should never show the front
PSNR_CAP = 100.0  # dB, for pixel-identical views
DETAIL_RESOLUTION = 128

RenderFn = Callable[[Cameras, Tensor], tuple[Tensor, Tensor]]


def evaluation_angles() -> tuple[Tensor, Tensor]:
    """(elevation, azimuth) [24] of the evaluation views, wrapped to [-180, 180)."""
    n_az = round(360.0 / EVAL_AZIMUTH_STEP)
    el = torch.tensor(EVAL_ELEVATIONS).repeat_interleave(n_az)
    az = torch.arange(n_az, dtype=torch.float32) * EVAL_AZIMUTH_STEP
    az = wrap_azimuth(az.repeat(len(EVAL_ELEVATIONS)))
    return el, az


def mesh_render_fn(mesh: Mesh) -> RenderFn:
    """A render_fn for a library-style mesh (tests, baselines): straight rgb over the background, alpha."""
    def render(cams: Cameras, background: Tensor) -> tuple[Tensor, Tensor]:
        rgb, alpha = render_mesh(mesh, cams)
        return composite(rgb, alpha, background), alpha
    return render


def _psnr(mse: float) -> float:
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else -10.0 * float(np.log10(mse))


def evaluate(render_fn: RenderFn, prompt: str, detail: bool = False) -> dict[str, Any]:
    """Scores of an asset rendered by `render_fn(cams, background [C, 3]) -> (rgb [C, H, W, 3] in [0, 1] over
    the background, alpha [C, H, W, 1])` against the references of `prompt` (see the module docstring).
    `detail` adds the 128 px figures (psnr_128, hf_energy_128, hf_energy_ratio; 24 more renders of the asset
    and of the object's mesh)."""
    obj, colour = parse_prompt(prompt)
    refs = load_references(obj, colour)
    el, az = evaluation_angles()
    cams = reference_cameras(el, az)
    C = len(cams)
    white = torch.ones(C, 3)
    with torch.no_grad():
        rgb, alpha = render_fn(cams, white)
    res = cams.height
    assert rgb.shape == (C, res, res, 3), f"render_fn rgb {tuple(rgb.shape)}, expected [C, H, W, 3]"
    assert alpha.shape == (C, res, res, 1), f"render_fn alpha {tuple(alpha.shape)}, expected [C, H, W, 1]"
    rgb, alpha = rgb.detach().float().cpu(), alpha.detach().float().cpu()

    ref_rgb = refs.composited()  # [N, H, W, 3] over white
    # mse[v, k]: render v against the reference at view v's elevation and azimuth index k (every 10 degrees).
    rows = torch.tensor([REFERENCE_ELEVATIONS.index(float(e)) * NUM_AZIMUTHS for e in el.tolist()])
    rings = ref_rgb[rows[:, None] + torch.arange(NUM_AZIMUTHS)[None]]  # [C, 36, H, W, 3]
    mse = ((rings - rgb[:, None]) ** 2).mean(dim=(2, 3, 4))  # [C, 36]
    ring_az = refs.azimuth[:NUM_AZIMUTHS]  # [36], the same at every elevation
    best = mse.argmin(dim=1)  # [C]
    best_az = ring_az[best]
    true_k = torch.tensor([round((a % 360.0) / REFERENCE_AZIMUTH_STEP) % NUM_AZIMUTHS for a in az.tolist()])
    # The turn: delta = shift * 10 degrees minimising sum_v mse[v, true_k + shift].
    cost = torch.stack([mse[torch.arange(C), (true_k + k) % NUM_AZIMUTHS].sum() for k in range(NUM_AZIMUTHS)])
    shift = int(cost.argmin())
    delta = float(wrap_azimuth(torch.tensor(shift * REFERENCE_AZIMUTH_STEP)))
    frame_az = wrap_azimuth(az + delta)  # [C] each view's azimuth in the object's frame

    per_view = []
    inter = union = 0.0
    for v in range(C):
        e, a = float(el[v]), float(az[v])
        true = int(rows[v]) + int(true_k[v])
        m, r = alpha[v, ..., 0] > 0.5, refs.alpha[true, ..., 0] > 0.5
        i, u = float((m & r).sum()), float((m | r).sum())
        inter, union = inter + i, union + u
        b = float(best_az[v])
        err = abs(float(wrap_azimuth(torch.tensor(b - a))))
        aligned_err = abs(float(wrap_azimuth(torch.tensor(b - float(frame_az[v])))))
        not_front = abs(float(frame_az[v])) > NOT_FRONT
        per_view.append({"elevation": e, "azimuth": a, "psnr": _psnr(float(mse[v, true_k[v]])),
                         "mask_iou": i / u if u > 0 else 1.0, "best_azimuth": b, "correct": err <= VIEW_TOLERANCE,
                         "aligned_correct": aligned_err <= VIEW_TOLERANCE, "not_front": not_front,
                         "second_face": not_front and abs(b) <= VIEW_TOLERANCE})
    off_front = [p for p in per_view if p["not_front"]]
    out = {
        "prompt": prompt,
        "psnr": float(np.mean([p["psnr"] for p in per_view])),
        "mask_iou": inter / union if union > 0 else 1.0,
        "view_accuracy": float(np.mean([p["correct"] for p in per_view])),
        "aligned_view_accuracy": float(np.mean([p["aligned_correct"] for p in per_view])),
        "alignment_azimuth": delta,
        "multi_face_rate": float(np.mean([p["second_face"] for p in off_front])) if off_front else 0.0,
        "per_view": per_view,
    }
    if detail:
        out.update(detail_figures(render_fn, obj, colour, delta))
    return out


def aligned_cameras(delta: float, resolution: int = 64) -> Cameras:
    """The 24 evaluation cameras turned so that an asset with alignment_azimuth `delta` is seen from the
    object-frame azimuths 0, 30, ...: camera azimuth a - delta shows object-frame azimuth a."""
    el, az = evaluation_angles()
    cams = reference_cameras(el, wrap_azimuth(az - delta))
    return cams if resolution == cams.height else cams.resized(resolution, resolution)


def laplacian_energy(rgb: Tensor) -> Tensor:
    """Mean squared 3x3 Laplacian response of the grey image, per view: [C, H, W, 3] -> [C]."""
    grey = rgb.mean(-1, keepdim=True).permute(0, 3, 1, 2)  # [C, 1, H, W]
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return (torch.nn.functional.conv2d(grey, k) ** 2).mean(dim=(1, 2, 3))


_MESH_128: dict[tuple[str, str | None], Tensor] = {}


def detail_figures(render_fn: RenderFn, obj: str, colour: str | None, delta: float) -> dict[str, float]:
    """psnr_128, hf_energy_128 and hf_energy_ratio (module docstring) of an asset in its own frame."""
    key = (obj, colour)
    if key not in _MESH_128:  # the object's mesh at 128 px, the same for every asset of a prompt
        rgb_ref, a_ref = render_mesh(build(obj, colour), aligned_cameras(0.0, DETAIL_RESOLUTION))
        _MESH_128[key] = composite(rgb_ref, a_ref, None)
    ref = _MESH_128[key]
    cams = aligned_cameras(delta, DETAIL_RESOLUTION)
    with torch.no_grad():
        rgb, _ = render_fn(cams, torch.ones(len(cams), 3))
    rgb = rgb.detach().float().cpu().clamp(0, 1)
    mse = ((rgb - ref) ** 2).mean(dim=(1, 2, 3))
    hf, hf_ref = laplacian_energy(rgb), laplacian_energy(ref)
    return {"psnr_128": float(np.mean([_psnr(float(m)) for m in mse])), "hf_energy_128": float(hf.mean()),
            "hf_energy_ratio": float(hf.mean() / hf_ref.mean().clamp_min(1e-12))}


def aligned_renders(render_fn: RenderFn, delta: float) -> Tensor:
    """[24, 64, 64, 3] renders over white of an asset in its own frame (alignment_azimuth `delta`)."""
    cams = aligned_cameras(delta)
    with torch.no_grad():
        rgb, _ = render_fn(cams, torch.ones(len(cams), 3))
    return rgb.detach().float().cpu().clamp(0, 1)


def diversity(renders: list[Tensor]) -> float:
    """Mean over pairs of assets of the RMS pixel difference of their aligned renders (aligned_renders);
    0 for identical assets, needs at least two."""
    if len(renders) < 2:
        raise ValueError(f"diversity needs at least two assets, got {len(renders)}")
    d = [float(((renders[i] - renders[j]) ** 2).mean().sqrt())
         for i in range(len(renders)) for j in range(i + 1, len(renders))]
    return float(np.mean(d))


def library_sheet(path: str | Path | None = None, size: int = 64, elevation: float = 15.0,
                  azimuths: tuple[float, ...] = (0.0, 90.0, 180.0, -90.0)):
    """A PNG contact sheet of every library object (rows) seen from the front, right side, back and left
    side (columns: azimuths 0, 90, 180, -90 at elevation 15), over white, names on the left. Returns the PIL
    image; saves it when `path` is given (docs/reference_library.png)."""
    from PIL import Image, ImageDraw  # only the docs helper needs pillow

    label_w, head_h = 64, 14
    sheet = Image.new("RGB", (label_w + size * len(azimuths), head_h + size * len(OBJECTS)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, a in enumerate(azimuths):
        draw.text((label_w + c * size + 4, 1), f"az {a:g}", fill=(90, 90, 90))
    el = torch.full((len(azimuths),), elevation)
    cams = reference_cameras(el, torch.tensor(azimuths)).resized(size, size)
    for r, name in enumerate(OBJECTS):
        rgb, alpha = render_mesh(build(name), cams)
        img = composite(rgb, alpha, None)  # [V, size, size, 3]
        strip = (torch.cat(list(img), dim=1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        sheet.paste(Image.fromarray(strip), (label_w, head_h + r * size))
        draw.text((4, head_h + r * size + size // 2 - 6), name, fill=(0, 0, 0))
    if path is not None:
        sheet.save(path, optimize=True)
    return sheet
