"""Every preset's guidance scale is its reference value converted to the project's one CFG form
(docs/METHODS.md §1.2)."""

from __future__ import annotations

import pytest

from backend import presets


def test_threestudio_100_is_101_here():
    assert presets.project_guidance_scale(100, "T") == 101
    assert presets.project_guidance_scale(20, "T") == 21  # threestudio dreamfusion-if
    assert presets.project_guidance_scale(7.5, "D") == 7.5  # VSD / ASD / LucidDreamer
    with pytest.raises(ValueError, match="form"):
        presets.project_guidance_scale(7.5, "X")


@pytest.mark.parametrize("name", sorted(presets.REFERENCE_GUIDANCE))
def test_preset_guidance_is_the_converted_reference(name):
    value, form, _ = presets.REFERENCE_GUIDANCE[name]
    cfg = presets.get(name)
    assert cfg.stages[0].method.guidance_scale == presets.project_guidance_scale(value, form)


def test_every_real_prior_preset_has_a_reference_and_a_quick_variant():
    for name, p in presets.PRESETS.items():
        if name.endswith("-quick"):
            assert presets.get(name).stages[0].prior.name == "reference"
            continue
        assert p.needs_gpu and name in presets.REFERENCE_GUIDANCE
        assert f"{name}-quick" in presets.PRESETS, name
