"""How close a Gaussian asset's textured mesh looks to the Gaussians themselves (docs/MESH.md).

For each 3DGS PLY: convert it with the default (or `--set`) conversion settings, timing each phase; render the
Gaussians and the textured mesh (unlit, bilinear texture) from the same cameras (8 azimuths at elevations 15
and 45 degrees, over white); report PSNR of the images and the IoU of the masks (alpha > 0.5); write a picture
with the Gaussians in the top row and the mesh below.

    .venv/bin/python scripts/mesh_quality.py out/mug/asset.ply out/duck/asset.ply --picture docs/mesh_vs_gaussians.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.config import MeshConversionConfig  # noqa: E402
from backend.core.settings import coerce, field_kind  # noqa: E402
from backend.io import images  # noqa: E402
from backend.io.mesh_export import write_glb  # noqa: E402
from backend.io.ply import read_gaussian_ply  # noqa: E402
from backend.renderers.gaussians_torch import TorchGaussianRenderer  # noqa: E402
from backend.representations import gaussian_mesh as gm  # noqa: E402
from backend.representations.gaussians import Gaussians  # noqa: E402

RESOLUTION = 160
ELEVATIONS = (15.0, 45.0)
AZIMUTHS = tuple(range(0, 360, 45))


def settings(pairs: list[str]) -> MeshConversionConfig:
    cfg = MeshConversionConfig()
    fmap = {f.name: f for f in cfg.__dataclass_fields__.values()}
    for item in pairs:
        key, value = item.split("=", 1)
        f = fmap[key]
        m = f.metadata
        setattr(cfg, key, coerce(key, field_kind(f), value, m.get("lo"), m.get("hi"), m.get("choices")))
    return cfg


def measure(path: Path, cfg: MeshConversionConfig, glb: Path | None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    cloud = Gaussians.from_ply_arrays(read_gaussian_ply(path))
    t0 = time.perf_counter()
    v, f = gm.extract_surface(cloud, cfg)
    t1 = time.perf_counter()
    mesh = gm.bake_texture(cloud, v, f, cfg)
    t2 = time.perf_counter()
    if glb is not None:
        write_glb(glb, mesh)
    cams = gm.ring_cameras(v, list(ELEVATIONS), list(AZIMUTHS), RESOLUTION)
    white = torch.ones(len(cams), 3)
    with torch.no_grad():
        g = TorchGaussianRenderer().render(cloud, cams, white)
    m_rgb, m_alpha = gm.textured_render_fn(mesh)(cams, white)
    mse = float(((g.rgb - m_rgb) ** 2).mean())
    gm_mask, mm_mask = g.alpha[..., 0] > 0.5, m_alpha[..., 0] > 0.5
    iou = float((gm_mask & mm_mask).sum()) / max(float((gm_mask | mm_mask).sum()), 1.0)
    row = {"asset": str(path), "gaussians": cloud.count, "faces": len(mesh.faces),
           "vertices": len(mesh.vertices), "psnr": round(-10 * math.log10(max(mse, 1e-10)), 2),
           "mask_iou": round(iou, 4), "surface_s": round(t1 - t0, 2), "texture_s": round(t2 - t1, 2),
           "total_s": round(t2 - t0, 2)}
    return row, g.rgb[: len(AZIMUTHS)], m_rgb[: len(AZIMUTHS)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assets", nargs="+", type=Path, help="3DGS PLY files")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a conversion setting (resolution, level, faces, texture_size, views, ...)")
    parser.add_argument("--picture", type=Path, help="PNG: per asset, Gaussians (top) and mesh (bottom)")
    parser.add_argument("--glb-dir", type=Path, help="also write each mesh as <dir>/<asset folder>.glb")
    args = parser.parse_args()
    torch.manual_seed(0)
    import fast_simplification  # noqa: F401 - imported before the clock starts: the times are the work alone
    import mcubes  # noqa: F401
    import trimesh  # noqa: F401
    import xatlas  # noqa: F401
    from scipy.spatial import cKDTree  # noqa: F401

    cfg = settings(args.overrides)
    rows, tiles = [], []
    for path in args.assets:
        glb = args.glb_dir / f"{path.parent.name}.glb" if args.glb_dir else None
        if glb is not None:
            glb.parent.mkdir(parents=True, exist_ok=True)
        row, g_rgb, m_rgb = measure(path, cfg, glb)
        rows.append(row)
        print(json.dumps(row), flush=True)
        tiles += [g_rgb[::2], m_rgb[::2]]  # 4 azimuths at 15 degrees
    if args.picture is not None:
        images.save_png(args.picture, images.grid(torch.cat(tiles), cols=4))
    print("| asset | Gaussians | faces | PSNR (dB) | mask IoU | surface (s) | texture (s) | total (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['asset']).parent.name} | {r['gaussians']} | {r['faces']} | {r['psnr']:.2f} | "
              f"{r['mask_iou']:.3f} | {r['surface_s']:.2f} | {r['texture_s']:.2f} | {r['total_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
