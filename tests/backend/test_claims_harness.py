"""scripts/claims.py without running a job: every arm builds its config, the intervals and verdicts, the
reproduce commands, and what it hands to `distillery batch`."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("claims", ROOT / "scripts" / "claims.py")
claims = importlib.util.module_from_spec(spec)
sys.modules["claims"] = claims  # dataclasses look their module up
spec.loader.exec_module(claims)


def test_every_arm_builds_on_the_text_like_prior():
    for claim in claims.CLAIMS.values():
        for arm in claim.arms:
            cfg = claims.build_config(claim, arm, "mug", 3, claims.Budget())
            assert cfg.prompt == "a mug" and cfg.seed == 3
            for st in cfg.stages:
                assert st.prior.unconditional == "marginal" and st.prior.front_bias > 0
    esd = claims.CLAIMS["particle"].arms[2]
    cfg = claims.build_config(claims.CLAIMS["particle"], esd, "duck", 0, claims.Budget(300))
    assert cfg.total_steps == 300 and cfg.stages[0].method.guidance_scale_lora == 0.5
    real3d = claims.CLAIMS["real3d"]
    weights = [claims.build_config(real3d, a, "duck", 0, claims.Budget()).stages[0].adversarial.weight
               for a in real3d.arms]
    assert weights[0] > 0 and weights[1] == 0


def test_bootstrap_interval_and_verdicts():
    mean, lo, hi = claims.bootstrap_ci([0.5] * 6)
    assert mean == lo == hi == 0.5
    mean, lo, hi = claims.bootstrap_ci([0.0, 1.0] * 10)
    assert lo < mean == 0.5 < hi
    janus = claims.CLAIMS["janus"]
    high, low = [0.8, 0.9, 0.85, 0.75, 0.95] * 3, [0.0, 0.05, 0.1, 0.0, 0.05] * 3
    v = claims.verdict(janus, {"no-view": high, "view-prompts": low, "perp-neg": high}, 5, 3, "multi_face_rate")
    assert v["view-prompts"].startswith("supported") and v["perp-neg"].startswith("inconclusive")
    v = claims.verdict(janus, {"no-view": low, "view-prompts": high}, 5, 3, "multi_face_rate")
    assert v["view-prompts"].startswith("not supported")
    v = claims.verdict(janus, {"no-view": high[:2], "view-prompts": low[:2]}, 2, 1, "multi_face_rate")
    assert v["view-prompts"].startswith("inconclusive at this budget (2 seed(s) x 1 object(s)")


def test_commands_reproduce_the_row_and_emit_writes_a_batch_plan(tmp_path, capsys):
    claim = claims.CLAIMS["janus"]
    arm = claim.arms[2]
    budget = claims.Budget(None, ("method.guidance_scale=5",))
    cmd = claims.row_command(claim, arm, "duck", 1, budget)
    assert "--claim janus --arms perp-neg --objects duck --seeds 1 --set method.guidance_scale=5" in cmd
    gen = claims.generate_command(claim, arm, "duck", 1, budget, tmp_path)
    assert "--preset gaussian-sds-quick --seed 1" in gen and "--set prior.perp_neg=true" in gen
    assert claims.run_dir(tmp_path, "janus", "perp-neg", "duck", 1, budget) != \
        claims.run_dir(tmp_path, "janus", "perp-neg", "duck", 1, claims.Budget())
    assert claims.main(["emit", "--claim", "janus", "--objects", "duck", "mug", "--seeds", "0", "1",
                        "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(claim.arms) and all(" batch " in x and "--seeds 0,1" in x for x in lines)
    assert (tmp_path / "janus" / "full" / "PROMPTS").read_text() == "a duck\na mug\n"


def test_report_without_rows_says_not_yet_run(tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"claim": "ism", "budget": "300steps"}) + "\n")
    assert claims.main(["report", "--claim", "ism", "--json", str(tmp_path / "rows.jsonl")]) == 0
    assert "not yet run" in capsys.readouterr().out


def test_bad_arm_is_named(capsys):
    with pytest.raises(SystemExit):
        claims.main(["run", "--claim", "janus", "--arms", "nope"])
    assert "--arms: ['nope'] not in claim 'janus'" in capsys.readouterr().err
