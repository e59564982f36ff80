"""Server-chosen artifact names and their files (RELIABILITY.md §2: no path ever comes from a client).

A client names an artifact by one of the names the engine writes (backend/engine/outputs.py); anything else
is "not found" before the file system is touched. The resolved path must be a regular file (not a symlink)
directly inside the job's folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

FINAL_NAMES = ("asset.ply", "asset.glb", "preview.png", "turntable.gif", "turntable.png", "result.json")
_NAME = re.compile(r"^(?:asset\.ply|asset\.glb|preview\.png|turntable\.gif|turntable\.png|result\.json|"
                   r"snapshot-[0-9]{6,9}\.ply|preview-[0-9]{6,9}\.png)$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
MEDIA_TYPES = {".ply": "application/octet-stream", ".png": "image/png", ".gif": "image/gif",
               ".json": "application/json", ".glb": "model/gltf-binary"}


def valid_name(name: str) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def valid_job_id(job_id: str) -> bool:
    return isinstance(job_id, str) and _JOB_ID.fullmatch(job_id) is not None


def job_dir(root: Path, job_id: str) -> Path:
    if not valid_job_id(job_id):
        raise ValueError("invalid job id")
    return Path(root) / job_id


def open_artifact(root: Path, job_id: str, name: str) -> Path | None:
    """The artifact's path, or None when the name is not allowed or no such regular file exists."""
    if not valid_job_id(job_id) or not valid_name(name):
        return None
    folder = Path(root) / job_id
    path = folder / name
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):  # symlinks and anything that is not a plain file
        return None
    if path.resolve().parent != folder.resolve():
        return None
    return path


def list_artifacts(root: Path, job_id: str) -> list[str]:
    """Names of the artifacts a job has now, sorted."""
    folder = job_dir(root, job_id)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if valid_name(p.name) and p.is_file() and not p.is_symlink())


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
