"""Hostile PLY files: the backend reader answers every malformed, inconsistent, oversize or non-finite file with
one PLYError (never another exception, never a large allocation), and `distillery evaluate` exits 2 on them."""

import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import cli
from backend.io.ply import PLYError, gaussian_ply_names, read_gaussian_ply, read_ply, write_gaussian_ply

ROOT = Path(__file__).resolve().parents[2]


def gaussians(n=4, **overrides):
    arrays = {k: np.zeros(n, np.float32) for k in gaussian_ply_names(0)}
    arrays["rot_0"][:] = 1.0
    arrays["opacity"][:] = 2.0
    for k in ("scale_0", "scale_1", "scale_2"):
        arrays[k][:] = -3.0
    arrays.update(overrides)
    return arrays


def header(*lines, fmt="binary_little_endian"):
    return ("\n".join(["ply", f"format {fmt} 1.0", *lines, "end_header"]) + "\n").encode()


HOSTILE = {
    "superscript count": header("element vertex \u00b2", "property float x"),
    "non-ascii header": "ply\nformat ascii 1.0\nelement v\u00e9rtex 1\nproperty float x\nend_header\n1\n".encode(),
    "short property line": header("element vertex 1", "property float"),
    "short list property": header("element face 1", "property list uchar"),
    "float list counts": header("element face 1", "property list float int vertex_indices") + b"\0" * 20,
    "format without version": b"ply\nformat ascii\nelement vertex 0\nend_header\n",
    "duplicate property": header("element vertex 1", "property float x", "property float x") + b"\0" * 8,
    "duplicate element": header("element vertex 0", "property float x", "element vertex 0", "property float y"),
    "unknown line": header("elephant vertex 1") + b"\0" * 4,
    "billion vertices": header("element vertex 1000000000", "property float x") + b"\0" * 64,
    "huge list count": header("element face 1", "property list uint int vertex_indices")
    + struct.pack("<I", 2**32 - 1) + b"\0" * 16,
    "negative list count": header("element face 2", "property list char int vertex_indices")
    + struct.pack("<b", -3) + b"\0" * 30,
    "nan": header("element vertex 1", "property float x") + struct.pack("<f", float("nan")),
    "inf": header("element vertex 1", "property float x", fmt="binary_big_endian") + struct.pack(">f", float("inf")),
    "ascii nan": header("element vertex 1", "property float x", fmt="ascii") + b"nan\n",
    "ascii overflow to inf": header("element vertex 1", "property double x", fmt="ascii") + b"1e999\n",
    "ascii uchar out of range": header("element vertex 1", "property uchar red", fmt="ascii") + b"300\n",
    "ascii huge integer": header("element vertex 1", "property int x", fmt="ascii") + b"9" * 400 + b"\n",
    "ascii not a number": header("element vertex 1", "property float x", fmt="ascii") + b"abc\n",
    "ascii short row": header("element vertex 2", "property float x", "property float y", fmt="ascii")
    + b"1 2\n3\n",
    "ascii list count mismatch": header("element face 1", "property list uchar int vertex_indices", fmt="ascii")
    + b"3 0 1\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_one_ply_error(tmp_path, name):
    path = tmp_path / "x.ply"
    path.write_bytes(HOSTILE[name])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PLYError):
        read_ply(path)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50 * 1024  # no allocation sized by a declared count


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_any_mutation_of_a_valid_file_reads_or_fails_with_ply_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "m.ply"
    write_gaussian_ply(path, gaussians(3))
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i : i + data.draw(st.integers(1, 40))]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=12))
        if not raw:
            raw = bytearray(b"p")
    path.write_bytes(bytes(raw))
    try:
        out = read_ply(path)
    except PLYError:
        return
    for props in out.values():
        for arr in props.values():
            assert arr.dtype.kind != "f" or np.isfinite(arr).all()


@pytest.mark.parametrize("case", ["nan", "huge scale", "zero rotation", "truncated", "superscript count"])
def test_evaluate_exits_2_with_one_line_on_a_hostile_asset(tmp_path, capsys, case):
    path = tmp_path / "asset.ply"
    if case == "nan":
        write_gaussian_ply(path, gaussians())
        raw = path.read_bytes()
        path.write_bytes(raw[:-4] + struct.pack("<f", float("nan")))  # the last rot_3
    elif case == "huge scale":
        write_gaussian_ply(path, gaussians(scale_0=np.full(4, 40.0, np.float32)))
    elif case == "zero rotation":
        write_gaussian_ply(path, gaussians(rot_0=np.zeros(4, np.float32)))
    elif case == "truncated":
        write_gaussian_ply(path, gaussians(200))
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(HOSTILE["superscript count"])
    code = cli.main(["evaluate", str(path), "--prompt", "a red duck"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("distillery evaluate: error:") and len(err.splitlines()) == 1


def test_a_valid_asset_still_reads(tmp_path):
    path = tmp_path / "ok.ply"
    write_gaussian_ply(path, gaussians(5))
    assert len(read_gaussian_ply(path)["x"]) == 5


def test_evaluate_refuses_an_overlap_bomb_within_its_memory_cap(tmp_path):
    """8000 faint splats on top of each other (a 544 KB file): each covers every pixel of every view and none
    saturates, so drawing them needs count x pixels contributions; evaluate fails under --max-memory with exit
    2 instead of taking the machine's memory."""
    n = 8000
    rng = np.random.default_rng(0)
    path = tmp_path / "bomb.ply"
    write_gaussian_ply(path, gaussians(n, x=rng.normal(0, 0.05, n).astype(np.float32),
                                       opacity=np.full(n, -5.3, np.float32),
                                       **{k: np.full(n, 0.5, np.float32) for k in ("scale_0", "scale_1", "scale_2")}))
    proc = subprocess.run([sys.executable, "-m", "backend", "evaluate", str(path), "--prompt", "a red duck",
                           "--max-memory", "0.4"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "--max-memory" in err and len(err.splitlines()) == 1, err[-500:]
