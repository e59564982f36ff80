"""Measure how faithfully Blender shows a 3DGS asset: Blender's render against the backend's own render.

    .venv-blender/bin/python scripts/measure_display.py mug=out/mug/asset.ply duck=out/duck/asset.ply \\
        --out /tmp/display [--engines CYCLES BLENDER_EEVEE BLENDER_WORKBENCH] [--addon-root DIR --label before]

For each asset, the backend renders it with its pure-torch rasteriser (in the backend's environment, .venv, by
subprocess) at one orbit camera of docs/CAMERAS.md; Blender renders the add-on's display of the same PLY at
the same camera (converted with addon/client/convert.py) with each engine, on a transparent film that is
composited over white like the backend's background. Then, per image, in numpy:

- holes: near-white pixels (every channel > 0.9) inside the filled silhouette (alpha > 0.5 with its
  enclosed gaps filled), as a share of the silhouette; the backend's own render has a few (the mug handle);
- roughness: mean absolute 3x3 Laplacian of the luminance inside the eroded silhouette (speckle, facets);
- mean colour: mean RGB inside the image's own mask (alpha > 0.5), and its largest channel difference to
  the backend's;
- PSNR over the whole image against the backend's render, and the IoU of the two masks.

Blender filters each pixel over 1.5 px by default (`--filter-px`) while the backend's rasteriser samples the
pixel centre and widens every Gaussian by 0.3 px^2 on screen (gsplat's eps2d), so rims differ by a fraction
of a pixel; the mask IoU is the figure that feels it.

`--addon-root` imports the add-on from another checkout (e.g. an older commit, for "before" figures). Writes
PNGs, metrics.json and a Markdown table under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="distillery-measure-"))
ROOT = Path(__file__).resolve().parents[1]

BACKEND_RENDER = r"""
import sys, numpy as np, torch
from backend.io.ply import read_gaussian_ply
from backend.representations.gaussians import Gaussians
from backend.renderers.gaussians_torch import TorchGaussianRenderer
from backend.core.cameras import orbit_cameras
path, out, el, az, dist, fovy, size = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7]), int(sys.argv[7])
cloud = Gaussians.from_ply_arrays(read_gaussian_ply(path))
cams = orbit_cameras([el], [az], dist, fovy, size)
with torch.no_grad():
    r = TorchGaussianRenderer().render(cloud, cams, torch.ones(1, 3))
np.savez(out, rgb=r.rgb[0].clamp(0, 1).numpy(), alpha=r.alpha[0, ..., 0].numpy())
"""


def backend_render(ply: Path, out: Path, args) -> tuple:
    """(rgb [H, W, 3] on white, alpha [H, W]) from the backend's rasteriser."""
    python = os.environ.get("DISTILLERY_BACKEND_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
    cmd = [python, "-c", BACKEND_RENDER, str(ply), str(out), str(args.elevation), str(args.azimuth),
           str(args.distance), str(args.fovy), str(args.size)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    import numpy as np

    d = np.load(out)
    return d["rgb"].astype(np.float64), d["alpha"].astype(np.float64)


def blender_render(ply: Path, png: Path, engine: str, args) -> tuple:
    """(rgb [H, W, 3] composited on white, alpha [H, W]) of the add-on's display rendered by `engine`."""
    import bpy
    import mathutils
    import numpy as np

    from addon import scene_sync
    from addon.client import convert

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = scene_sync.import_gaussian_ply(scene, str(ply), name=ply.stem)
    mode = {"CYCLES": args.cycles_mode, "BLENDER_EEVEE": "camera", "BLENDER_WORKBENCH": args.workbench_mode}[engine]
    try:
        size = args.workbench_size if engine == "BLENDER_WORKBENCH" else None
        scene_sync.set_display(obj, mode, size=size)
    except TypeError:  # an older add-on (--addon-root): ellipsoids on or off only
        scene_sync.set_display(obj, ellipsoids=mode != "points")
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    w2c = convert.orbit_world_to_cam([args.elevation], [args.azimuth], [args.distance])[0]
    cam.matrix_world = mathutils.Matrix(convert.opencv_to_blender_cam_to_world(np.linalg.inv(w2c)).tolist())
    cam.data.sensor_fit = "VERTICAL"
    cam.data.angle = np.deg2rad(args.fovy)
    cam.data.clip_start = 0.01
    scene.camera = cam
    r = scene.render
    r.engine = engine
    r.resolution_x = r.resolution_y = args.size
    r.resolution_percentage = 100
    r.film_transparent = True
    r.filter_size = args.filter_px  # EEVEE's and Workbench's pixel filter
    scene.view_settings.view_transform = "Raw" if args.display_blend else "Standard"
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = args.samples
        scene.cycles.transparent_max_bounces = args.transparent_bounces
        scene.cycles.use_denoising = False
        scene.cycles.filter_width = args.filter_px
    elif engine == "BLENDER_EEVEE":
        scene.eevee.taa_render_samples = args.eevee_samples
    else:
        scene.display.shading.light = "FLAT"
        scene.display.shading.color_type = args.workbench_color  # VERTEX is "Attribute" in the UI
        scene.display.render_aa = "8"
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    r.filepath = str(png)
    t0 = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    seconds = time.perf_counter() - t0
    img = bpy.data.images.load(str(png))
    px = np.array(img.pixels[:], dtype=np.float64).reshape(args.size, args.size, 4)[::-1]  # row 0 = top
    bpy.data.images.remove(img)
    alpha = px[..., 3]
    rgb = px[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])  # straight alpha over white
    return rgb, alpha, seconds


# ---------------------------------------------------------------------------------------------- metrics


def _dilate(m):

    out = m.copy()
    out[1:] |= m[:-1]
    out[:-1] |= m[1:]
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    return out


def fill_holes(mask):
    """The mask with every background region that does not touch the border filled (flood fill in numpy)."""
    import numpy as np

    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1]
    while True:
        grown = _dilate(outside) & ~mask
        if (grown == outside).all():
            return ~outside
        outside = grown


def metrics(rgb, alpha, ref_rgb, ref_alpha) -> dict:
    import numpy as np

    mask, ref_mask = alpha > 0.5, ref_alpha > 0.5
    sil = fill_holes(mask)
    holes = (rgb.min(axis=-1) > 0.9) & sil
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722])
    lap = np.abs(4 * lum[1:-1, 1:-1] - lum[:-2, 1:-1] - lum[2:, 1:-1] - lum[1:-1, :-2] - lum[1:-1, 2:])
    inner = ~_dilate(~sil)
    inner = inner[1:-1, 1:-1]
    mse = float(((rgb - ref_rgb) ** 2).mean())
    mean = rgb[mask].mean(axis=0) if mask.any() else np.zeros(3)
    ref_mean = ref_rgb[ref_mask].mean(axis=0) if ref_mask.any() else np.zeros(3)
    return {
        "holes_pct": 100.0 * float(holes.sum()) / max(1, int(sil.sum())),
        "roughness": float(lap[inner].mean()) if inner.any() else 0.0,
        "mean_rgb": [round(float(v), 4) for v in mean],
        "mean_diff": float(np.abs(mean - ref_mean).max()),
        "psnr_db": float(10 * np.log10(1.0 / max(mse, 1e-12))),
        "iou": float((mask & ref_mask).sum()) / max(1, int((mask | ref_mask).sum())),
    }


def save_png(rgb, path: Path) -> None:
    """An sRGB-valued [H, W, 3] image to PNG via bpy (no extra dependency)."""
    import bpy
    import numpy as np

    h, w, _ = rgb.shape
    img = bpy.data.images.new(path.stem, w, h, alpha=False)
    rgba = np.ones((h, w, 4))
    rgba[..., :3] = rgb
    img.pixels.foreach_set(rgba[::-1].astype(np.float32).ravel())
    img.filepath_raw = str(path)
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)


STRIP = ("backend", "before-cycles", "after-cycles", "camera-cycles", "after-blender_eevee",
         "before-blender_workbench", "after-blender_workbench")


def write_strip(out: Path, name: str, size: int) -> Path | None:
    """{name}-strip.png: the backend's render, then Blender's before and after, side by side, in STRIP's order
    (the images that exist; "camera" is the label of a run with --cycles-mode camera)."""
    import bpy
    import numpy as np

    tiles = []
    for key in STRIP:
        path = out / f"{name}-{key}.png"
        if path.is_file():
            img = bpy.data.images.load(str(path))
            tiles.append(np.array(img.pixels[:], dtype=np.float32).reshape(size, size, 4)[::-1, :, :3])
            bpy.data.images.remove(img)
    if not tiles:
        return None
    target = out / f"{name}-strip.png"
    save_png(np.concatenate(tiles, axis=1), target)
    return target


def main() -> None:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("assets", nargs="+", help="name=path/to/asset.ply")
    p.add_argument("--out", type=Path, default=Path("/tmp/distillery-display"))
    p.add_argument("--engines", nargs="+", default=["CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--elevation", type=float, default=20.0)
    p.add_argument("--azimuth", type=float, default=-35.0)
    p.add_argument("--distance", type=float, default=2.0)
    p.add_argument("--fovy", type=float, default=40.0)
    p.add_argument("--samples", type=int, default=64, help="Cycles samples")
    p.add_argument("--eevee-samples", type=int, default=16)
    p.add_argument("--transparent-bounces", type=int, default=128)
    p.add_argument("--cycles-mode", default="ellipsoids", choices=("ellipsoids", "camera", "points"))
    p.add_argument("--workbench-mode", default="camera", choices=("ellipsoids", "camera", "points"))
    p.add_argument("--filter-px", type=float, default=1.5,
                   help="pixel filter width (Blender's default 1.5; the backend samples pixel centres)")
    p.add_argument("--workbench-size", type=float, default=1.5,
                   help="splat Size in sigmas for the Solid view (opaque there: 1.5 keeps the silhouette)")
    p.add_argument("--workbench-color", default="VERTEX", help="Solid shading colour type (MATERIAL before)")
    p.add_argument("--addon-root", type=Path, default=ROOT, help="checkout whose addon/ to render with")
    p.add_argument("--label", default="after")
    p.add_argument("--display-blend", action="store_true",
                   help="experiment: keep the colours in display values and use the Raw view transform, so "
                        "Blender blends what the backend blends (not a mode of the add-on)")
    args = p.parse_args()
    sys.path.insert(0, str(args.addon_root.resolve()))
    if args.display_blend:
        from addon.client import splat

        splat.srgb_to_linear = lambda c: np.asarray(c, dtype=np.float32)


    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for spec in args.assets:
        name, path = spec.split("=", 1)
        ply = Path(path).resolve()
        ref_rgb, ref_alpha = backend_render(ply, args.out / f"{name}-backend.npz", args)
        save_png(ref_rgb, args.out / f"{name}-backend.png")
        row = {"asset": name, "engine": "backend", **metrics(ref_rgb, ref_alpha, ref_rgb, ref_alpha)}
        results.append(row)
        for engine in args.engines:
            png = args.out / f"{name}-{args.label}-{engine.lower()}-raw.png"
            rgb, alpha, seconds = blender_render(ply, png, engine, args)
            save_png(rgb, args.out / f"{name}-{args.label}-{engine.lower()}.png")
            results.append({"asset": name, "engine": engine, "label": args.label, "render_s": round(seconds, 1),
                            **metrics(rgb, alpha, ref_rgb, ref_alpha)})
            print(json.dumps(results[-1]), flush=True)
    (args.out / f"metrics-{args.label}.json").write_text(json.dumps(results, indent=1))
    lines = ["| asset | engine | holes % | roughness | mean RGB | mean diff | PSNR dB | IoU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['asset']} | {r['engine']} | {r['holes_pct']:.2f} | {r['roughness']:.4f} | "
                     f"{', '.join(f'{v:.3f}' for v in r['mean_rgb'])} | {r['mean_diff']:.3f} | "
                     f"{r['psnr_db']:.1f} | {r['iou']:.3f} |")
    for spec in args.assets:
        write_strip(args.out, spec.split("=", 1)[0], args.size)
    table = "\n".join(lines)
    (args.out / f"table-{args.label}.md").write_text(table + "\n")
    print(table)



if __name__ == "__main__":
    main()
