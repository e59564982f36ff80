"""Server-chosen artifact names and their files (docs/RELIABILITY.md §2: no path ever comes from a client).

A client names an artifact by one of the names the engine writes (backend/protocol.py); anything else
is "not found" before the file system is touched. The resolved path must be a regular file (not a symlink)
directly inside the job's folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from backend.protocol import is_artifact_name

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
MEDIA_TYPES = {".ply": "application/octet-stream", ".glb": "model/gltf-binary", ".png": "image/png",
               ".gif": "image/gif", ".json": "application/json"}


def valid_name(name: str) -> bool:
    """Whether `name` is one the engine writes (backend/protocol.py: final artifacts and numbered intermediates)."""
    return is_artifact_name(name)


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
