"""VSD and ESD on the reference prior converge: the final asset's mask IoU against the prompt's references is at
least 0.8 after a small budget (the quick presets with fewer steps and views)."""

from __future__ import annotations

import pytest

from backend import presets
from backend.config import apply_overrides
from backend.engine.loop import run_job

pytestmark = pytest.mark.slow

BUDGET = {"steps": 150, "views": 2}


def job_config(preset):
    return apply_overrides(presets.get(preset), {
        "prompt": "a blue mug", "seed": 0, "camera.views": BUDGET["views"], "output.preview_every": 0,
        "output.snapshot_every": 0, "output.checkpoint_every": 0, "output.turntable_frames": 0})


@pytest.mark.work(config=job_config, steps=BUDGET["steps"])
@pytest.mark.parametrize("preset", ["prolificdreamer-quick", "esd-quick"])
def test_converges_to_the_prompt_shape(preset, tmp_path):
    cfg = job_config(preset)
    events = []
    result = run_job(cfg.with_total_steps(BUDGET["steps"]), tmp_path, emit=events.append, resume=False)
    m = result["metrics"]
    assert m["mask_iou"] >= 0.8, m
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and all("lora" in e["losses"] for e in progress)  # the particle model's loss is reported
