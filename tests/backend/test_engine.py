"""The engine loop: events, exact resume from a checkpoint, non-finite handling, cancellation, presets."""

import json

import numpy as np
import pytest
import torch

from backend import presets
from backend.config import apply_overrides
from backend.engine import checkpoint
from backend.engine.loop import MAX_ROLLBACKS, Cancelled, Diverged, run_job
from backend.io.ply import read_gaussian_ply
from backend.methods.sds import SDS


def small_job(steps=24, **sets):
    cfg = presets.get(presets.DEFAULT_PRESET)
    base = {"prompt": "a red duck", "seed": 7, "stages.0.steps": steps, "output.preview_every": 0,
            "output.snapshot_every": 0, "output.checkpoint_every": 0, "output.turntable_frames": 0,
            "output.evaluate": False, "representation.init_count": 300, "camera.views": 2,
            "camera.resolution": 32}
    return apply_overrides(cfg, {**base, **sets})


def test_events_and_final_artifacts(tmp_path):
    cfg = small_job(steps=12, **{"output.snapshot_every": 5, "output.preview_every": 5,
                                 "output.turntable_frames": 4, "output.evaluate": True})
    events = []
    result = run_job(cfg, tmp_path, emit=events.append, job_id="j1")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "status" and events[0]["state"] == "running" and events[0]["renderer"] == "torch"
    assert "pure torch" in events[0]["renderer_note"]  # the fallback is announced, never silent
    assert kinds[-1] == "result" and all(e["job_id"] == "j1" for e in events)
    steps = [e["global_step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 12
    snaps = [e for e in events if e["type"] == "snapshot"]
    assert [s["step"] for s in snaps] == [5, 10] and all(s["kind"] == "gaussians" for s in snaps)
    assert (tmp_path / snaps[-1]["artifact"]).is_file()
    assert any(e["type"] == "preview" for e in events)
    for name in ("asset.ply", "asset.glb", "preview.png", "turntable.gif", "turntable.png", "result.json"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["prompt"] == "a red duck" and saved["seed"] == 7
    assert set(saved["metrics"]) == {"psnr", "mask_iou", "view_accuracy", "aligned_view_accuracy",
                                     "alignment_azimuth", "multi_face_rate"}
    assert result["count"] == len(read_gaussian_ply(tmp_path / "asset.ply")["x"])
    # The Gaussians also come as a textured mesh, listed with the final artifacts.
    assert saved["artifacts"]["asset_glb"] == "asset.glb" and events[-1]["artifacts"]["asset_glb"] == "asset.glb"
    assert saved["mesh"]["faces"] > 0


def test_output_mesh_off_writes_no_glb(tmp_path):
    result = run_job(small_job(steps=2, **{"output.mesh": False}), tmp_path)
    assert (tmp_path / "asset.ply").is_file() and not (tmp_path / "asset.glb").exists()
    assert "asset_glb" not in result["artifacts"] and result["mesh"] is None


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    # Densify every 4 steps so the resumed run crosses Gaussian-count changes and optimiser surgery.
    sets = {"output.checkpoint_every": 6, "representation.densify_every": 4, "representation.densify_from": 0.0,
            "representation.densify_until": 1.0, "representation.densify_grad_threshold": 0.0005,
            "representation.opacity_reset_every": 8}
    full = run_job(small_job(**sets), tmp_path / "a")
    calls = {"n": 0}

    def cancel_after_15():
        calls["n"] += 1
        return calls["n"] >= 15

    with pytest.raises(Cancelled):
        run_job(small_job(**sets), tmp_path / "b", should_cancel=cancel_after_15)
    assert checkpoint.latest(tmp_path / "b" / "checkpoints").name == "ckpt-00000011"
    events = []
    resumed = run_job(small_job(**sets), tmp_path / "b", emit=events.append)
    assert events[0]["state"] == "resumed"
    a, b = read_gaussian_ply(tmp_path / "a" / "asset.ply"), read_gaussian_ply(tmp_path / "b" / "asset.ply")
    assert full["count"] == resumed["count"]
    assert full["count"] != 300  # densification really changed the count along the way
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_isolated_non_finite_steps_are_skipped(tmp_path, monkeypatch):
    real = SDS.losses

    def sometimes_nan(self, out, cams, cond, step):
        terms = real(self, out, cams, cond, step)
        if step in (3, 4):
            terms["sds"] = terms["sds"] * float("nan")
        return terms

    monkeypatch.setattr(SDS, "losses", sometimes_nan)
    events = []
    run_job(small_job(steps=10), tmp_path, emit=events.append)
    warnings = [e for e in events if e["type"] == "warning"]
    assert [w["code"] for w in warnings] == ["NON_FINITE", "NON_FINITE"]
    asset = read_gaussian_ply(tmp_path / "asset.ply")
    assert all(np.isfinite(v).all() for v in asset.values())


def test_persistent_non_finite_rolls_back_then_fails(tmp_path, monkeypatch):
    real = SDS.losses

    def nan_from_step_6(self, out, cams, cond, step):
        terms = real(self, out, cams, cond, step)
        if step >= 6:
            terms["sds"] = terms["sds"] * float("nan")
        return terms

    monkeypatch.setattr(SDS, "losses", nan_from_step_6)
    events = []
    with pytest.raises(Diverged, match="rollbacks"):
        run_job(small_job(steps=40, **{"output.checkpoint_every": 4}), tmp_path, emit=events.append)
    rollbacks = [e for e in events if e["type"] == "warning" and e["code"] == "ROLLBACK"]
    assert len(rollbacks) == MAX_ROLLBACKS
    assert "step 8" in rollbacks[0]["message"] and "x0.5" in rollbacks[0]["message"]  # newest checkpoint: after step 7
    assert "x0.125" in rollbacks[-1]["message"]


def test_cancel_stops_at_the_next_step(tmp_path):
    with pytest.raises(Cancelled) as err:
        run_job(small_job(steps=50), tmp_path, should_cancel=lambda: True)
    assert err.value.step == 0


@pytest.mark.parametrize("name", [n for n in presets.names() if not presets.PRESETS[n].needs_gpu])
def test_every_cpu_preset_runs_a_few_steps(tmp_path, name):
    cfg = apply_overrides(presets.get(name), {"output.turntable_frames": 0, "output.evaluate": False})
    cfg = cfg.with_total_steps(3 * len(cfg.stages))
    result = run_job(cfg, tmp_path)
    assert result["count"] > 0 and (tmp_path / "asset.ply").is_file()


def test_sds_on_the_reference_prior_moves_a_render_towards_its_reference():
    """Optimise an image directly with SDS at the front view: it must approach the front reference."""
    from backend.config import ReferencePriorConfig, SDSConfig
    from backend.core.cameras import orbit_cameras
    from backend.priors.reference.cache import REFERENCE_DISTANCE, REFERENCE_FOVY
    from backend.priors.reference.prior import ReferencePrior

    prior = ReferencePrior(ReferencePriorConfig(view_conditioning="camera", camera_neighbours=1))
    cams = orbit_cameras([15.0], [0.0], REFERENCE_DISTANCE, REFERENCE_FOVY, 64)
    cond = prior.condition("a blue mug", "", cams)
    target = (prior.references(cond, 0)[0].permute(1, 2, 0) + 1) / 2  # [64, 64, 3]
    img = torch.full((1, 64, 64, 3), 0.5, requires_grad=True)
    sds = SDS(SDSConfig(guidance_scale=7.5), prior, 300, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([img], lr=0.02)
    start = (img.detach()[0] - target).pow(2).mean().item()
    for step in range(300):
        from backend.core.outputs import RenderOutput

        out = RenderOutput(rgb=img, alpha=torch.ones(1, 64, 64, 1))
        loss = sds.losses(out, cams, cond, step)["sds"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
    end = (img.detach()[0] - target).pow(2).mean().item()
    assert end < 0.1 * start, (start, end)
