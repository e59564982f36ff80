"""CLI faults found before the job runs, each one line on stderr with exit code 2: an output folder that is a
file, /dev/null or not writable; an output folder another run is writing (or --wait for it); --device cuda
without a GPU; integers too large for any setting; a job over the memory budget."""

import os
import threading
import time

import pytest
import torch

from backend import cli
from backend.engine import memory
from backend.engine.loop import OutputLock

TINY = ["--preset", "gaussian-sds-quick", "--steps", "2", "--quiet", "--set", "camera.resolution=16",
        "--set", "camera.views=1", "--set", "representation.init_count=100", "--set", "output.turntable_frames=0",
        "--set", "output.evaluate=false", "--set", "output.preview_resolution=32",
        "--set", "output.preview_views=1"]


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def unwritable_dir(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; /proc refuses new files to everyone
        return "/proc/self"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return str(d)


@pytest.mark.parametrize("where", ["a file", "/dev/null", "unwritable"])
def test_an_output_that_cannot_be_written_is_refused_before_the_job(tmp_path, capsys, monkeypatch, where):
    ran = []
    monkeypatch.setattr("backend.engine.loop.run_job", lambda *a, **k: ran.append(1))
    if where == "a file":
        out = tmp_path / "taken"
        out.write_text("x")
    elif where == "/dev/null":
        out = "/dev/null"
    else:
        out = unwritable_dir(tmp_path)
    code = cli.main(["generate", "a red duck", *TINY, "--out", str(out)])
    err = one_line_error(capsys)
    assert code == 2 and "--out" in err and not ran


def test_a_second_run_into_the_same_folder_exits_2_naming_the_first(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):  # the first run, still writing
        code = cli.main(["generate", "a red duck", *TINY, "--out", str(out)])
    err = one_line_error(capsys)
    assert code == 2 and f"pid {os.getpid()}" in err and "--wait" in err
    assert not (out / "asset.ply").exists()


def test_wait_lets_the_second_run_go_when_the_first_ends(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    lock = OutputLock(out).__enter__()
    threading.Timer(1.0, lock.__exit__).start()
    t0 = time.monotonic()
    code = cli.main(["generate", "a red duck", *TINY, "--out", str(out), "--wait"])
    assert code == 0 and time.monotonic() - t0 >= 1.0 and (out / "asset.ply").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_refused_before_the_job(tmp_path, capsys):
    code = cli.main(["generate", "a red duck", *TINY, "--device", "cuda", "--out", str(tmp_path / "o")])
    err = one_line_error(capsys)
    assert code == 2 and "cuda" in err and "auto, cpu" in err
    assert not (tmp_path / "o" / "checkpoints").exists()


@pytest.mark.parametrize("argv", [["--seed", "9" * 400], ["--set", "seed=" + "9" * 400],
                                  ["--set", "method.guidance_scale=" + "1" * 330],
                                  ["--set", "stages.\u00b2.steps=3"], ["--steps", "9" * 40]])
def test_huge_integers_and_odd_keys_are_one_line_errors(tmp_path, capsys, argv):
    code = cli.main(["generate", "a red duck", *TINY, *argv, "--out", str(tmp_path / "o")])
    one_line_error(capsys)
    assert code == 2


def test_a_job_over_the_memory_budget_is_refused_naming_what_to_lower(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 2 << 30)
    code = cli.main(["generate", "a red duck", *TINY, "--set", "output.preview_views=16",
                     "--set", "output.preview_resolution=1024", "--set", "representation.init_count=2000000",
                     "--set", "representation.max_count=2000000", "--out", str(tmp_path / "o")])
    err = one_line_error(capsys)
    assert code == 2 and "GiB" in err and "representation.init_count (now 2000000)" in err
    assert not (tmp_path / "o" / "checkpoints").exists()
