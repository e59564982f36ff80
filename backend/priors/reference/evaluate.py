"""Evaluation of an asset against the reference library (`distillery evaluate`), and the library's contact
sheet.

The asset is rendered at 24 reference cameras (elevations 15 and 30, azimuths every 30 degrees, 64x64, white
background) and compared with the references of its prompt at the same cameras:
- psnr: mean over views of the PSNR (peak 1.0) of the render against the reference;
- mask_iou: intersection over union of alpha > 0.5, pooled over all views;
- view_accuracy: share of views whose best-matching reference (lowest MSE among ALL 36 azimuths of the
  object's references at that elevation) lies within 30 degrees of the true azimuth. A Janus asset (a face on
  every side) scores low here even when its PSNR looks fine.
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
PSNR_CAP = 100.0  # dB, for pixel-identical views

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


def evaluate(render_fn: RenderFn, prompt: str) -> dict[str, Any]:
    """Scores of an asset rendered by `render_fn(cams, background [C, 3]) -> (rgb [C, H, W, 3] in [0, 1] over
    the background, alpha [C, H, W, 1])` against the references of `prompt` (see the module docstring)."""
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
    per_view = []
    inter = union = 0.0
    for v in range(C):
        e, a = float(el[v]), float(az[v])
        row = REFERENCE_ELEVATIONS.index(e) * NUM_AZIMUTHS
        ring = ref_rgb[row:row + NUM_AZIMUTHS]  # all azimuths at this elevation
        ring_az = refs.azimuth[row:row + NUM_AZIMUTHS]
        true = row + round((a % 360.0) / REFERENCE_AZIMUTH_STEP) % NUM_AZIMUTHS
        mse = float(((rgb[v] - ref_rgb[true]) ** 2).mean())
        psnr = PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else -10.0 * float(np.log10(mse))
        m, r = alpha[v, ..., 0] > 0.5, refs.alpha[true, ..., 0] > 0.5
        i, u = float((m & r).sum()), float((m | r).sum())
        inter, union = inter + i, union + u
        best = int(((ring - rgb[v]) ** 2).mean(dim=(1, 2, 3)).argmin())
        best_az = float(ring_az[best])
        err = abs(float(wrap_azimuth(torch.tensor(best_az - a))))
        per_view.append({"elevation": e, "azimuth": a, "psnr": psnr, "mask_iou": i / u if u > 0 else 1.0,
                         "best_azimuth": best_az, "correct": err <= VIEW_TOLERANCE})
    return {
        "prompt": prompt,
        "psnr": float(np.mean([p["psnr"] for p in per_view])),
        "mask_iou": inter / union if union > 0 else 1.0,
        "view_accuracy": float(np.mean([p["correct"] for p in per_view])),
        "per_view": per_view,
    }


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
