"""addon/request.py builds, from /v1/presets data and panel values, a JobConfig the backend accepts."""

from __future__ import annotations

import json

import pytest

from addon import request
from backend import config, presets
from backend.core.settings import ConfigError


def presets_payload() -> list[dict]:
    """What GET /v1/presets returns (the server's own function), through JSON."""
    return json.loads(json.dumps(presets.payload()))


PRESETS = presets_payload()


@pytest.mark.parametrize("preset", PRESETS, ids=[p["name"] for p in PRESETS])
def test_defaults_round_trip_to_the_preset(preset):
    built = request.build_config(preset, prompt="a red duck", seed=3)
    cfg = config.from_dict(json.loads(json.dumps(built)))
    expected = presets.get(preset["name"])
    expected.prompt, expected.seed = "a red duck", 3
    assert config.to_dict(cfg) == config.to_dict(expected)


@pytest.mark.parametrize("preset", PRESETS, ids=[p["name"] for p in PRESETS])
def test_changed_values_steps_and_points_reach_the_config(preset):
    editable = {s["key"]: s for s in request.editable_settings(preset)}
    key = next(k for k, s in editable.items() if s["kind"] == "float" and s["hi"] is not None)
    s = editable[key]
    value = (s["lo"] + s["hi"]) / 2 if s["lo"] is not None else s["hi"] / 2
    pts = [[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, -0.3]]
    seeds_from_points = any(s["key"] == "stages.0.representation.init_points" for s in preset["settings"])
    if not seeds_from_points:  # NeRF-first presets: a seed object is refused by name, before any request
        with pytest.raises(request.RequestError, match="seed object"):
            request.build_config(preset, prompt="a mug", init_points=pts)
    built = request.build_config(preset, prompt="a mug", negative_prompt="blurry", steps=300, values={key: value},
                                 init_points=pts if seeds_from_points else None)
    cfg = config.from_dict(built)
    assert config.to_dict(cfg)["negative_prompt"] == "blurry"
    assert cfg.total_steps == 300
    flat = {x.key: x.default for x in config.settings_of(cfg)}
    assert flat[key] == pytest.approx(value)
    if seeds_from_points:
        assert cfg.stages[0].representation.init == "points"
        assert cfg.stages[0].representation.init_points == pts


def test_switching_a_family_takes_that_kinds_defaults():
    preset = PRESETS[0]
    choices = request.family_choices(preset, "method")
    assert "sds" in choices
    built = request.build_config(preset, prompt="a mug", families={"method": "sds"})
    config.from_dict(built)
    with pytest.raises(request.RequestError, match=r"unknown method 'nope'"):
        request.build_config(preset, prompt="a mug", families={"method": "nope"})


def test_bad_panel_values_name_the_field():
    preset = PRESETS[0]
    with pytest.raises(request.RequestError, match="prompt"):
        request.build_config(preset, prompt="  ")
    with pytest.raises(request.RequestError, match=r"stages\.0\.nope"):
        request.build_config(preset, prompt="a mug", values={"stages.0.nope": 1})
    with pytest.raises(request.RequestError, match="two numbers"):
        request.coerce_text("stages.0.camera.fovy_range", "pair", "40")
    assert request.coerce_text("k", "pair", "40, 70") == [40.0, 70.0]
    assert request.coerce_text("k", "schedule", "[0, 0.98, 0.4, 0.8]") == [0, 0.98, 0.4, 0.8]
    assert request.value_text("schedule", [0.0, 0.98, 0.4, 0.8]) == "[0.0, 0.98, 0.4, 0.8]"
    # out-of-range values pass through to the backend, which names the field and its range
    built = request.build_config(preset, prompt="a mug", values={"stages.0.method.guidance_scale": -1.0})
    with pytest.raises(ConfigError, match=r"stages.0.method.guidance_scale.*allowed"):
        config.from_dict(built)


def test_rescale_keeps_proportions():
    values = {"stages.0.steps": 300, "stages.1.steps": 100}
    request.rescale_steps(values, 1000)
    assert values == {"stages.0.steps": 750, "stages.1.steps": 250}
