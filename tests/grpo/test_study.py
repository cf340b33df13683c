"""`repro_fast.grpo.study` (`repro-fast study`): its intervals and table, and a one-seed smoke run of
the command (tiny budgets)."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from repro_fast.cli import main
from repro_fast.grpo.study import interval, table


@pytest.mark.parametrize("xs", [[0.3, 0.5], [1.0, 2.0, 4.0], [0.31, 0.36, 0.4, 0.33, 0.38], list(range(11)),
                                [x * x for x in range(14)]])
def test_interval_is_students_t(xs):
    mean, half = interval(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=stats.tmean(xs), scale=stats.sem(xs))
    assert mean == pytest.approx((lo + hi) / 2)
    assert half == pytest.approx((hi - lo) / 2, rel=2e-3)
    assert math.isnan(interval([0.4])[1])


def test_table_pairs_seeds():
    def run(seed, acc, length):
        return {"seed": seed, "before": {"accuracy": 0.2, "response_length": 30.0},
                "after": {"accuracy": acc, "response_length": length}}

    result = {"seeds": 2, "task": "toy", "steps": 3, "eval_problems": 8, "machine": "m", "elapsed_s": 60.0,
              "runs": {"plain GRPO": [run(0, 0.1, 20.0), run(1, 0.2, 22.0)],
                       "GRPO + RePro": [run(0, 0.3, 18.0), run(1, 0.5, 19.0)]}}
    md = table(result)
    # paired differences 0.2 and 0.3: mean 0.25, half-width 12.706 * 0.0707 / sqrt(2)
    assert "| held-out accuracy | 0.200 ± 0.000 | 0.150 ± 0.635 | 0.400 ± 1.271 | 0.250 ± 0.635 |" in md
    assert "| response length (tokens) | 30.0 ± 0.0 | 21.0 ± 12.7 | 18.5 ± 6.4 | -2.5 ± 6.4 |" in md
    assert "re-checks per response |" not in md.split("| seed |")[0]  # a metric no run reports: no row


def test_table_shows_a_dash_for_a_metric_missing_before_training():
    def run(seed, rechecks):
        return {"seed": seed, "before": {"accuracy": 0.2},
                "after": {"accuracy": 0.3, "rechecks_per_rollout": rechecks}}

    result = {"seeds": 2, "task": "toy", "steps": 3, "eval_problems": 8, "machine": "m", "elapsed_s": 60.0,
              "runs": {"plain GRPO": [run(0, 1.0), run(1, 2.0)], "GRPO + RePro": [run(0, 0.5), run(1, 0.5)]}}
    assert "| re-checks per response | - | 1.50 ± 6.35 | 0.50 ± 0.00 | -1.00 ± 6.35 |" in table(result)


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
    assert json.loads((out / "seed0" / "repro" / "summary.json").read_text())["alpha"] == 0.1
    assert json.loads((out / "seed0" / "grpo" / "summary.json").read_text())["alpha"] == 0.0
    md = (out / "study.md").read_text()
    assert "| held-out accuracy |" in md and "| re-checks per response |" in md and "| 0 |" in md
    assert (out / "study.png").stat().st_size > 5000
