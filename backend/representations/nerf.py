"""NeRF (docs/METHODS.md §3.2): the hash-grid field of representations/field.py rendered by volume rendering
(`renderers/volume_torch.py`), streamed and exported as a mesh by marching cubes on its density
(`representations/extract.py`)."""

from __future__ import annotations

import numpy as np

from backend.config import NeRFConfig
from backend.io.mesh_export import ExportMesh, mesh_ply_arrays
from backend.representations.extract import extract_nerf_mesh
from backend.representations.field import FieldRepresentation


class NeRF(FieldRepresentation):
    """The NeRF representation. kind "mesh": snapshots and the final asset are marching-cubes meshes."""

    cfg: NeRFConfig

    def snapshot(self, max_points: int | None = None) -> dict[str, np.ndarray]:
        """The marching-cubes mesh at `snapshot_resolution` as PLY arrays."""
        return mesh_ply_arrays(extract_nerf_mesh(self, self.cfg.snapshot_resolution))

    def export_mesh(self) -> ExportMesh:
        """The final mesh: marching cubes at `export_resolution`, cleaned (see representations/extract.py)."""
        return extract_nerf_mesh(self, self.cfg.export_resolution, clean=True)
