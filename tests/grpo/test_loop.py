"""`repro_fast.grpo.loop` end to end on CPU: `repro-fast train --task toy --steps 2` (with its own quick
SFT warm start), repeatability with a seed, the KL / accumulation / multi-epoch path, and a custom
verifier."""

from __future__ import annotations

import json
import math
import os

import pytest

from repro_fast.cli import main
from repro_fast.grpo import GRPOConfig, train

SMALL = dict(
    prompts_per_step=2, group_size=4, max_new_tokens=40, eval_problems=8, progress=False, plots=False
)
REQUIRED = ("step", "reward_mean", "accuracy", "response_length", "time_rollout_s", "time_score_s",
            "time_update_s", "segments_per_rollout", "j_gain_mean")


def _rows(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as fp:
        return [json.loads(line) for line in fp]


def _untimed(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("train"))
    main(["train", "--task", "toy", "--steps", "2", "--out", out, "--seed", "3", "--no-progress",
          "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "40",
          "--set", "sft_steps=30", "--set", "eval_problems=8", "--compare-naive"])
    return out


def test_cli_train_two_steps(cli_run):
    rows = _rows(cli_run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in REQUIRED:
            assert key in r and math.isfinite(r[key]), key
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["response_length"] >= 1
        assert r["segments_per_rollout"] >= 1  # at least the final point F (or n)
        assert r["naive_max_abs_diff"] < 1e-3  # fast and naive scorers agree on the same rollouts
    assert os.path.isfile(os.path.join(cli_run, "final", "config.json"))
    assert os.path.isfile(os.path.join(cli_run, "sft", "config.json"))
    for name in ("accuracy.png", "response_length.png", "scoring_time.png"):
        assert os.path.getsize(os.path.join(cli_run, "plots", name)) > 1000
    summary = json.load(open(os.path.join(cli_run, "summary.json")))
    assert set(summary["eval"]) == {"0", "2"}


def test_same_seed_same_run(cli_run, tmp_path):
    init = os.path.join(cli_run, "sft")
    again = train(GRPOConfig(task="toy", init=init, steps=2, seed=3, out=str(tmp_path), compare_naive=True,
                             **SMALL))
    assert _untimed(_rows(str(tmp_path))) == _untimed(_rows(cli_run))
    assert again["eval"]["2"] == json.load(open(os.path.join(cli_run, "summary.json")))["eval"]["2"]


def test_kl_epochs_accumulation_naive_scorer(cli_run, tmp_path):
    train(GRPOConfig(task="toy", init=os.path.join(cli_run, "sft"), steps=1, seed=1, out=str(tmp_path),
                     kl_coef=0.1, epochs=2, mini_batch_size=4, micro_batch_size=2, scorer="naive", alpha=0.5,
                     **SMALL))
    (row,) = _rows(str(tmp_path))
    assert row["kl"] >= 0.0 and math.isfinite(row["kl"])
    assert row["kl"] > 0.0  # two optimizer steps per epoch moved the policy off the reference
    assert math.isfinite(row["loss"]) and row["grad_norm"] > 0


def test_custom_verifier_without_scorer(cli_run, tmp_path):
    calls = []

    def always_right(completions, **kwargs):
        calls.append(kwargs)
        return [1.0] * len(completions)

    train(GRPOConfig(task="toy", init=os.path.join(cli_run, "sft"), steps=1, out=str(tmp_path), scorer="none",
                     alpha=0.0, **SMALL), verifier=always_right)
    (row,) = _rows(str(tmp_path))
    assert row["reward_mean"] == 1.0
    assert row["loss"] == 0.0 and row["grad_norm"] == 0.0  # equal rewards in a group: no advantage
    assert "segments_per_rollout" not in row
    assert len(calls) == 1 and len(calls[0]["answers"]) == 8 and len(calls[0]["prompts"]) == 8


@pytest.mark.parametrize("estimator, kl_coef", [("reinforce_plus_plus", 0.1), ("rloo", 0.0)])
def test_each_estimator_with_repro_trains(cli_run, tmp_path, estimator, kl_coef):
    """A toy run with REINFORCE++ (its KL a token reward) and with RLOO, alpha > 0: the policy moves."""
    import torch
    from transformers import AutoModelForCausalLM

    init = os.path.join(cli_run, "sft")
    summary = train(GRPOConfig(task="toy", init=init, steps=2, seed=2, out=str(tmp_path), estimator=estimator,
                               alpha=0.2, kl_coef=kl_coef, **SMALL))
    assert summary["estimator"] == estimator
    rows = _rows(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["process_adv_abs_mean"] > 0
    if kl_coef:  # the KL in REINFORCE++'s reward: 0 on step 1 (policy = reference), then not
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[1]["kl"] != 0.0
    before = AutoModelForCausalLM.from_pretrained(init).state_dict()
    after = AutoModelForCausalLM.from_pretrained(os.path.join(str(tmp_path), "final")).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
