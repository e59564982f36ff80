"""Tiny random diffusers models written to disk once per test session, and a fake Hugging Face cache.

Models are saved in diffusers format by backend.priors.architectures (tokenizer files written there, no
download) and loaded by the priors through the same code path a downloaded model takes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from backend.priors.architectures import save_pretrained_folder

_ROOT = Path(tempfile.mkdtemp(prefix="distillery-test-models-"))
_SAVED: dict[str, Path] = {}


def tiny_model(arch: str) -> Path:
    """A folder holding random `arch` ("tiny-sd", "tiny-sd-v", "tiny-if") in diffusers format."""
    if arch not in _SAVED:
        _SAVED[arch] = save_pretrained_folder(arch, _ROOT / arch, seed=0)
    return _SAVED[arch]


def install_in_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> Path:
    """Lay `folder` out as huggingface_hub caches a snapshot: models--org--name/{refs/main, snapshots/<commit>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    shutil.copytree(folder, snap)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


# The tiny stand-in of each known model: same kind and prediction type, random weights.
TINY_STAND_INS = {"sd21-base": "tiny-sd", "sd21": "tiny-sd-v", "if-i-xl": "tiny-if"}


def install_known_models(cache: Path) -> dict[str, Path]:
    """Put a tiny stand-in of every known model in the fake cache `cache`, where `distillery models download`
    would put the real one (its hosting repo id, at its pinned revision). Returns {short name: snapshot}."""
    from backend.priors import hub

    out = {}
    for name, arch in TINY_STAND_INS.items():
        m = hub.KNOWN_MODELS[name]
        commit = m.revision if len(m.revision) == 40 else "1" * 40
        out[name] = install_in_hf_cache(cache, m.repo_id, tiny_model(arch), commit=commit)
    return out


def tiny_run_overrides(cfg, steps: int = 2, resolution: int = 32) -> dict[str, object]:
    """Dotted overrides that run preset `cfg` end to end in seconds on the CPU with the tiny models: every stage
    `steps` steps at `resolution` px with at most 2 views, small representations, short inversions and banks, a
    small final asset (surfaces at the auto density level). The preset's method, guidance, schedules and stage
    structure stay as they are."""
    sets: dict[str, object] = {"device": "cpu", "output.turntable_frames": 0, "output.evaluate": False,
                               "output.preview_views": 1, "output.preview_resolution": 32,
                               "output.snapshot_every": steps, "output.preview_every": steps,
                               "output.checkpoint_every": 0}
    for i, st in enumerate(cfg.stages):
        k = f"stages.{i}."
        sets.update({k + "steps": steps, k + "camera.resolution": resolution, k + "camera.resolution_final": 0,
                     k + "camera.views": min(st.camera.views, 2)})
        if hasattr(st.prior, "image_size"):
            sets[k + "prior.image_size"] = resolution
        rep = st.representation
        if rep.name == "gaussians":
            sets.update({k + "representation.init_count": 64})
        else:
            sets.update({k + "representation.grid_log2_table": 12, k + "representation.grid_levels": 4,
                         k + "representation.grid_start_levels": 2, k + "representation.hidden": 16,
                         k + "representation.samples_per_diagonal": 32, k + "representation.occupancy_resolution": 16,
                         k + "representation.export_resolution": 32, k + "representation.snapshot_resolution": 16,
                         k + "representation.texture_size": 64,
                         # two steps leave the initial blob: surfaces at its own density level (0 = auto)
                         k + "representation.export_threshold": 0})
            if rep.name == "dmtet":
                sets.update({k + "representation.tet_resolution": 16, k + "representation.implicit_resolution": 32,
                             k + "representation.init_threshold": 0})
        m = st.method
        if hasattr(m, "inversion_steps"):
            sets[k + "method.inversion_steps"] = 2
        if hasattr(m, "inversion_max_steps"):
            sets[k + "method.inversion_max_steps"] = 2
        if st.adversarial.weight != 0.0:
            sets.update({k + "adversarial.bank_size": 4, k + "adversarial.bank_steps": 2,
                         k + "adversarial.bank_batch": 2, k + "adversarial.resolution": resolution})
    return sets
