"""`repro_fast.grpo.study` (`repro-fast study`): its intervals, a sweep's arms and baselines, the table
of paired differences, and one-seed smoke runs of the command and of a sweep (tiny budgets)."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from repro_fast.cli import main
from repro_fast.grpo.config import ConfigError
from repro_fast.grpo.study import interval, run_study, sweep_arms, table


@pytest.mark.parametrize("xs", [[0.3, 0.5], [1.0, 2.0, 4.0], [0.31, 0.36, 0.4, 0.33, 0.38], list(range(11)),
                                [x * x for x in range(14)]])
def test_interval_is_students_t(xs):
    mean, half = interval(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=stats.tmean(xs), scale=stats.sem(xs))
    assert mean == pytest.approx((lo + hi) / 2)
    assert half == pytest.approx((hi - lo) / 2, rel=2e-3)
    assert math.isnan(interval([0.4])[1])


def _result(arms, runs, **extra):
    return {"seeds": 2, "task": "toy", "steps": 3, "eval_problems": 8, "machine": "m", "elapsed_s": 60.0,
            "sweep": None, "arms": arms, "runs": runs, **extra}


def test_sweep_arms_and_their_baselines():
    two = sweep_arms(None, None, 0.1)
    assert [(a["label"], a["settings"], a["baseline"]) for a in two] == [
        ("plain GRPO", {"alpha": 0.0}, None), ("GRPO + RePro", {"alpha": 0.1}, "plain GRPO")]
    alpha = sweep_arms("alpha", None, 0.1)
    assert [a["x"] for a in alpha] == [0.0, 0.025, 0.05, 0.1, 0.2, 0.4]
    assert {a["baseline"] for a in alpha[1:]} == {"alpha = 0"} and alpha[0]["baseline"] is None
    assert sweep_arms("alpha", [0.2, 0.1], 0.1)[1]["baseline"] == "alpha = 0.2"  # no 0: the first
    weight = sweep_arms("stability_weight", [0.0, 1.0], 0.2)
    assert [(a["settings"], a["x"], a["baseline"]) for a in weight] == [
        ({"alpha": 0.0}, None, None),
        ({"alpha": 0.2, "stability_weight": 0.0}, 0.0, "plain (alpha = 0)"),
        ({"alpha": 0.2, "stability_weight": 1.0}, 1.0, "plain (alpha = 0)")]
    est = sweep_arms("estimator", ["grpo", "rloo"], 0.1)
    assert [(a["label"], a["baseline"]) for a in est] == [
        ("estimator = grpo", None), ("estimator = grpo + RePro", "estimator = grpo"),
        ("estimator = rloo", "estimator = grpo"), ("estimator = rloo + RePro", "estimator = rloo")]
    assert len({a["name"] for a in est}) == 4  # one run folder each
    for sweep, values, message in [("seed", [1, 2], "sweep: expected a GRPO setting"),
                                   ("lerning_rate", [1], "sweep: expected a GRPO setting"),
                                   ("num_segments", None, "values: expected the values of num_segments"),
                                   ("alpha", [0.1, 0.1], "values: expected distinct values")]:
        with pytest.raises(ValueError, match=message):
            sweep_arms(sweep, values, 0.1)


def test_table_pairs_seeds():
    def run(seed, acc, length):
        return {"seed": seed, "before": {"accuracy": 0.2, "response_length": 30.0},
                "after": {"accuracy": acc, "response_length": length}}

    runs = {"plain GRPO": [run(0, 0.1, 20.0), run(1, 0.2, 22.0)],
            "GRPO + RePro": [run(1, 0.5, 19.0), run(0, 0.3, 18.0)]}  # any order: paired by seed
    md = table(_result(sweep_arms(None, None, 0.1), runs))
    # paired differences 0.2 and 0.3: mean 0.25, half-width 12.706 * 0.0707 / sqrt(2)
    assert "| before (SFT) | 2 | 0.200 ± 0.000 | - | 30.0 ± 0.0 | - |" in md
    assert "| plain GRPO | 2 | 0.150 ± 0.635 | (baseline) | 21.0 ± 12.7 | (baseline) |" in md
    assert ("| GRPO + RePro | 2 | 0.400 ± 1.271 | vs plain GRPO: 0.250 ± 0.635 | 18.5 ± 6.4 | "
            "vs plain GRPO: -2.5 ± 6.4 |") in md
    assert "re-checks per response" not in md  # a metric no run reports: no column


def test_table_of_a_partial_study_pairs_the_seeds_both_arms_have():
    def run(seed, rechecks):
        return {"seed": seed, "before": {"accuracy": 0.2},
                "after": {"accuracy": 0.3, "rechecks_per_rollout": rechecks}}

    arms = sweep_arms("alpha", [0.0, 0.1], 0.1)
    runs = {"alpha = 0": [run(0, 1.0), run(1, 2.0), run(2, 9.0)], "alpha = 0.1": [run(0, 0.5), run(1, 0.5)]}
    md = table(_result(arms, runs, seeds=3))
    assert "3 seeds (2 finished for every arm)" in md
    assert "| alpha = 0.1 | 2 | 0.300 ± 0.000 | vs alpha = 0: 0.000 ± 0.000 | 0.50 ± 0.00 | " \
           "vs alpha = 0: -1.00 ± 6.35 |" in md
    assert "| before (SFT) | 3 | 0.200 ± 0.000 | - | - | - |" in md


def test_study_one_seed_smoke(tmp_path):
    out = tmp_path / "study"
    main(["study", "--seeds", "1", "--steps", "1", "--sft-steps", "5", "--eval-problems", "8", "--out",
          str(out), "--no-progress", "--set", "prompts_per_step=2", "--set", "group_size=2", "--set",
          "max_new_tokens=24"])
    result = json.loads((out / "study.json").read_text())
    base, rep = result["runs"]["plain GRPO"], result["runs"]["GRPO + RePro"]
    assert len(base) == len(rep) == 1
    assert base[0]["before"] == rep[0]["before"]  # both arms start from the same SFT and eval draws
    for r in base + rep:
        assert set(r["after"]) == {"accuracy", "response_length", "rechecks_per_rollout"}
        assert 0 <= r["after"]["accuracy"] <= 1 and r["after"]["response_length"] > 0
    assert json.loads((out / "seed0" / "alpha-0.1" / "summary.json").read_text())["alpha"] == 0.1
    assert json.loads((out / "seed0" / "alpha-0" / "summary.json").read_text())["alpha"] == 0.0
    md = (out / "study.md").read_text()
    assert "| held-out accuracy |" in md and "| re-checks per response |" in md
    assert (out / "study.png").stat().st_size > 5000


def test_sweep_smoke_in_one_process(tmp_path):
    """A sweep over a RePro setting: the plain arm and one per value, all from the seed's one SFT."""
    out = tmp_path / "sweep"
    result = run_study(out=str(out), seeds=1, steps=1, sft_steps=5, eval_problems=8, sweep="num_segments",
                       values=[2, 4], workers=1, progress=False, prompts_per_step=2, group_size=2,
                       max_new_tokens=24)
    assert list(result["runs"]) == ["plain (alpha = 0)", "num_segments = 2", "num_segments = 4"]
    assert len({json.dumps(r[0]["before"]) for r in result["runs"].values()}) == 1  # one SFT start
    config = json.loads((out / "seed0" / "alpha-0.1_num_segments-4" / "config.json").read_text())
    assert (config["num_segments"], config["alpha"]) == (4, 0.1)
    assert sorted(p.name for p in (out / "seed0").iterdir()) == [
        "alpha-0", "alpha-0.1_num_segments-2", "alpha-0.1_num_segments-4", "sft"]
    assert "| num_segments = 4 | 1 |" in (out / "study.md").read_text()
    with pytest.raises(ConfigError, match="set: num_segments is the swept setting"):
        run_study(out=str(out), sweep="num_segments", values=[2], num_segments=3)
    with pytest.raises(ConfigError, match="workers: expected an int >= 1"):
        run_study(out=str(out), workers=0)
