"""Atomic, verified checkpoints (docs/RELIABILITY.md §3).

A checkpoint is a directory `ckpt-<global step>/` holding `state.pt` (tensors only, loaded with
`weights_only=True`), `meta.json` and, written last, the `_SUCCESS` marker. The marker holds the sha256 and size
of every other file, so a checkpoint that was truncated or corrupted after it was marked is recognised at load.

Writing goes to a hidden temp directory: files are fsynced, the directory is renamed into place, the parent is
fsynced, then the marker is written and fsynced. The new checkpoint is read back and verified before any older
one is deleted, and a checkpoint at the same step (a re-save after a rollback) is moved aside, not deleted, until
its replacement verifies; so a kill, a bad disk or a corrupting write at any point leaves at least one good
checkpoint. `newest_good` skips (and removes) any checkpoint that fails verification or holds non-finite
values, and reports each one it skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MARKER = "_SUCCESS"
PREFIX = "ckpt-"
ASIDE = ".old-"  # a checkpoint being replaced at the same step, kept until the replacement verifies
FILES = ("state.pt", "meta.json")


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted: missing marker, checksum mismatch, unreadable or non-finite."""


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


def _digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "bytes": size}


def non_finite_keys(state: Any, prefix: str = "") -> list[str]:
    """Keys of floating-point tensors in a (nested) state dict that hold NaN or inf."""
    bad: list[str] = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            bad.append(prefix or "state")
    elif isinstance(state, dict):
        for k, v in state.items():
            bad += non_finite_keys(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, list | tuple):
        for i, v in enumerate(state):
            bad += non_finite_keys(v, f"{prefix}.{i}" if prefix else str(i))
    return bad


def save(root: Path, global_step: int, state: dict[str, Any], meta: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `global_step` under `root` and keep the newest `keep` good ones. Refuses a state with
    non-finite values (CheckpointError): a diverged state must never replace a good checkpoint."""
    bad = non_finite_keys(state)
    if bad:
        raise CheckpointError(f"refusing to checkpoint non-finite values ({', '.join(bad[:3])})")
    root.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{global_step:08d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _write_file(tmp / "meta.json", json.dumps(meta, indent=1).encode())
    _fsync_dir(tmp)
    aside = root / f"{ASIDE}{name}"
    if final.exists():
        if (final / MARKER).is_file() and not aside.exists():
            os.rename(final, aside)  # a good one at this step stays until the new one verifies
        else:
            shutil.rmtree(final)  # an unmarked leftover
    os.rename(tmp, final)
    _fsync_dir(root)
    marker = {"files": {f: _digest(final / f) for f in FILES}}
    _write_file(final / MARKER, json.dumps(marker).encode())
    _fsync_dir(final)
    verify(final)  # raises CheckpointError before anything older is removed
    shutil.rmtree(aside, ignore_errors=True)
    for old in marked(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def marked(root: Path) -> list[Path]:
    """Checkpoints with a marker (complete when written; `verify` says whether still intact), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / MARKER).is_file())


def latest(root: Path) -> Path | None:
    items = marked(root)
    return items[-1] if items else None


def verify(path: Path) -> None:
    """Raise CheckpointError unless every file matches the sizes and sha256 its marker recorded. A marker from
    before checksums ("ok") has nothing to compare; `load` still checks such a checkpoint's values."""
    marker = path / MARKER
    if not marker.is_file():
        raise CheckpointError(f"{path.name} is not a complete checkpoint (no {MARKER} marker)")
    try:
        text = marker.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path.name}: unreadable marker ({exc.__class__.__name__})") from None
    if text.strip() == "ok":
        return
    try:
        files = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path.name}: corrupt marker") from None
    for name in FILES:
        want = files.get(name) if isinstance(files, dict) else None
        if not isinstance(want, dict):
            raise CheckpointError(f"{path.name}: the marker lists no checksum for {name}")
        try:
            got = _digest(path / name)
        except OSError:
            raise CheckpointError(f"{path.name}: {name} is missing or unreadable") from None
        if got["bytes"] != want.get("bytes"):
            raise CheckpointError(f"{path.name}: {name} has {got['bytes']} bytes, {want.get('bytes')} were written "
                                  "(truncated)")
        if got["sha256"] != want.get("sha256"):
            raise CheckpointError(f"{path.name}: {name} does not match its checksum (corrupted)")


def load(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a verified checkpoint with finite values. Raises CheckpointError otherwise; never
    unpickles code."""
    verify(path)
    try:
        with open(path / "state.pt", "rb") as f:
            state = torch.load(f, map_location=map_location, weights_only=True)
        meta = json.loads((path / "meta.json").read_text())
    except Exception as exc:  # torch raises many kinds on a damaged or hostile file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path.name}: cannot be read ({exc.__class__.__name__}: {first})") from None
    if not isinstance(state, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path.name}: unexpected contents")
    bad = non_finite_keys(state)
    if bad:
        raise CheckpointError(f"{path.name}: non-finite values in {', '.join(bad[:3])}")
    return state, meta


def newest_good(root: Path, map_location: str | torch.device = "cpu",
                on_skip: Callable[[Path, str], None] | None = None,
                accept: Callable[[dict[str, Any]], bool] | None = None
                ) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """(path, state, meta) of the newest checkpoint that verifies, loads and holds finite values (and that
    `accept(meta)` allows), or None. Each checkpoint that fails is reported to `on_skip(path, reason)` and
    removed, so it can never be returned to again; older good ones are untouched."""
    for path in reversed(marked(root)):
        try:
            state, meta = load(path, map_location)
        except CheckpointError as exc:
            if on_skip is not None:
                on_skip(path, str(exc))
            shutil.rmtree(path, ignore_errors=True)
            continue
        if accept is None or accept(meta):
            return path, state, meta
    return None


def clean_temporaries(root: Path) -> None:
    """Remove temp directories a killed writer left behind; put back a checkpoint that was moved aside for a
    replacement that never verified."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith(f".tmp-{PREFIX}"):
            shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():
        if p.name.startswith(f"{ASIDE}{PREFIX}"):
            final = root / p.name[len(ASIDE):]
            try:
                verify(final)
            except CheckpointError:
                shutil.rmtree(final, ignore_errors=True)
                os.rename(p, final)
            else:
                shutil.rmtree(p, ignore_errors=True)
