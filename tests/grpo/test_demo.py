"""`repro_fast.grpo.demo` (`repro-fast demo`): SFT, then GRPO with and without RePro on the toy task;
its printout shows one "before" row for the one SFT model (step 0 of both runs, the held-out eval
described as sampled) and, beside the table, that one seed cannot separate the runs; its summary holds
one SFT accuracy (step 0 of the evaluation), its plots are written; a bad setting is refused."""

from __future__ import annotations

import json

import pytest

import repro_fast.grpo.demo as grpo_demo
from repro_fast.grpo.config import ConfigError


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
    # beside the table: one seed cannot separate the runs; the study can
    lines = out.splitlines()
    last_row = max(i for i, line in enumerate(lines) if line.startswith("| "))
    assert lines[last_row + 1] == grpo_demo.ONE_SEED_NOTE and "repro-fast study" in grpo_demo.ONE_SEED_NOTE
    # one SFT accuracy in the summary: step 0 of the runs' evaluation; the SFT's own checks stay in sft/
    def accuracies(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from accuracies(value, f"{path}/{key}")
        elif "accuracy" in path.rsplit("/", 1)[-1]:
            yield path

    saved = json.loads((tmp_path / "demo_summary.json").read_text())
    found = list(accuracies(saved))
    assert "/runs/plain GRPO/eval/0/accuracy" in found and not [p for p in found if p.startswith("/sft")]
    assert saved["sft"]["own_checks"] == "sft/sft_summary.json"
    assert "eval_accuracy" in json.loads((tmp_path / "sft" / "sft_summary.json").read_text())
    for name in ("accuracy.png", "response_length.png", "scoring_time.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 0
    with pytest.raises(ConfigError, match="eval_problems"):
        run_training_demo(out=str(tmp_path), eval_problems=0)
