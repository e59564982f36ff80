#!/usr/bin/env python3
"""Build the Blender extension zip: `python build.py` -> dist/distillery-<version>.zip.

The zip holds the add-on (addon/ at the zip's root, with blender_manifest.toml) and the embedded backend
package under backend_embed/ (with pyproject.toml, which the managed environment installs its requirements
from). It is built and then validated by Blender's own extension tool, `blender_ext.py`, the standalone script
inside the `bpy` wheel (bpy/<ver>/scripts/addons_core/bl_pkg/cli/blender_ext.py), run with plain Python.

    python build.py            build and validate
    python build.py --check    validate the staged sources only (no zip)

The tool is looked up in --blender-ext, $DISTILLERY_BLENDER_EXT, this interpreter's site-packages and
.venv-blender. On a fresh clone none of these has it, so build.py runs scripts/bootstrap_blender.sh first
(it creates .venv-blender with the bpy wheel: Python 3.11, about 1 GB, once); --no-bootstrap turns that off.
"""

from __future__ import annotations

import argparse
import glob
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
EXCLUDE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")


class BuildError(RuntimeError):
    pass


def versions() -> dict[str, str]:
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    init = (ROOT / "backend" / "__init__.py").read_text()
    m = re.search(r'__version__\s*=\s*"([^"]+)"', init)
    return {"blender_manifest.toml": manifest["version"], "pyproject.toml": project["version"],
            "backend/__init__.py": m.group(1) if m else "?"}


def find_blender_ext(explicit: str | None = None) -> Path:
    import os

    cands = [explicit, os.environ.get("DISTILLERY_BLENDER_EXT")]
    for site in {sysconfig.get_paths()["purelib"], *sys.path}:
        cands += sorted(glob.glob(f"{site}/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"), reverse=True)
    cands += sorted(glob.glob(str(ROOT / ".venv-blender/lib/python3*/site-packages/bpy/*/scripts/addons_core/"
                                        "bl_pkg/cli/blender_ext.py")), reverse=True)
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    raise BuildError("Blender's extension tool (blender_ext.py from the bpy wheel) was not found; run "
                     "./scripts/bootstrap_blender.sh or pass --blender-ext PATH")


def bootstrap() -> None:
    """Create .venv-blender (the bpy wheel, which carries blender_ext.py) with scripts/bootstrap_blender.sh."""
    script = ROOT / "scripts" / "bootstrap_blender.sh"
    print("Blender's extension tool is not installed yet: running scripts/bootstrap_blender.sh "
          "(creates .venv-blender with the bpy wheel, about 1 GB, once)", flush=True)
    proc = subprocess.run(["bash", str(script)], cwd=ROOT)
    if proc.returncode != 0:
        raise BuildError(f"scripts/bootstrap_blender.sh failed (exit code {proc.returncode}); see its message above")


def stage(dest: Path) -> Path:
    """Lay out the extension's files in `dest` (a fresh folder) and return it."""
    shutil.copytree(ROOT / "addon", dest, ignore=EXCLUDE)
    shutil.copy2(ROOT / "blender_manifest.toml", dest / "blender_manifest.toml")
    embed = dest / "backend_embed"
    shutil.copytree(ROOT / "backend", embed / "backend", ignore=EXCLUDE)
    shutil.copy2(ROOT / "pyproject.toml", embed / "pyproject.toml")
    for name in ("README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, embed / name)
    return dest


def run_tool(tool: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "error" in out.lower():
        raise BuildError(f"blender_ext.py {args[0]} failed:\n{out}")
    return out


def build(output_dir: Path, tool: Path, check_only: bool = False) -> Path | None:
    found = versions()
    if len(set(found.values())) != 1:
        raise BuildError("versions disagree: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    version = found["blender_manifest.toml"]
    with tempfile.TemporaryDirectory(prefix="distillery-build-") as tmp:
        src = stage(Path(tmp) / "distillery")
        print(run_tool(tool, "validate", str(src)))
        if check_only:
            return None
        output_dir.mkdir(parents=True, exist_ok=True)  # 4.2's tool needs it to exist
        target = output_dir / f"distillery-{version}.zip"
        target.unlink(missing_ok=True)
        print(run_tool(tool, "build", "--source-dir", str(src), "--output-dir", str(output_dir)))
    if not target.is_file():
        raise BuildError(f"the build did not write {target}")
    print(run_tool(tool, "validate", str(target)))
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only validate the staged sources")
    p.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    p.add_argument("--blender-ext", default=None, help="path to blender_ext.py")
    p.add_argument("--no-bootstrap", action="store_true", help="fail instead of creating .venv-blender")
    args = p.parse_args(argv)
    try:
        try:
            tool = find_blender_ext(args.blender_ext)
        except BuildError:
            if args.no_bootstrap or args.blender_ext:
                raise
            bootstrap()
            tool = find_blender_ext(args.blender_ext)
        target = build(args.output_dir, tool, args.check)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("valid" if target is None else f"built {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
