"""Shared pieces of the batch tests: short jobs of the quick preset, and reference sets rendered once."""

import json
import os
import signal
import threading
import time
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


def kill_after_first_checkpoint(folder: Path, killed: dict, stop: threading.Event) -> None:
    """SIGKILL the process running the job (its pid is in runner.json) once it has written a checkpoint."""
    while not stop.is_set():
        info = folder / "runner.json"
        if info.is_file() and list((folder / "checkpoints").glob("ckpt-*/_SUCCESS")):
            pid = json.loads(info.read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
            return
        time.sleep(0.05)
