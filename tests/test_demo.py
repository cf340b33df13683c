"""The two demos: `repro-fast demo` (SFT + GRPO with and without RePro on the toy task, its printout
and plots) and `repro-fast demo --scoring` (`repro_fast.demo.run_demo`, real SmolLM2: slow)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from repro_fast.grpo import plots
from repro_fast.grpo.config import ConfigError, GRPOConfig


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


def test_training_demo_one_before_number(tmp_path, capsys):
    from repro_fast.grpo.demo import run_training_demo

    result = run_training_demo(out=str(tmp_path), steps=2, sft_steps=5, progress=False, threads=1,
                               eval_problems=8)
    out = capsys.readouterr().out
    sft_line = next(line for line in out.splitlines() if "parameters" in line)
    assert "accuracy" not in sft_line  # the SFT's own greedy check is not printed next to the eval below
    before = [line for line in out.splitlines() if line.startswith("| SFT warm start")]
    ev0 = result["runs"]["plain GRPO"]["eval"]["0"]
    assert ev0 == result["runs"]["GRPO + RePro"]["eval"]["0"]  # one "before" for the one model
    assert before == [f"| SFT warm start (step 0 of both runs) | {ev0['accuracy']:.3f} | "
                      f"{ev0['response_length']:.1f} | {ev0['rechecks_per_rollout']:.2f} |"]
    assert "8 held-out problems, one sample each at tau = 1" in out
    for name in ("accuracy.png", "response_length.png", "scoring_time.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 0
    with pytest.raises(ConfigError, match="eval_problems"):
        run_training_demo(out=str(tmp_path), eval_problems=0)


@pytest.mark.slow
def test_scoring_demo_times_after_warmup(smollm2, monkeypatch, capsys):
    import repro_fast.demo as demo

    monkeypatch.setattr(demo, "load_smollm2", lambda: smollm2)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    seen = []
    real_score = demo.RePROScorer.score

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_score(self, *args, **kwargs)

    monkeypatch.setattr(demo.RePROScorer, "score", spy)
    timings = demo.run_demo(num_problems=1, num_segments=20, threads=want)
    assert torch.get_num_threads() == before  # restored
    assert seen == [want] * 4  # warm-up + timed call, per backend, under the demo's thread count
    out = capsys.readouterr().out
    assert "after an untimed warm-up call on the same batch: fast" in out and "warm-up calls" in out
    assert set(timings["warmup"]) == set(timings["timed"]) == {"fast", "naive"}
