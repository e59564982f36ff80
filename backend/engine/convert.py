"""Conversion jobs: an uploaded 3DGS PLY -> a textured mesh, run by the same worker as generation jobs.

The job store keeps a conversion's config as

    {"task": "mesh", "prompt": "", "preset": "gaussians-to-mesh", "stages": [], "source": "source.ply",
     "gaussian_mesh": {...MeshConversionConfig...}}

and the job folder holds the uploaded `source.ply` (never served). The run emits the usual events (status,
progress per phase, result with kind "mesh") and writes:
    asset.glb     the textured mesh (glTF binary)
    asset.ply     the same mesh as a binary PLY with vertex colours (for importers without glTF)
    preview.png   four views of the textured mesh
    result.json   settings, counts, timings
A conversion is deterministic, so a job retried after a crash simply runs again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from backend import protocol
from backend.config import MeshConversionConfig, to_dict
from backend.core.settings import ConfigError, coerce, field_kind
from backend.protocol import make_event

MESH_TASK = "mesh"
MESH_PRESET = "gaussians-to-mesh"
SOURCE_NAME = "source.ply"
PREVIEW_RESOLUTION = 128
PHASES = ("load", "surface", "texture", "write")


def mesh_settings(values: dict[str, Any], prefix: str = "") -> MeshConversionConfig:
    """A MeshConversionConfig from {field: value} (strings are parsed); a bad key or value raises ConfigError
    naming `prefix + field` and the allowed values."""
    cfg = MeshConversionConfig()
    fmap = {f.name: f for f in cfg.__dataclass_fields__.values()}
    for key, value in values.items():
        if key not in fmap:
            raise ConfigError(f"{prefix}{key}", "unknown setting", ", ".join(sorted(fmap)))
        m = fmap[key].metadata
        setattr(cfg, key, coerce(f"{prefix}{key}", field_kind(fmap[key]), value, m.get("lo"), m.get("hi"),
                                 m.get("choices")))
    return cfg


def mesh_job_config(cfg: MeshConversionConfig) -> dict[str, Any]:
    """The stored config of a conversion job (module docstring)."""
    return {"task": MESH_TASK, "prompt": "", "preset": MESH_PRESET, "stages": [], "source": SOURCE_NAME,
            "gaussian_mesh": to_dict(cfg)}


def is_mesh_job(config: dict[str, Any]) -> bool:
    return isinstance(config, dict) and config.get("task") == MESH_TASK


def run_mesh_conversion(config: dict[str, Any], out_dir: Path, emit: Callable[[dict], None] | None = None,
                        job_id: str = "") -> dict[str, Any]:
    """Convert `out_dir/source.ply`; returns the result (also result.json). Raises PLYError for a bad PLY and
    ConfigError (gaussian_mesh.level) when the density has no surface at the level."""
    from backend.io import images
    from backend.io.mesh_export import mesh_ply_arrays, write_glb, write_mesh_ply
    from backend.io.ply import read_gaussian_ply
    from backend.renderers.gaussians_torch import TorchGaussianRenderer
    from backend.representations.gaussian_mesh import (
        bake_texture,
        extract_surface,
        ring_cameras,
        textured_render_fn,
    )
    from backend.representations.gaussians import Gaussians

    emit = emit or (lambda e: None)
    out_dir = Path(out_dir)
    cfg = mesh_settings(config.get("gaussian_mesh", {}), "gaussian_mesh.")
    started = time.time()
    emit(make_event("status", job_id, state="running", message="converting Gaussians to a textured mesh",
                    renderer="torch", device="cpu", prior=None))
    timings: dict[str, float] = {}

    def phase(i: int) -> float:
        emit(make_event("progress", job_id, stage=0, stage_name=PHASES[i], step=i, steps=len(PHASES),
                        global_step=i, total_steps=len(PHASES), losses={}, it_per_s=None, eta_s=None))
        return time.perf_counter()

    t = phase(0)
    cloud = Gaussians.from_ply_arrays(read_gaussian_ply(out_dir / SOURCE_NAME))
    t, timings["load"] = phase(1), time.perf_counter() - t
    with torch.no_grad():
        v, f = extract_surface(cloud, cfg)
        t, timings["surface"] = phase(2), time.perf_counter() - t
        if not f.size:
            raise ConfigError("gaussian_mesh.level", f"the Gaussians' density never reaches {cfg.level:g}, so "
                              "there is no surface", "a lower level, or a lower min_opacity")
        mesh = bake_texture(cloud, v, f, cfg, TorchGaussianRenderer())
    t, timings["texture"] = phase(3), time.perf_counter() - t
    names = protocol.FINAL_ARTIFACTS
    write_glb(out_dir / names["asset_glb"], mesh)
    write_mesh_ply(out_dir / names["asset"], mesh_ply_arrays(mesh))
    cams = ring_cameras(mesh.vertices, [15.0], [0.0, 90.0, 180.0, 270.0], PREVIEW_RESOLUTION)
    rgb, _ = textured_render_fn(mesh)(cams, torch.ones(4, 3))
    images.save_png(out_dir / names["preview"], images.grid(rgb, cols=4))
    artifacts = {role: names[role] for role in ("asset_glb", "asset", "preview", "result")}
    timings["write"] = time.perf_counter() - t
    result = {"task": MESH_TASK, "job_id": job_id, "kind": "mesh", "artifacts": artifacts,
              "gaussians": cloud.count, "count": len(mesh.vertices), "faces": len(mesh.faces),
              "seconds": round(time.time() - started, 2), "timings": {k: round(v, 3) for k, v in timings.items()},
              "config": config}
    tmp = out_dir / f".result.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out_dir / names["result"])
    emit(make_event("result", job_id, artifacts=result["artifacts"], metrics={}, count=result["count"],
                    seconds=result["seconds"], kind="mesh", faces=result["faces"]))
    return result
