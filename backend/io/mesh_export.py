"""Mesh files (docs/METHODS.md §3.4): the exported mesh (`ExportMesh`), binary PLY (positions, normals, uchar vertex
colours, faces) and GLB (trimesh, vertex colours or a baked UV texture). How meshes are extracted from the
representations lives beside them (representations/extract.py, representations/dmtet.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.io.ply import write_vertex_ply

MESH_PLY_NAMES = ["x", "y", "z", "nx", "ny", "nz", "red", "green", "blue"]
COLOUR_TYPES = {"red": "uchar", "green": "uchar", "blue": "uchar"}


@dataclass
class ExportMesh:
    """A triangle mesh for export. vertices [V, 3] float32 (world, +Z up), faces [F, 3] int64 counter-clockwise
    seen from outside, colours [V, 3] float32 in [0, 1]; optionally uv [V, 3]-indexed per-vertex UVs [V, 2] and
    a texture [S, S, 3] float32 (then vertices may be duplicated along chart seams)."""

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = self.vertices.shape[0]
        assert self.vertices.shape == (v, 3), f"vertices {self.vertices.shape}"
        assert self.faces.ndim == 2 and self.faces.shape[1] == 3, f"faces {self.faces.shape}"
        assert self.colours.shape == (v, 3), f"colours {self.colours.shape} vs {v} vertices"
        if self.faces.size:
            assert self.faces.min() >= 0 and self.faces.max() < v, "face index out of range"

    def normals(self) -> np.ndarray:
        """Area-weighted unit vertex normals [V, 3] (zeros on unused vertices)."""
        n = np.zeros_like(self.vertices, dtype=np.float64)
        if self.faces.size:
            P = self.vertices[self.faces].astype(np.float64)
            fn = np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
            for k in range(3):
                np.add.at(n, self.faces[:, k], fn)
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return (n / np.maximum(length, 1e-12)).astype(np.float32)

    def volume(self) -> float:
        """Signed volume (positive for a closed, outward-wound mesh)."""
        if not self.faces.size:
            return 0.0
        P = self.vertices[self.faces].astype(np.float64)
        return float(np.einsum("ij,ij->i", P[:, 0], np.cross(P[:, 1], P[:, 2])).sum() / 6.0)


def mesh_ply_arrays(mesh: ExportMesh) -> dict[str, np.ndarray]:
    """PLY arrays of a mesh: float x y z nx ny nz, uchar red green blue per vertex, and "faces" [F, 3]."""
    n = mesh.normals()
    rgb = np.clip(np.round(mesh.colours * 255.0), 0, 255).astype(np.uint8)
    out = {"x": mesh.vertices[:, 0], "y": mesh.vertices[:, 1], "z": mesh.vertices[:, 2],
           "nx": n[:, 0], "ny": n[:, 1], "nz": n[:, 2], "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2]}
    out = {k: np.ascontiguousarray(v) for k, v in out.items()}
    out["faces"] = mesh.faces.astype(np.int32)
    return out


def write_mesh_ply(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Binary little-endian PLY of `mesh_ply_arrays` output; non-finite vertices are refused."""
    arrays = dict(arrays)
    faces = arrays.pop("faces")
    for k in ("x", "y", "z"):
        if not np.isfinite(arrays[k]).all():
            raise ValueError(f"mesh property {k} has non-finite values")
    write_vertex_ply(path, {k: arrays[k] for k in MESH_PLY_NAMES}, faces=faces, vertex_types=COLOUR_TYPES)


def write_glb(path: Path, mesh: ExportMesh) -> None:
    """GLB through trimesh: vertex colours, or the baked texture with its UVs. glTF is +Y up, so positions are
    rotated from the project's +Z up (x, y, z) -> (x, z, -y); importers (Blender) rotate them back."""
    import trimesh
    from PIL import Image

    v = mesh.vertices.astype(np.float64)
    v = np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)
    if mesh.faces.size == 0:
        data = trimesh.Scene().export(file_type="glb")
    else:
        if mesh.texture is not None and mesh.uv is not None:
            # trimesh reads UVs with v = 0 at the image's bottom row: flip rows so that v = 0 is row -1.
            img = Image.fromarray(np.clip(np.round(mesh.texture[::-1] * 255), 0, 255).astype(np.uint8))
            visual = trimesh.visual.TextureVisuals(uv=mesh.uv, image=img)
        else:
            rgba = np.concatenate([np.clip(np.round(mesh.colours * 255), 0, 255),
                                   np.full((len(v), 1), 255)], axis=1).astype(np.uint8)
            visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
        tm = trimesh.Trimesh(v, mesh.faces, visual=visual, process=False)
        data = trimesh.Scene(tm).export(file_type="glb")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
