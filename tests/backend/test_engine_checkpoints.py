"""Verified checkpoints in the engine loop: a damaged checkpoint is skipped for the newest good one, a
diverged state is never checkpointed, every stage ends with a checkpoint, and a cancel during the final writes
is honoured."""

import pytest
import torch

from backend import presets
from backend.config import apply_overrides
from backend.engine import checkpoint
from backend.engine.loop import Cancelled, Diverged, run_job
from backend.methods.sds import SDS


def small_job(steps=12, **sets):
    base = {"prompt": "a red duck", "seed": 7, "stages.0.steps": steps, "output.preview_every": 0,
            "output.snapshot_every": 0, "output.checkpoint_every": 4, "output.turntable_frames": 0,
            "output.evaluate": False, "representation.init_count": 200, "camera.views": 1,
            "camera.resolution": 16, "output.preview_resolution": 32, "output.preview_views": 1}
    return apply_overrides(presets.get(presets.DEFAULT_PRESET), {**base, **sets})


def cancel_after(n):
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        return calls["n"] >= n

    return check


def test_a_job_shorter_than_the_interval_still_ends_each_stage_with_a_checkpoint(tmp_path):
    run_job(small_job(steps=6, **{"output.checkpoint_every": 200}), tmp_path)
    names = [p.name for p in checkpoint.marked(tmp_path / "checkpoints")]
    assert names == ["ckpt-00000005"]  # the stage's last step (global step 5 of 0..5)


def _interrupted(tmp_path, steps=12, stop_at=11):
    with pytest.raises(Cancelled):
        run_job(small_job(steps=steps), tmp_path, should_cancel=cancel_after(stop_at))
    return checkpoint.marked(tmp_path / "checkpoints")


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "nan"])
def test_resume_skips_a_damaged_newest_checkpoint_for_the_older_good_one(tmp_path, damage):
    ckpts = _interrupted(tmp_path)
    assert [p.name for p in ckpts] == ["ckpt-00000003", "ckpt-00000007"]
    newest = ckpts[-1] / "state.pt"
    if damage == "corrupt":
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0x55
        newest.write_bytes(bytes(data))
    elif damage == "truncate":
        newest.write_bytes(newest.read_bytes()[:100])
    else:  # NaN inside, written with a matching checksum (as a diverged writer would)
        state = torch.load(newest, weights_only=True)
        state["rep"]["xyz"][0, 0] = float("nan")
        torch.save(state, newest)
        (ckpts[-1] / checkpoint.MARKER).write_text("ok\n")
    events = []
    result = run_job(small_job(), tmp_path, emit=events.append)
    skipped = [e for e in events if e["type"] == "warning" and e["code"] == "CHECKPOINT_SKIPPED"]
    assert len(skipped) == 1 and "ckpt-00000007" in skipped[0]["message"]
    resumed = next(e for e in events if e["type"] == "status")
    assert resumed["state"] == "resumed" and "from step 4" in resumed["message"]  # after the good step 3
    assert result["count"] > 0 and (tmp_path / "asset.ply").is_file()


def test_a_diverged_state_is_never_checkpointed_and_the_good_one_survives(tmp_path, monkeypatch):
    real = SDS.losses

    def poison_params_from_step_5(self, out, cams, cond, step):
        terms = real(self, out, cams, cond, step)
        if step >= 5:  # a finite loss whose gradient writes NaN into the parameters
            out.rgb.register_hook(lambda g: torch.full_like(g, float("nan")))
        return terms

    monkeypatch.setattr(SDS, "losses", poison_params_from_step_5)
    events = []
    with pytest.raises(Diverged):
        run_job(small_job(steps=40), tmp_path, emit=events.append)
    good = checkpoint.newest_good(tmp_path / "checkpoints")
    assert good is not None and good[2]["step"] == 3  # the last finite state is still there
    rollbacks = [e for e in events if e["type"] == "warning" and e["code"] == "ROLLBACK"]
    assert rollbacks and all("step 4" in r["message"] for r in rollbacks)


def test_cancel_during_the_final_writes_ends_cancelled_without_a_result(tmp_path):
    # 6 steps take 6 checks; the 7th check is the first one of the final-writes phase.
    with pytest.raises(Cancelled) as err:
        run_job(small_job(steps=6, **{"output.turntable_frames": 4}), tmp_path, should_cancel=cancel_after(7))
    assert err.value.step == 6
    assert not (tmp_path / "result.json").exists()
