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
