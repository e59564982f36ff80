"""Settings that run any preset end to end in seconds on a CPU: every stage a few steps at a small resolution
with at most two views, small representations, short inversions and adversarial banks, a small final asset.
The preset's method, guidance, schedules and stage structure stay as they are. The test suite's end-to-end runs
of the GPU presets (on tiny random diffusers models) and `scripts/gpu_check.sh --dry-run` use them."""

from __future__ import annotations

from typing import Any

# Small sizes of the representation settings a preset may have (each set only where the representation has it).
SMALL_REPRESENTATION: dict[str, Any] = {
    "grid_log2_table": 12, "grid_levels": 4, "grid_start_levels": 2, "hidden": 16, "samples_per_diagonal": 32,
    "occupancy_resolution": 16, "export_resolution": 32, "snapshot_resolution": 16, "texture_size": 64,
    "export_threshold": 0, "tet_resolution": 16, "implicit_resolution": 32, "init_threshold": 0,
}


def tiny_run_overrides(cfg: Any, steps: int = 2, resolution: int = 32) -> dict[str, Any]:
    """Dotted overrides (as `--set` takes them) for JobConfig `cfg`: `steps` steps per stage at `resolution` px.
    NeRF and DMTet surfaces are taken at the automatic density level (two steps leave the initial blob)."""
    sets: dict[str, Any] = {"device": "cpu", "output.turntable_frames": 0, "output.evaluate": False,
                            "output.preview_views": 1, "output.preview_resolution": 32,
                            "output.snapshot_every": steps, "output.preview_every": steps,
                            "output.checkpoint_every": 0}
    for i, st in enumerate(cfg.stages):
        k = f"stages.{i}."
        sets.update({k + "steps": steps, k + "camera.resolution": resolution, k + "camera.resolution_final": 0,
                     k + "camera.views": min(st.camera.views, 2)})
        if hasattr(st.prior, "image_size"):
            sets[k + "prior.image_size"] = resolution
        small = {**SMALL_REPRESENTATION, "init_count": 64 if st.representation.name == "gaussians" else None}
        sets.update({k + "representation." + f: v for f, v in small.items()
                     if v is not None and hasattr(st.representation, f)})
        if hasattr(st.method, "inversion_steps"):
            sets[k + "method.inversion_steps"] = 2
        if hasattr(st.method, "inversion_max_steps"):
            sets[k + "method.inversion_max_steps"] = 2
        if st.adversarial.weight != 0.0:
            sets.update({k + "adversarial.bank_size": 4, k + "adversarial.bank_steps": 2,
                         k + "adversarial.bank_batch": 2, k + "adversarial.resolution": resolution})
    return sets
