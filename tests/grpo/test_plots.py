"""`repro_fast.grpo.plots`: every line says what it measured (training rollouts at tau, held-out eval
with its step-0 point, the fast vs naive scorer on the same rollouts only), `plot_run` reads step 0
and the labels from the run folder, `plot_runs` writes one PNG per quantity and skips a quantity no
run measured, and without matplotlib the plots are skipped with a warning."""

from __future__ import annotations

import builtins
import json
import os

import pytest

from repro_fast.grpo import plots
from repro_fast.grpo.config import GRPOConfig


def _rows(steps: int, naive: bool, eval_every: int) -> list[dict]:
    rows = []
    for s in range(1, steps + 1):
        row = {"step": s, "accuracy": 0.1 * s, "response_length": 30.0 - s, "time_score_s": 0.1}
        if naive:
            row["time_score_naive_s"] = 0.6
        if s % eval_every == 0:
            row.update(eval_accuracy=0.2 * s, eval_response_length=31.0 - s)
        rows.append(row)
    return rows


def test_plot_lines_say_what_they_measured():
    configs = {"GRPO + RePro": GRPOConfig(alpha=0.1, compare_naive=True).to_dict(),
               "plain GRPO": GRPOConfig(alpha=0.0).to_dict()}
    runs = {"GRPO + RePro": _rows(4, True, 2), "plain GRPO": _rows(4, False, 2)}
    evals = {label: {"0": {"accuracy": 0.05, "response_length": 33.0},
                     "2": {"accuracy": 0.4, "response_length": 29.0},
                     "4": {"accuracy": 0.8, "response_length": 27.0}} for label in runs}
    lines, what = plots._lines(runs, configs, evals, "accuracy", "eval_accuracy", "accuracy")
    assert "greedy" not in what and "tau = 1" in what and "128 held-out problems" in what
    eval_lines = [points for label, points, _ in lines if "held-out eval" in label]
    assert len(eval_lines) == 2 and all(points[0] == (0, 0.05) for points in eval_lines)  # step 0 on each
    greedy = {label: dict(c, eval_greedy=True) for label, c in configs.items()}
    assert "greedy" in plots._lines(runs, greedy, evals, "accuracy", "eval_accuracy", "accuracy")[1]
    # scoring time: fast vs naive on the same rollouts only; the alpha = 0 run is left out, and said so
    lines, note = plots._scorer_lines(runs, configs)
    assert [label for label, _, _ in lines] == ["GRPO + RePro: fast scorer",
                                                "GRPO + RePro: naive scorer, same rollouts"]
    assert "plain GRPO" in note and "old log-probs" in note


def test_plot_run_reads_step0_from_the_run_folder(tmp_path):
    config = GRPOConfig(alpha=0.0).to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config))
    evals = {"0": {"accuracy": 0.1, "response_length": 30.0}, "3": {"accuracy": 0.3, "response_length": 28.0}}
    (tmp_path / "summary.json").write_text(json.dumps({"eval": evals}))
    written = plots.plot_run(_rows(3, False, 3), str(tmp_path / "plots"))
    assert sorted(os.path.basename(p) for p in written) == ["accuracy.png", "response_length.png",
                                                           "scoring_time.png"]


def test_eval_description():
    assert plots.eval_description({"eval_problems": 8, "temperature": 0.7}) == \
        "8 held-out problems, one sample each at tau = 0.7"
    assert plots.eval_description({"eval_greedy": True}) == "held-out problems, greedy"


def test_plot_runs_writes_what_was_measured(tmp_path):
    configs = {"run": GRPOConfig(alpha=0.1).to_dict()}
    written = plots.plot_runs({"run": _rows(3, False, 3)}, str(tmp_path / "a"), configs=configs)
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["accuracy.png", "response_length.png", "scoring_time.png"]
    assert all(os.path.getsize(p) > 0 for p in written)
    # rows without scoring times: no scoring-time figure (a figure of nothing is not written)
    rows = [{k: v for k, v in r.items() if k != "time_score_s"} for r in _rows(3, False, 3)]
    written = plots.plot_runs({"run": rows}, str(tmp_path / "b"), configs=configs)
    assert sorted(os.path.basename(p) for p in written) == ["accuracy.png", "response_length.png"]


def test_without_matplotlib_the_plots_are_skipped_with_a_warning(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        assert plots.plot_runs({"run": _rows(2, False, 1)}, str(tmp_path / "p")) == []
    assert not (tmp_path / "p").exists()
