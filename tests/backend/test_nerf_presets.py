"""The NeRF, coarse-to-fine and Real3D presets end to end on the reference prior (a few steps each), mesh
snapshots and assets, resuming a DMTet stage, and the configuration rules that keep them consistent."""

import json

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData

from backend import presets
from backend.config import apply_overrides
from backend.core.settings import ConfigError
from backend.engine.loop import run_job
from backend.jobs import artifacts

FAST = {"output.preview_every": 0, "output.checkpoint_every": 0, "output.turntable_frames": 0}
FAST_NERF_MESH = {"representation.export_resolution": 40, "representation.snapshot_resolution": 24}


def small(name, steps, **extra):
    cfg = presets.get(name)
    has_nerf = any(st.representation.name == "nerf" for st in cfg.stages)  # DMTet meshes have no marching cubes
    cfg = apply_overrides(cfg, {**FAST, **(FAST_NERF_MESH if has_nerf else {}), **extra})
    return cfg.with_total_steps(steps)


def test_real3d_quick_runs_end_to_end(tmp_path):
    cfg = small("real3d-quick", 4, **{"output.snapshot_every": 2, "adversarial.bank_size": 8,
                                       "adversarial.bank_steps": 6, "stages.0.camera.resolution": 48,
                                       "representation.implicit_resolution": 32})
    events = []
    result = run_job(cfg, tmp_path, emit=events.append)
    status = next(e for e in events if e["type"] == "status")
    assert status["renderer"] == "dual" and "mesh: torch" in status["renderer_note"]
    progress = [e for e in events if e["type"] == "progress"]
    assert {"sds", "adversarial"} <= set(progress[-1]["losses"])
    snaps = [e for e in events if e["type"] == "snapshot"]
    assert snaps and all(e["kind"] == "mesh" and e["faces"] > 0 for e in snaps)
    ply = PlyData.read(str(tmp_path / snaps[-1]["artifact"]))
    assert len(ply["face"].data) == snaps[-1]["faces"]
    assert result["kind"] == "mesh" and result["artifacts"]["asset_glb"] == "asset.glb"
    scene = trimesh.load(tmp_path / "asset.glb")
    assert sum(len(g.faces) for g in scene.geometry.values()) == result["faces"] > 0
    assert set(result["metrics"]) == {"psnr", "mask_iou", "view_accuracy", "aligned_view_accuracy", "alignment_azimuth",
                                      "multi_face_rate"}
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["stages"][0]["renderer"] == "dual"


def test_dreamfusion_quick_and_magic3d_quick_run_and_convert(tmp_path):
    df_events = []
    job_id = "d" * 32  # the job folder as the server names it, so its artifact list applies
    result = run_job(small("dreamfusion-quick", 3, **{"output.evaluate": False}), tmp_path / job_id,
                     emit=df_events.append)
    assert result["kind"] == "mesh" and result["faces"] > 0
    # the result event names the kind, so a client decodes asset.ply as a mesh; asset.glb is served
    final = next(e for e in df_events if e["type"] == "result")
    assert (final["kind"], final["faces"], final["artifacts"]["asset_glb"]) == ("mesh", result["faces"], "asset.glb")
    assert "asset.glb" in artifacts.list_artifacts(tmp_path, job_id)
    assert artifacts.open_artifact(tmp_path, job_id, "asset.glb") is not None
    events = []
    cfg = small("magic3d-quick", 5, **{"output.evaluate": False, "output.checkpoint_every": 4,
                                       "stages.1.representation.tet_resolution": 12})
    result = run_job(cfg, tmp_path / "m3d", emit=events.append)
    assert result["faces"] > 0
    stages = {e["stage_name"] for e in events if e["type"] == "progress"}
    assert stages == {"coarse", "refine"}
    v = PlyData.read(str(tmp_path / "m3d" / "asset.ply"))["vertex"]
    assert np.isfinite(v["x"]).all() and v["red"].dtype == np.uint8


def test_a_dmtet_stage_resumes_from_its_checkpoint(tmp_path):
    cfg = small("magic3d-quick", 6, **{"output.evaluate": False, "output.checkpoint_every": 1,
                                       "stages.1.representation.tet_resolution": 10})
    full = run_job(cfg, tmp_path / "a", resume=False)
    # Stop after the checkpoint of global step 5 (the refine stage's first steps) and resume.
    from backend.engine import checkpoint

    ck = sorted((tmp_path / "a" / "checkpoints").glob("*"))
    assert ck, "checkpoints were written"
    state, meta = checkpoint.load(checkpoint.latest(tmp_path / "a" / "checkpoints"), torch.device("cpu"))
    assert meta["stage"] == 1 and "box" in state["rep"]
    again = run_job(cfg, tmp_path / "a", resume=True)  # resumes at its last checkpoint, finishes the same
    assert again["faces"] == full["faces"]


@pytest.mark.parametrize("overrides, key", [
    ({"renderer": "dual", "representation.geometry": "sdf"}, "stages.0.renderer"),
    ({"background": "learned"}, "stages.0.background"),
    ({"regularisers.orientation": 1.0}, "stages.0.regularisers.orientation"),
])
def test_config_rules_name_the_field(overrides, key):
    with pytest.raises(ConfigError) as err:
        apply_overrides(presets.get("real3d-quick"), overrides)
    assert err.value.args[0].startswith(key) or key in str(err.value)


def test_stage_conversions_are_checked():
    cfg = presets.get("magic3d-quick")
    with pytest.raises(ConfigError, match="grid_levels"):
        apply_overrides(cfg, {"stages.1.representation.grid_levels": 5})
    with pytest.raises(ConfigError, match="cannot continue"):
        apply_overrides(cfg, {"stages.1.representation.name": "gaussians"})
    with pytest.raises(ConfigError, match="cannot continue"):
        apply_overrides(cfg, {"stages.0.representation.name": "dmtet", "stages.1.representation.name": "nerf"})


def test_full_nerf_presets_run_on_stable_diffusion_with_their_papers_settings():
    built = {name: presets.get(name) for name in ("dreamfusion", "magic3d", "real3d")}
    assert all(presets.PRESETS[name].needs_gpu for name in built)
    assert all(s.prior.name == "stable-diffusion" for cfg in built.values() for s in cfg.stages)
    st = built["real3d"].stages[0]
    assert st.renderer == "dual" and st.prior.view_embedding == "interpolated"
    assert st.adversarial.weight == 0.01 and st.optim.optimizer == "adan" and st.camera.views == 2
    assert st.method.guidance_scale == 101.0  # threestudio's 100 in the project's guidance form
    assert [s.representation.name for s in built["magic3d"].stages] == ["nerf", "dmtet"]
    assert built["dreamfusion"].stages[0].background == "learned"
