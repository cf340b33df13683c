"""`repro_fast.scoring_demo` (`repro-fast demo --scoring`): score real GSM8K chains of thought, print
one row per scored segment (J = -NLL, S_magn, S_stab, r as the result holds them), then time the fast
and naive backends, each after an untimed warm-up call, under the demo's thread count (restored
after). Fast with a tiny random model in place of SmolLM2; with the real SmolLM2 (slow)."""

from __future__ import annotations

import re

import pytest
import torch

import repro_fast.scoring_demo as demo
from repro_fast import RePROConfig, RePROScorer


def test_scoring_demo_prints_each_segment_of_the_result(tiny_llama, gpt2_tokenizer, monkeypatch, capsys):
    monkeypatch.setattr(demo, "load_smollm2", lambda **kwargs: (tiny_llama, gpt2_tokenizer))
    timings = demo.run_demo(num_problems=2, num_segments=3, width=30)
    out = capsys.readouterr().out
    assert set(timings["warmup"]) == set(timings["timed"]) == {"fast", "naive"}
    assert all(t > 0 for t in timings["timed"].values())
    # the same scoring, done here: every printed row is a segment of this result
    problems = demo.gsm8k_problems(limit=2)
    prompts = [gpt2_tokenizer.encode(p.question + demo.INSTRUCTION) for p in problems]  # no chat template
    responses = [gpt2_tokenizer.encode(p.chain_of_thought(), add_special_tokens=False) for p in problems]
    res = RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(num_segments=3)).score(
        prompts, responses, [p.answer for p in problems])
    rows = re.findall(r"^\| (\d+) \| (\d+)-(\d+) \| .* \| (\S+) \| (\S+) \| (\S+) \| (\S+) \|$", out, re.M)
    assert len(rows) == sum(len(p) - 1 for p in res.points) > 2  # segments of both problems
    expected = []
    for b, pts in enumerate(res.points):
        for j in range(1, len(pts)):
            expected.append((str(j), str(pts[j - 1]), str(pts[j]), f"{-res.nll[b][j].item():.4f}",
                             f"{res.s_magn[b][j - 1].item():.4f}", f"{res.s_stab[b][j - 1].item():.4f}",
                             f"{res.rewards[b][j - 1].item():+.4f}"))
    assert rows == expected
    assert "after an untimed warm-up call on the same batch: fast" in out


@pytest.mark.slow
def test_scoring_demo_times_after_warmup(smollm2, monkeypatch, capsys):
    monkeypatch.setattr(demo, "load_smollm2", lambda **kwargs: smollm2)
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
