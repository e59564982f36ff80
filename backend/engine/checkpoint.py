"""Atomic checkpoints (docs/RELIABILITY.md §3).

A checkpoint is a directory `ckpt-<global step>/` holding `state.pt` (tensors only, loaded with
`weights_only=True`), `meta.json` and, written last, the `_SUCCESS` marker. Writing goes to a hidden temp
directory: files are fsynced, the directory is renamed into place, the parent is fsynced, then the marker is
written and fsynced. Only marked checkpoints are ever loaded, and the previous one is deleted only after the
new one is marked, so a kill at any point leaves at least one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

MARKER = "_SUCCESS"
PREFIX = "ckpt-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save(root: Path, global_step: int, state: dict[str, Any], meta: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `global_step` under `root` and keep the newest `keep` marked ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{global_step:08d}"
    tmp = root / f".tmp-{PREFIX}{global_step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _write_file(tmp / "meta.json", json.dumps(meta, indent=1).encode())
    _fsync_dir(tmp)
    if final.exists():  # an unmarked leftover, or a re-save after a rollback
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _write_file(final / MARKER, b"ok\n")
    _fsync_dir(final)
    for old in marked(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def marked(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / MARKER).is_file())


def latest(root: Path) -> Path | None:
    items = marked(root)
    return items[-1] if items else None


def load(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a marked checkpoint. Refuses unmarked directories; never unpickles code."""
    if not (path / MARKER).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    with open(path / "state.pt", "rb") as f:
        state = torch.load(f, map_location=map_location, weights_only=True)
    meta = json.loads((path / "meta.json").read_text())
    return state, meta


def clean_temporaries(root: Path) -> None:
    """Remove temp directories a killed writer left behind."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(f".tmp-{PREFIX}"):
                shutil.rmtree(p, ignore_errors=True)
