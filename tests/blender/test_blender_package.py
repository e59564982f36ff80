"""Packaging: build.py's zip passes Blender's validator, installs with Blender's installer and enables;
register/unregister twice leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import threading
import zipfile

import bpy
import pytest
from conftest import PKG, ROOT, enabled

sys.path.insert(0, str(ROOT))
import build


def test_check_validates_without_writing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--check", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_zip_holds_the_addon_and_the_embedded_backend(built_zip):
    names = set(zipfile.ZipFile(built_zip).namelist())
    assert built_zip.name == f"distillery-{build.versions()['pyproject.toml']}.zip"
    for required in ("blender_manifest.toml", "__init__.py", "runtime.py", "scene_sync.py", "client/ply.py",
                     "backend_embed/backend/__init__.py", "backend_embed/backend/cli.py",
                     "backend_embed/pyproject.toml"):
        assert required in names, required
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_validator_rejects_a_bad_manifest(tmp_path):
    src = build.stage(tmp_path / "src")
    manifest = (src / "blender_manifest.toml").read_text()
    (src / "blender_manifest.toml").write_text(manifest.replace("live in your scene", "live in your scene."))
    with pytest.raises(build.BuildError, match="punctuation"):
        build.run_tool(build.find_blender_ext(), "validate", str(src))


def test_installed_extension_is_enabled_and_registered(ext):
    assert enabled()
    assert ext.module.__name__ == PKG
    assert hasattr(bpy.types.Scene, "distillery")
    for name in ("DISTILLERY_PT_main", "DISTILLERY_OT_generate", "DISTILLERY_OT_import_ply"):
        assert hasattr(bpy.types, name), name
    prefs = bpy.context.preferences.addons[PKG].preferences
    assert prefs.mode == "LAUNCH"
    # the add-on found its embedded backend inside the installed extension
    assert ext.launcher.embedded_root().name == "backend_embed"
    assert bpy.app.timers.is_registered(ext.runtime.pump)


def _footprint(ext) -> dict:
    return {
        "types": sorted(n for n in dir(bpy.types) if n.startswith("DISTILLERY_")),
        "scene": hasattr(bpy.types.Scene, "distillery"),
        "timer": bpy.app.timers.is_registered(ext.runtime.pump),
        "handlers": [h for h in bpy.app.handlers.load_post if "distillery" in getattr(h, "__module__", "")],
        "threads": [t.name for t in threading.enumerate() if t.name.startswith("distillery")],
        "menus": [f for f in getattr(bpy.types.TOPBAR_MT_file_import.draw, "_draw_funcs", [])
                  if "distillery" in getattr(f, "__module__", "")],
        "runtime": ext.runtime.RUNTIME is not None,
    }


def test_register_unregister_twice_leaves_nothing_behind(addon, presets_payload):
    import addon_utils

    first = _footprint(addon)
    assert first["scene"] and first["timer"] and first["runtime"] and first["types"]
    for _ in range(2):
        addon.properties.sync_presets(presets_payload)  # dynamic classes must go too
        addon_utils.disable(PKG, default_set=True)
        gone = _footprint(addon)
        assert gone == {"types": [], "scene": False, "timer": False, "handlers": [], "threads": [], "menus": [],
                        "runtime": False}
        assert [p.identifier for p in bpy.types.Scene.bl_rna.properties if p.identifier.startswith("distillery")] == []
        addon_utils.enable(PKG, default_set=True)
        again = _footprint(addon)
        assert again == first
