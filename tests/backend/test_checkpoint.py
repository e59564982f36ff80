"""Atomic checkpoints: only marked directories load; the previous one survives until the next is marked."""

import os

import pytest
import torch

from backend.engine import checkpoint


def test_save_load_and_keep(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, step, {"w": torch.full((3,), float(step))}, {"step": step}, keep=2)
    names = [p.name for p in checkpoint.marked(tmp_path)]
    assert names == ["ckpt-00000020", "ckpt-00000030"]
    state, meta = checkpoint.load(checkpoint.latest(tmp_path))
    assert meta["step"] == 30 and torch.equal(state["w"], torch.full((3,), 30.0))


def test_unmarked_directory_is_ignored_and_refused(tmp_path):
    checkpoint.save(tmp_path, 5, {"w": torch.zeros(1)}, {"step": 5})
    partial = tmp_path / "ckpt-00000009"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"truncated")
    assert checkpoint.latest(tmp_path).name == "ckpt-00000005"
    with pytest.raises(checkpoint.CheckpointError, match="_SUCCESS"):
        checkpoint.load(partial)


def test_leftover_temporaries_are_cleaned(tmp_path):
    (tmp_path / ".tmp-ckpt-00000001-123").mkdir()
    checkpoint.clean_temporaries(tmp_path)
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_kill_before_marker_keeps_previous(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 1, {"w": torch.ones(1)}, {"step": 1})
    real_write = checkpoint._write_file

    def dying_write(path, data):
        if path.name == checkpoint.MARKER:
            raise OSError("killed before the marker")
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", dying_write)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 2, {"w": torch.full((1,), 2.0)}, {"step": 2})
    _, meta = checkpoint.load(checkpoint.latest(tmp_path))
    assert meta["step"] == 1 and os.path.isdir(tmp_path / "ckpt-00000002")  # present but unmarked, so unused


def test_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    d = tmp_path / "ckpt-00000001"
    d.mkdir()
    torch.save({"x": Evil()}, d / "state.pt")
    (d / "meta.json").write_text("{}")
    (d / checkpoint.MARKER).write_text("ok")
    with pytest.raises(Exception, match=r"(?i)weights_only|unpickl|global"):
        checkpoint.load(d)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------- verification


def _save_three(root):
    for step in (10, 20):
        checkpoint.save(root, step, {"w": torch.full((64,), float(step))}, {"step": step}, keep=3)
    return checkpoint.latest(root)


def test_a_corrupted_checkpoint_is_refused_and_skipped_for_the_older_good_one(tmp_path):
    newest = _save_three(tmp_path)
    data = bytearray((newest / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data, same size
    (newest / "state.pt").write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.load(newest)
    skipped = []
    _, state, meta = checkpoint.newest_good(tmp_path, on_skip=lambda p, why: skipped.append((p.name, why)))
    assert meta["step"] == 10 and torch.equal(state["w"], torch.full((64,), 10.0))
    assert skipped and skipped[0][0] == "ckpt-00000020" and "checksum" in skipped[0][1]
    assert not newest.exists()  # never returned to again


def test_a_truncated_checkpoint_is_skipped_for_the_older_good_one(tmp_path):
    newest = _save_three(tmp_path)
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 3])
    skipped = []
    _, _, meta = checkpoint.newest_good(tmp_path, on_skip=lambda p, why: skipped.append(why))
    assert meta["step"] == 10 and "truncated" in skipped[0]


def test_non_finite_state_is_never_saved_and_never_loaded(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": torch.ones(2)}, {"step": 1})
    with pytest.raises(checkpoint.CheckpointError, match="non-finite"):
        checkpoint.save(tmp_path, 2, {"rep": {"w": torch.tensor([1.0, float("nan")])}}, {"step": 2})
    assert [p.name for p in checkpoint.marked(tmp_path)] == ["ckpt-00000001"]
    # A checkpoint written by something else with NaN inside (and a legacy marker) is refused at load.
    d = tmp_path / "ckpt-00000003"
    d.mkdir()
    torch.save({"w": torch.tensor([float("inf")])}, d / "state.pt")
    (d / "meta.json").write_text('{"step": 3}')
    (d / checkpoint.MARKER).write_text("ok\n")
    _, _, meta = checkpoint.newest_good(tmp_path)
    assert meta["step"] == 1


def test_a_resave_at_the_same_step_keeps_the_good_one_until_the_new_one_verifies(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 5, {"w": torch.ones(8)}, {"step": 5})
    real_verify = checkpoint.verify

    def corrupting_verify(path):  # the disk corrupts the new state.pt between its write and the read-back
        data = bytearray((path / "state.pt").read_bytes())
        data[-20] ^= 0xFF
        (path / "state.pt").write_bytes(bytes(data))
        real_verify(path)

    monkeypatch.setattr(checkpoint, "verify", corrupting_verify)
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.save(tmp_path, 5, {"w": torch.full((8,), 2.0)}, {"step": 5, "second": True})
    monkeypatch.undo()
    checkpoint.clean_temporaries(tmp_path)  # what the next run does first
    _, state, meta = checkpoint.newest_good(tmp_path)
    assert "second" not in meta and torch.equal(state["w"], torch.ones(8))
