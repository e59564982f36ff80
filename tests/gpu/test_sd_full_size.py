"""Full-size Stable Diffusion 2.1-base architecture with random weights (no download) on the GPU: one SDS
iteration at 512 px in fp16 (UNet pair, VAE encode + backward, render, optimiser), timed by the engine's
phase timings and printed for docs/PERFORMANCE.md. Run with `pytest -m gpu -s tests/gpu/test_sd_full_size.py`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from backend import presets
from backend.config import apply_overrides
from backend.engine.loop import run_job
from backend.engine.stage import Timings

pytestmark = pytest.mark.gpu


def _config(preset: str, steps: int):
    cfg = apply_overrides(presets.get(preset), {
        "device": "cuda", "prior.model": "random:sd21-base", "prior.dtype": "fp16", "camera.views": 1,
        "camera.resolution": 512, "camera.resolution_final": 0, "output.preview_every": 0,
        "output.snapshot_every": 0, "output.checkpoint_every": 0, "output.turntable_frames": 0,
        "output.evaluate": False})
    if preset != "gaussian-sds":
        cfg = apply_overrides(cfg, {"method.particle_model": ""})
    return cfg.with_total_steps(steps)


@pytest.mark.parametrize("preset", ["gaussian-sds", "prolificdreamer"])
def test_full_size_sd21_base_iteration_fp16_512(preset):
    assert torch.cuda.is_available()
    timings = Timings(sync=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_job(_config(preset, 8), Path(tmp), timings=timings, resume=False)
    med = timings.medians(skip=3)
    print(f"\n{preset} full-size SD 2.1-base (random weights) fp16, 1 view at 512 px on "
          f"{torch.cuda.get_device_name(0)}: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in med.items())
          + f"; peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    assert result["count"] > 0 and med["step"] > 0
    assert all(len(row) >= 4 for row in timings.history)  # render, prior, method, backward, optimiser booked


def test_full_size_unet_and_vae_dtypes_and_lora_count():
    from backend.config import StableDiffusionPriorConfig
    from backend.priors.base import ParticleOptions
    from backend.priors.stable_diffusion import StableDiffusionPrior

    p = StableDiffusionPrior(StableDiffusionPriorConfig(model="random:sd21-base"), "cuda")
    p.prepare("a mug", "")
    assert p.unet.dtype == torch.float16 and p.vae.dtype == torch.float16
    phi = p.trainable_copy(ParticleOptions())
    assert phi.lora_parameter_count() == 829_952
    assert sum(q.numel() for q in phi.camera_mlp.parameters()) == 1_661_440
