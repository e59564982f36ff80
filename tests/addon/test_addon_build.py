"""`python build.py` on a fresh clone: Blender's validator ships inside the bpy wheel, which a fresh clone does
not have, so build.py runs scripts/bootstrap_blender.sh itself before building."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import build  # noqa: E402


def _fresh_clone(dest: Path) -> None:
    """The committed and working-tree files of the add-on's build inputs, without .venv-blender or dist/."""
    for name in ("addon", "backend", "scripts", "blender_manifest.toml", "pyproject.toml", "build.py", "README.md"):
        src = ROOT / name
        buf = BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=name, filter=lambda t: None if "__pycache__" in t.name else t)
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            tar.extractall(dest, filter="data")


def test_build_sets_up_the_validator_on_a_fresh_clone(tmp_path):
    real_tool = build.find_blender_ext()  # the one .venv-blender has (scripts/test.sh creates it)
    clone = tmp_path / "clone"
    _fresh_clone(clone)
    assert not (clone / ".venv-blender").exists()
    # Stand-in for the 1 GB bpy download: the bootstrap script places the real tool where the wheel puts it.
    cli = ".venv-blender/lib/python3.11/site-packages/bpy/5.0/scripts/addons_core/bl_pkg/cli"
    (clone / "scripts" / "bootstrap_blender.sh").write_text(
        f"#!/usr/bin/env bash\nset -e\ncd \"$(dirname \"$0\")/..\"\nmkdir -p {cli}\n"
        f"cp {real_tool} {cli}/blender_ext.py\necho bootstrapped\n")
    env = {k: v for k, v in os.environ.items() if k != "DISTILLERY_BLENDER_EXT"}
    python = str(ROOT / ".venv" / "bin" / "python")  # an interpreter without bpy, as on a fresh machine
    refused = subprocess.run([python, "build.py", "--no-bootstrap"], cwd=clone, capture_output=True, text=True,
                             env=env, timeout=300)
    assert refused.returncode == 1 and "bootstrap_blender.sh" in refused.stderr
    proc = subprocess.run([python, "build.py"], cwd=clone, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "running scripts/bootstrap_blender.sh" in proc.stdout and "bootstrapped" in proc.stdout
    assert list((clone / "dist").glob("distillery-*.zip"))
