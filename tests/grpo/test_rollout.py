"""`repro_fast.grpo.rollout`: G samples per prompt, prompt-major (group g = rows g*G..g*G+G-1), by plain
ancestral sampling at temperature tau (no top-k / top-p: the distribution RePro's token log-probs
measure), each response cut after its EOS (kept) or flagged truncated, prompts left-padded, seeded
draws repeatable, and the model's train / eval mode restored. On the toy task's tiny model."""

from __future__ import annotations

import random

import pytest
import torch

from repro_fast.grpo.rollout import _left_padded, generate, rollout
from repro_fast.grpo.tasks import ToyTask


@pytest.fixture(scope="module")
def toy():
    task = ToyTask()
    model, tok = task.fresh(seed=0)
    problems = task.train_problems(random.Random(0), 3)
    return model, tok, [task.encode_prompt(tok, p) for p in problems], [p.answer for p in problems]


def test_left_padded():
    ids, mask = _left_padded([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_rollout_is_prompt_major_and_seeded(toy):
    model, tok, prompts, answers = toy
    torch.manual_seed(1)
    ro = rollout(model, tok, prompts, answers, group_size=4, temperature=1.0, max_new_tokens=12)
    assert ro.prompts == [p for p in prompts for _ in range(4)]
    assert ro.group_ids == [0] * 4 + [1] * 4 + [2] * 4
    assert ro.answers == [a for a in answers for _ in range(4)]
    assert len(ro.responses) == len(ro.texts) == len(ro.truncated) == 12
    eos = tok.eos_token_id
    for response, text, truncated in zip(ro.responses, ro.texts, ro.truncated):
        assert 1 <= len(response) <= 12
        assert truncated == (eos not in response)
        if not truncated:
            assert response.index(eos) == len(response) - 1, "cut right after EOS, EOS kept"
        assert text == tok.decode(response, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    torch.manual_seed(1)
    again = rollout(model, tok, prompts, answers, group_size=4, temperature=1.0, max_new_tokens=12)
    assert again.responses == ro.responses
    assert len({tuple(r) for r in ro.responses}) > 1, "sampling, not one greedy answer repeated"


def test_generate_samples_plainly_at_tau_and_restores_the_mode(toy, monkeypatch):
    model, tok, prompts, _ = toy
    seen = []
    real = model.generate

    def spy(*args, generation_config, **kwargs):
        seen.append(generation_config)
        assert not model.training, "sampling runs in eval mode"
        return real(*args, generation_config=generation_config, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    model.train()
    try:
        responses, truncated = generate(model, tok, prompts, temperature=0.7, max_new_tokens=3, batch_size=2)
    finally:
        assert model.training, "the caller's train mode is restored"
        model.eval()
    assert len(seen) == 2  # batches of at most batch_size prompts
    config = seen[0]
    assert config.do_sample and config.temperature == 0.7 and config.top_k == 0 and config.top_p == 1.0
    assert config.max_new_tokens == 3 and config.eos_token_id == tok.eos_token_id
    assert len(responses) == len(truncated) == len(prompts)
    greedy, _ = generate(model, tok, prompts, greedy=True, max_new_tokens=5)
    assert greedy == generate(model, tok, prompts, greedy=True, max_new_tokens=5)[0]
    assert not seen[-1].do_sample

