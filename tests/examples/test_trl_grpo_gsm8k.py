"""examples/trl_grpo_gsm8k.py (tests/examples/ mirrors examples/): its arguments, prompts and reward
(fast), and its main path with tiny settings on the real SmolLM2-135M-Instruct and TRL (slow: about
a minute on 2 cores)."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
PATH = os.path.join(ROOT, "examples", "trl_grpo_gsm8k.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("trl_grpo_gsm8k", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_and_help(example, capsys):
    a = example.parse_args([])
    assert (a.task, a.steps, a.prompts, a.num_generations, a.max_completion_length, a.temperature) == \
        ("arithmetic", 4, 2, 4, 128, 0.7)
    with pytest.raises(SystemExit) as exc:
        example.parse_args(["--help"])
    assert exc.value.code == 0
    assert "(default: 128)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        example.parse_args(["--task", "gsm9k"])


def test_prompts_answers_and_reward(example):
    rows = example.build_rows("arithmetic", 50, seed=3)
    assert rows == example.build_rows("arithmetic", 50, seed=3)  # seeded
    for row in rows:
        shot_q, shot_a, question = row["prompt"]
        assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
        assert question["content"].endswith(example.INSTRUCTION)
        assert shot_q["content"].endswith(example.INSTRUCTION)
        a, b, c = map(int, re.findall(r"\d+", question["content"]))
        assert row["answer"] == str(a + b - c)
    # the worked example earns the reward its format promises; a clipped or wrong completion does not
    shot = rows[0]["prompt"][1]["content"]
    completions = [[{"role": "assistant", "content": shot}], [{"role": "assistant", "content": shot[:-4]}],
                   "The answer is \\boxed{10}."]
    assert example.correctness(completions, answer=["9", "9", "9"]) == [1.0, 0.0, 0.0]


@pytest.mark.slow
def test_main_runs_one_tiny_step(example, tmp_path, capsys):
    rows = example.main(["--steps", "1", "--prompts", "1", "--num-generations", "2",
                         "--max-completion-length", "12", "--out", str(tmp_path)])
    assert len(rows) == 1
    for key in ("reward", "reward_std", "repro/points_per_completion", "repro/mean_score",
                "repro/scoring_seconds"):
        assert key in rows[0], key
    out = capsys.readouterr().out
    assert "| step | reward | reward_std |" in out and "repro/points_per_completion" in out
