"""Scene.distillery and to_request(): for every preset, the panel's values become a JobConfig the backend
accepts (checked by the backend's own from_dict in its own interpreter); the camera front and a seed shape."""

from __future__ import annotations

import json
import math

import bpy
import numpy as np
import pytest
from conftest import backend_python


@pytest.fixture
def synced(addon, presets_payload):
    addon.properties.sync_presets(presets_payload)
    for p in presets_payload:
        addon.properties.reset_values(bpy.context.scene, p["name"])
    return addon


def _validate(configs: list[dict]) -> list[dict]:
    """The backend's verdict on each config: its to_dict after from_dict (or the error)."""
    code = ("import json, sys; from backend import config\n"
            "out = []\n"
            "for c in json.load(sys.stdin):\n"
            "    try: out.append(config.to_dict(config.from_dict(c)))\n"
            "    except Exception as e: out.append({'error': str(e)})\n"
            "print(json.dumps(out))")
    return json.loads(backend_python(code, json.dumps(configs)))


def test_every_preset_with_edited_settings_is_accepted(synced, presets_payload):
    props, request = synced.properties, synced.request
    scene = bpy.context.scene
    s = scene.distillery
    s.prompt = "a red duck"
    s.negative_prompt = "blurry"
    s.seed = 42
    s.steps = 150
    configs, expected = [], []
    for preset in presets_payload:
        s.preset = preset["name"]
        assert s.preset_enum == preset["name"]
        group = props.preset_values(scene, preset["name"])
        edits = {}
        for x in request.editable_settings(preset):
            ident = props.setting_ident(preset["name"], x["key"])
            if x["kind"] == "float" and x["hi"] is not None and x["default"] != x["hi"] and "float" not in edits:
                value = float(x["hi"]) if x["hi"] < 1e6 else float(x["default"]) * 2 + 1
                setattr(group, ident, value)
                edits["float"] = (x["key"], getattr(group, ident))
            elif x["kind"] == "bool" and "bool" not in edits:
                setattr(group, ident, not x["default"])
                edits["bool"] = (x["key"], not x["default"])
            elif x["kind"] == "str" and x.get("choices") and len(x["choices"]) > 1 and "enum" not in edits:
                other = next(c for c in x["choices"] if c != x["default"])
                setattr(group, ident, other)
                edits["enum"] = (x["key"], other)
            elif x["kind"] == "pair" and "pair" not in edits:
                lo = x["default"][0]
                setattr(group, ident, (lo, lo))
                edits["pair"] = (x["key"], [lo, lo])
        config, placement = s.to_request(bpy.context)
        configs.append(config)
        expected.append(edits)
        assert placement["name"] == "a red duck" and placement["rotation_z"] == 0.0
    results = _validate(configs)
    for preset, result, edits in zip(presets_payload, results, expected, strict=True):
        assert "error" not in result, (preset["name"], result)
        assert (result["prompt"], result["negative_prompt"], result["seed"]) == ("a red duck", "blurry", 42)
        assert result["preset"] == preset["name"]
        assert sum(st["steps"] for st in result["stages"]) == 150
        for key, value in edits.values():
            node = result
            for part in key.split("."):
                node = node[int(part)] if isinstance(node, list) else node[part]
            assert node == pytest.approx(value), key


def test_untouched_settings_keep_the_exact_defaults(synced, presets_payload):
    s = bpy.context.scene.distillery
    s.prompt = "a mug"
    preset = presets_payload[0]
    s.preset = preset["name"]
    config, _ = s.to_request(bpy.context)
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, list) and prefix == "stages.":
            for i, v in enumerate(node):
                walk(v, f"{prefix}{i}.")
        else:
            flat[prefix[:-1]] = node

    walk(config, "")
    for x in preset["settings"]:
        if x["key"] not in ("prompt",):
            assert flat[x["key"]] == x["default"], x["key"]  # bit-exact, no float32 round trip


def test_bad_values_are_reported_with_the_field(synced, presets_payload):
    s = bpy.context.scene.distillery
    s.preset = presets_payload[0]["name"]
    s.prompt = ""
    with pytest.raises(synced.request.RequestError, match="prompt"):
        s.to_request(bpy.context)
    s.prompt = "a mug"
    s.preset = "no-such-preset"
    with pytest.raises(synced.request.RequestError, match="unknown preset"):
        s.to_request(bpy.context)
    s.preset = presets_payload[0]["name"]
    s.use_camera_front = True
    bpy.context.scene.camera = None
    s.prompt = "a mug"
    with pytest.raises(synced.request.RequestError, match="no active camera"):
        s.to_request(bpy.context)


def test_camera_front_and_seed_shape(synced, presets_payload):
    scene = bpy.context.scene
    s = scene.distillery
    s.preset = presets_payload[0]["name"]
    s.prompt = "a mug"
    scene.cursor.location = (1.0, 1.0, 0.0)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (1.0 + 3.0, 1.0, 0.5)  # on +X of the cursor: azimuth +90
    scene.camera = cam
    s.use_camera_front = True
    config, placement = s.to_request(bpy.context)
    assert placement["rotation_z"] == pytest.approx(math.pi / 2)
    assert placement["location"] == [1.0, 1.0, 0.0]
    # seed: a cube 4 units wide at (3, 0, 0); the points come in the canonical frame, radius 0.5
    bpy.ops.mesh.primitive_cube_add(size=4.0, location=(3.0, 0.0, 0.0))
    cube = bpy.context.active_object
    s.seed_object = cube
    s.seed_count = 400
    cam.location = (3.0, -5.0, 0.0)  # in front of the cube: azimuth 0
    config, placement = s.to_request(bpy.context)
    rep = config["stages"][0]["representation"]
    pts = np.array(rep["init_points"])
    assert rep["init"] == "points" and pts.shape == (400, 3)
    assert np.linalg.norm(pts, axis=1).max() == pytest.approx(0.5, abs=2e-3)
    assert placement["location"] == pytest.approx([3.0, 0.0, 0.0])
    assert placement["scale"] == pytest.approx(2 * math.sqrt(3) / 0.5, rel=0.05)
    assert placement["rotation_z"] == pytest.approx(0.0, abs=1e-9)
    result = _validate([config])[0]
    assert "error" not in result, result
    assert len(result["stages"][0]["representation"]["init_points"]) == 400
