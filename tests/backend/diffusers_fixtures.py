"""Tiny random diffusers models written to disk once per test session, and a fake Hugging Face cache.

Models are saved in diffusers format by backend.priors.architectures (tokenizer files written there, no
download) and loaded by the priors through the same code path a downloaded model takes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from backend.engine.tiny import tiny_run_overrides
from backend.priors.architectures import save_pretrained_folder

__all__ = ["install_in_hf_cache", "install_known_models", "tiny_model", "tiny_run_overrides"]

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
