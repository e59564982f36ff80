"""Render a 3DGS PLY through the add-on's Gaussian display in Blender (bpy wheel), e.g. the picture in docs/:

    .venv-blender/bin/python scripts/render_blender.py out/demo/asset.ply docs/blender_result.png

The camera stands on the project's orbit (docs/CAMERAS.md) and is converted to Blender's camera with
addon/client/convert.py; engine CYCLES (CPU) or BLENDER_WORKBENCH.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="distillery-render-"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpy
import mathutils
import numpy as np

from addon import display, scene_sync
from addon.client import convert


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("asset", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--engine", default="CYCLES", choices=("CYCLES", "BLENDER_WORKBENCH"))
    p.add_argument("--size", type=int, nargs=2, default=(400, 300))
    p.add_argument("--elevation", type=float, default=20.0)
    p.add_argument("--azimuth", type=float, default=-35.0)
    p.add_argument("--distance", type=float, default=2.0)
    p.add_argument("--samples", type=int, default=32)
    args = p.parse_args()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = scene_sync.import_gaussian_ply(scene, str(args.asset), name=args.asset.stem)
    scene_sync.set_display(obj, "ellipsoids")

    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    w2c = convert.orbit_world_to_cam([args.elevation], [args.azimuth], [args.distance])[0]
    cam.matrix_world = mathutils.Matrix(convert.opencv_to_blender_cam_to_world(np.linalg.inv(w2c)).tolist())
    cam.data.sensor_fit = "VERTICAL"
    cam.data.angle = np.deg2rad(35.0)
    scene.camera = cam

    world = bpy.data.worlds.new("world")
    world.color = (0.8, 0.8, 0.8)
    scene.world = world
    r = scene.render
    r.engine = args.engine
    r.resolution_x, r.resolution_y = args.size
    r.resolution_percentage = 100
    r.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    if args.engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = args.samples
        scene.cycles.transparent_max_bounces = display.TRANSPARENT_BOUNCES  # one per Gaussian a ray crosses
        world.use_nodes = True
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.8, 0.8, 0.8, 1.0)
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGB"
    r.filepath = str(args.out.resolve())
    bpy.ops.render.render(write_still=True)
    print(f"wrote {args.out} ({len(obj.data.vertices)} Gaussians, {args.engine})")


if __name__ == "__main__":
    main()
