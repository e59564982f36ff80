"""What a job writes: previews and snapshots along the way, and the final asset.

Final artifacts (their names and roles are backend/protocol.py's FINAL_ARTIFACTS; the server serves only these
and the numbered intermediates):
    asset.ply        Gaussians: the standard 3DGS layout; meshes (NeRF, DMTet): binary PLY with positions,
                     normals, uchar vertex colours and faces
    asset.glb        meshes: the same mesh as glTF binary (vertex colours or a baked UV texture); Gaussians (with
                     output.mesh, the default): the Gaussians converted to a textured mesh
    preview.png      a grid of views
    turntable.png    a contact sheet of the turntable frames
    turntable.gif    the turntable, looping
    result.json      config, seed, timings, counts, evaluation
The layout follows the representation's `kind` ("gaussians" or "mesh"), never its class.
Intermediates `preview-<step>.png` and `snapshot-<step>.ply` keep only the newest few (clients apply the newest
one anyway); final artifacts are never deleted here.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from backend import __version__, protocol
from backend.config import JobConfig, to_dict
from backend.core.cameras import Cameras
from backend.core.image_ops import composite
from backend.engine.stage import Cancelled, Stage, Timings
from backend.io import images
from backend.io.ply import write_gaussian_ply
from backend.protocol import make_event

KEEP_INTERMEDIATES = 3
OUTPUT_CHUNK_PIXELS = 256 * 256  # pixels per render call for previews and turntables
PREVIEW_ELEVATION = 15.0


def _prune_old(out_dir: Path, prefix: str, suffix: str) -> None:
    files = sorted(out_dir.glob(f"{prefix}-*{suffix}"))
    for old in files[:-KEEP_INTERMEDIATES]:
        old.unlink(missing_ok=True)


@torch.no_grad()
def render_views(stage: Stage, cams: Cameras, background: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb [C, H, W, 3], alpha [C, H, W, 1]) of the current representation, on a solid grey level.

    Rendered a few views at a time (at most OUTPUT_CHUNK_PIXELS per call): a renderer's working memory grows
    with views x pixels, and outputs (16 previews at 1024 px, 360 turntable frames) must stay within the
    memory budget that training fits in (backend/engine/memory.py)."""
    per = views_per_chunk(cams.height, cams.width)
    rgbs, alphas = [], []
    for start in range(0, len(cams), per):
        part = cams[start : start + per].to(stage.device)
        bg = torch.full((len(part), 3), background, device=stage.device)
        out = stage.renderer.render(stage.rep, part, bg)
        rgbs.append(out.rgb.cpu())
        alphas.append(out.alpha.cpu())
    return torch.cat(rgbs), torch.cat(alphas)


def views_per_chunk(height: int, width: int) -> int:
    """How many output views one render call draws."""
    return max(1, OUTPUT_CHUNK_PIXELS // (height * width))


def chunked(render_fn: Any) -> Any:
    """A render_fn(cams, background [C, 3]) -> (rgb, alpha) that calls `render_fn` on a few views at a time."""

    def render(cams: Cameras, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per = views_per_chunk(cams.height, cams.width)
        parts = [render_fn(cams[i : i + per], background[i : i + per]) for i in range(0, len(cams), per)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    return render


def preview_image(cfg: JobConfig, stage: Stage) -> torch.Tensor:
    oc = cfg.output
    cams = stage.sampler.ring(oc.preview_views, PREVIEW_ELEVATION, oc.preview_resolution)
    rgb, _ = render_views(stage, cams)
    return images.grid(rgb, cols=min(oc.preview_views, 4))


def write_preview(cfg: JobConfig, stage: Stage, out_dir: Path, emit: Any, job_id: str, step: int) -> None:
    name = protocol.preview_name(step)
    images.save_png(out_dir / name, preview_image(cfg, stage))
    _prune_old(out_dir, protocol.PREVIEW_PREFIX, protocol.PREVIEW_SUFFIX)
    emit(make_event("preview", job_id, artifact=name, step=step))


def write_asset_ply(kind: str, path: Path, arrays: dict) -> None:
    """Write snapshot arrays in the PLY layout of the representation's kind."""
    if kind == "mesh":
        from backend.io.mesh_export import write_mesh_ply

        write_mesh_ply(path, arrays)
    elif kind == "gaussians":
        write_gaussian_ply(path, arrays)
    else:
        raise ValueError(f"unknown representation kind {kind!r}")


def write_snapshot(cfg: JobConfig, stage: Stage, out_dir: Path, emit: Any, job_id: str, step: int) -> None:
    arrays = stage.rep.snapshot(cfg.output.snapshot_max_points)
    name = protocol.snapshot_name(step)
    kind = stage.rep.kind
    write_asset_ply(kind, out_dir / name, arrays)
    _prune_old(out_dir, protocol.SNAPSHOT_PREFIX, protocol.SNAPSHOT_SUFFIX)
    extra = {"faces": len(arrays["faces"])} if kind == "mesh" else {}
    emit(make_event("snapshot", job_id, artifact=name, kind=kind, count=len(arrays["x"]), step=step, **extra))


def mesh_render_fn(mesh: Any) -> Any:
    """render_fn(cams, background) -> (rgb, alpha) of an exported mesh with its vertex colours, unlit (the
    colours are what the field learnt to show), 2x supersampled like the references."""
    from backend.renderers.mesh_torch import interpolate, rasterize

    v = torch.from_numpy(mesh.vertices).float()
    f = torch.from_numpy(mesh.faces).long()
    c = torch.from_numpy(mesh.colours).float()

    def render(cams: Cameras, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        C, H, W = len(cams), cams.height, cams.width
        if f.shape[0] == 0:
            return background[:, None, None, :].expand(C, H, W, 3).clone(), torch.zeros(C, H, W, 1)
        hi = cams.to("cpu").resized(W * 2, H * 2)
        with torch.no_grad():
            rast = rasterize(v, f, hi)
            col = interpolate(c, rast, f)
        cover = rast.mask[..., None].float()
        rgba = torch.cat([col * cover, cover], dim=-1).permute(0, 3, 1, 2)
        rgba = torch.nn.functional.avg_pool2d(rgba, 2).permute(0, 2, 3, 1)
        return composite(rgba[..., :3], rgba[..., 3:], background.float()), rgba[..., 3:]

    return render


def evaluate_against_reference(stage: Stage, prompt: str, mesh: Any = None) -> dict[str, float] | None:
    """PSNR / mask IoU / view accuracy and the rotation-invariant view figures (aligned view accuracy, its turn,
    multi-face rate) against the reference prior, or None if it does not know the prompt.
    With `mesh` (an exported mesh) the asset itself is evaluated, not the representation's own renders."""
    from backend.priors.reference.evaluate import evaluate
    from backend.priors.reference.prompts import UnknownPromptError

    def render_fn(cams: Cameras, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = stage.renderer.render(stage.rep, cams.to(stage.device), background.to(stage.device))
        return out.rgb.cpu(), out.alpha.cpu()

    if mesh is not None:
        render_fn = mesh_render_fn(mesh)

    try:
        metrics = evaluate(chunked(render_fn), prompt)
    except UnknownPromptError:
        return None
    return {k: float(v) for k, v in metrics.items() if k in ("psnr", "mask_iou", "view_accuracy",
                                                              "aligned_view_accuracy", "alignment_azimuth",
                                                              "multi_face_rate")}


def write_gaussian_glb(cfg: JobConfig, stage: Stage, out_dir: Path, emit: Any, job_id: str) -> dict | None:
    """asset.glb of a Gaussian job: the Gaussians as a textured mesh (representations/gaussian_mesh.py).
    Returns {faces, vertices, seconds}; a conversion that fails costs the job nothing but this file (a warning
    event says why)."""
    import time

    from backend.io.mesh_export import write_glb
    from backend.representations.gaussian_mesh import gaussians_to_mesh

    start = time.perf_counter()
    try:
        with torch.no_grad():
            mesh = gaussians_to_mesh(stage.rep, cfg.output.gaussian_mesh, stage.renderer)
        if not len(mesh.faces):
            emit(make_event("warning", job_id, code="MESH_EMPTY", message="asset.glb was not written: the "
                            "Gaussians' density never reaches output.gaussian_mesh.level="
                            f"{cfg.output.gaussian_mesh.level:g}"))
            return None
        write_glb(out_dir / protocol.ASSET_GLB, mesh)
    except Exception as exc:  # the Gaussians are the asset; the mesh is a derived extra
        emit(make_event("warning", job_id, code="MESH_FAILED",
                        message=f"asset.glb was not written: {type(exc).__name__}: {exc}"))
        return None
    return {"faces": len(mesh.faces), "vertices": len(mesh.vertices),
            "seconds": round(time.perf_counter() - start, 2)}


def write_final(cfg: JobConfig, stage: Stage, out_dir: Path, emit: Any, job_id: str, seconds: float,
                timings: Timings, should_cancel: Any = None) -> dict[str, Any]:
    """Write the final artifacts and result.json. A cancel is honoured between phases (mesh export, asset,
    preview, turntable, evaluation): the job ends `cancelled` and result.json is not written."""
    def check() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled(cfg.total_steps)

    kind = stage.rep.kind
    mesh = None
    check()
    if kind == "mesh":
        from backend.io.mesh_export import mesh_ply_arrays, write_glb

        mesh = stage.rep.export_mesh()
        arrays = mesh_ply_arrays(mesh)
        check()
        write_glb(out_dir / protocol.ASSET_GLB, mesh)
    else:
        arrays = stage.rep.snapshot(None)
    names = protocol.FINAL_ARTIFACTS
    write_asset_ply(kind, out_dir / names["asset"], arrays)
    check()
    images.save_png(out_dir / names["preview"], preview_image(cfg, stage))
    check()
    roles = ["asset", "preview"]
    mesh_info = None
    if mesh is not None:
        roles.append("asset_glb")
    elif kind == "gaussians" and cfg.output.mesh:
        mesh_info = write_gaussian_glb(cfg, stage, out_dir, emit, job_id)
        if mesh_info is not None:
            roles.append("asset_glb")
    oc = cfg.output
    if oc.turntable_frames:
        cams = stage.sampler.ring(oc.turntable_frames, PREVIEW_ELEVATION, oc.preview_resolution)
        frames, _ = render_views(stage, cams)
        images.save_png(out_dir / names["turntable_sheet"], images.grid(frames, cols=min(8, oc.turntable_frames)))
        images.save_gif(out_dir / names["turntable"], frames)
        roles += ["turntable", "turntable_sheet"]
        check()
    roles.append("result")
    metrics = evaluate_against_reference(stage, cfg.prompt, mesh) if oc.evaluate else None
    check()
    per_step = timings.medians(skip=min(5, len(timings.history) // 10))
    result = {
        "prompt": cfg.prompt, "seed": cfg.seed, "preset": cfg.preset, "job_id": job_id,
        "artifacts": {role: names[role] for role in roles},
        "kind": kind, "count": len(arrays["x"]), "faces": len(arrays["faces"]) if kind == "mesh" else None,
        "steps": cfg.total_steps, "seconds": round(seconds, 2),
        "median_seconds_per_step": {k: round(v, 5) for k, v in per_step.items()},
        "renderer": stage.renderer.name, "device": str(stage.device), "metrics": metrics, "mesh": mesh_info,
        "versions": {"distillery": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "config": to_dict(cfg),
    }
    tmp = out_dir / f".result.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out_dir / names["result"])
    extra = {"faces": result["faces"]} if kind == "mesh" else {}
    emit(make_event("result", job_id, artifacts=result["artifacts"], metrics=metrics or {}, kind=kind,
                    count=result["count"], seconds=result["seconds"], **extra))
    return result
