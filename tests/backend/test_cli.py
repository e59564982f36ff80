"""The command line: clear messages and exit code 2 on bad input; generate -> evaluate round trip."""

import json
import subprocess
import sys

import pytest

from backend.cli import main

FAST = ["--steps", "6", "--set", "output.turntable_frames=2", "--set", "camera.resolution=32",
        "--set", "representation.init_count=200", "--set", "output.evaluate=false"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["generate", "a blue mug", "--preset", "nope"], "preset: unknown preset 'nope' (allowed: gaussian-sds-quick"),
    (["generate", "a blue mug", "--set", "method.guidance_scale=-3"], "method.guidance_scale: -3 is out of range"),
    (["generate", "a blue mug", "--set", "camera.views"], "expected KEY=VALUE"),
    (["generate", "a blue mug", "--set", "nonsense.key=1"], "nonsense.key: unknown setting"),
    (["generate", "a blue mug", "--steps", "0"], "--steps 0 is out of range"),
    (["generate", "a purple unicorn", "--steps", "2"], "mug"),  # the reference prior lists what it knows
    (["evaluate", "missing.ply", "--prompt", "a mug"], "does not exist"),
    (["mesh", "missing.ply"], "does not exist"),
    (["mesh", "missing.ply", "--set", "resolution=5"], "resolution: 5 is out of range (allowed: int in [16, 512])"),
    (["mesh", "missing.ply", "--set", "colour=red"], "colour: unknown setting (allowed: faces, level,"),
])
def test_bad_input_is_a_clear_error_with_exit_code_2(argv, needle, capsys, tmp_path):
    if argv[0] == "generate":
        argv = [*argv, "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["generate"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["bogus-command"])
    assert e.value.code == 2


def test_evaluate_rejects_a_non_ply(tmp_path, capsys):
    (tmp_path / "x.ply").write_text("hello")
    assert main(["evaluate", str(tmp_path / "x.ply"), "--prompt", "a mug"]) == 2
    assert "not a PLY" in capsys.readouterr().err


def test_presets_lists_and_shows_settings(capsys):
    assert main(["presets"]) == 0
    assert "gaussian-sds-quick" in capsys.readouterr().out
    assert main(["presets", "gaussian-sds-quick", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {r["key"]: r for r in rows}
    g = keys["stages.0.method.guidance_scale"]
    assert g["kind"] == "float" and g["lo"] == 0 and g["help"] and g["allowed"]


def test_generate_then_evaluate_then_mesh(tmp_path, capsys):
    import trimesh

    out = tmp_path / "duck"
    assert main(["generate", "a red duck", "--out", str(out), "--quiet", *FAST]) == 0
    for name in ("asset.ply", "asset.glb", "preview.png", "turntable.gif", "result.json"):
        assert (out / name).is_file()
    capsys.readouterr()
    glb, ply = tmp_path / "duck.glb", tmp_path / "duck-mesh.ply"
    assert main(["mesh", str(out / "asset.ply"), "--out", str(glb), "--ply", str(ply), "--json",
                 "--set", "faces=600", "--set", "texture_size=128", "--set", "views=4"]) == 0
    result = json.loads(capsys.readouterr().out)
    (geom,) = trimesh.load(glb).geometry.values()
    assert len(geom.faces) == result["faces"] and 0 < result["faces"] <= 600
    assert geom.visual.material.baseColorTexture.size == (128, 128)
    assert ply.is_file() and result["gaussians"] > 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "asset.ply"), "--prompt", "a red duck", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"psnr", "mask_iou", "view_accuracy", "aligned_view_accuracy", "alignment_azimuth",
                            "multi_face_rate", "psnr_128", "hf_energy_128", "hf_energy_ratio"}
    assert 0 <= metrics["mask_iou"] <= 1 and 0 <= metrics["view_accuracy"] <= 1 and metrics["psnr"] > 0
    assert metrics["view_accuracy"] <= metrics["aligned_view_accuracy"] or metrics["alignment_azimuth"] != 0
    assert 0 <= metrics["multi_face_rate"] <= 1 and metrics["hf_energy_ratio"] >= 0


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backend", "generate", "a mug", "--seed", "-4"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "seed: -4 is out of range (allowed: int in [0, 2147483647])" in proc.stderr


def test_bench_prints_phase_medians(capsys):
    assert main(["bench", "--steps", "6", "--warmup", "2", "--json", "--set", "camera.resolution=32",
                 "--set", "representation.init_count=200"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"render", "prior", "backward", "optimiser", "step"} <= set(report["median_ms"])
    assert report["steps_per_s"] > 0


def test_timings_medians_per_stage_skip_the_warmup_of_each_stage():
    from backend.engine.stage import Timings

    t = Timings()
    for stage, render in [("nerf", 9.0), ("nerf", 1.0), ("nerf", 2.0), ("dmtet", 50.0), ("dmtet", 5.0), ("dmtet", 7.0)]:
        t.add("render", render)
        t.add("prior", 1.0)
        t.end_step(stage)
    assert t.medians(skip=1, stage="nerf") == {"prior": 1.0, "render": 1.5, "step": 2.5}
    assert t.medians(skip=1, stage="dmtet") == {"prior": 1.0, "render": 6.0, "step": 7.0}
    assert t.medians(skip=1)["render"] == 5.0  # the whole job mixes both stages
