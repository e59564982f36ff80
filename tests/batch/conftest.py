"""Shared pieces of the batch tests: short jobs of the quick preset, and reference sets rendered once."""

import json
from pathlib import Path

import pytest

PRESET = "gaussian-sds-quick"
# Short jobs: few steps, small renders, a 4-frame turntable, a checkpoint every 5 steps (the kill test needs one).
SETTINGS = ["stages.0.steps=20", "stages.0.camera.views=2", "stages.0.representation.init_count=500",
            "output.preview_every=0", "output.snapshot_every=0", "output.checkpoint_every=5",
            "output.turntable_frames=4", "output.preview_resolution=64"]


@pytest.fixture(scope="session")
def warm_references():
    """Render the reference sets the jobs use once, in this process, before workers start (they share the
    test session's cache; otherwise every worker would render them at the same time)."""
    from backend import presets, registry

    cfg = presets.get(PRESET)
    prior = registry.resolve(registry.PRIORS, "reference")(cfg.stages[0].prior, "cpu")
    prior.prepare("a blue mug", "")
    prior.prepare("a red duck", "")


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("# batch test prompts\n\n" + "\n".join(prompts) + "\n")
    return path


def read_rows(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {r["prompt"]: r for r in rows}
