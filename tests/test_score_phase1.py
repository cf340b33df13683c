"""`RePROScorer.capture_phase1` + `score_phase1` (SPEC §7, phase 1 from the trainer's own forward):
a trainer-style forward over left-padded prompts + right-padded completions is recorded, and the
scorer adds only selection and the extend step. Checked against `score_padded` on the same
trajectories (which runs its own phase 1), in fp32 and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model
from repro_fast import RePROConfig, RePROScorer

TEXTS = ["a.\n\nb.\n\nc?\nd</think>e", "", "x", "one.\n\ntwo.\n\nthree.\n\nfour.\n\nfive"]


def trainer_batch(tok):
    """TRL's layout: prompts left-padded, completions right-padded (pad id 0 under the masks)."""
    prompts = [tok.encode("Hello world?"), tok.encode("Q"), tok.encode("Question: what is 2 + 5?"), [64, 65]]
    completions = [tok.encode(t) for t in TEXTS]
    lq, lc = max(map(len, prompts)), max(map(len, completions))
    prompt_ids = torch.tensor([[0] * (lq - len(q)) + q for q in prompts])
    prompt_mask = torch.tensor([[0] * (lq - len(q)) + [1] * len(q) for q in prompts])
    completion_ids = torch.tensor([y + [0] * (lc - len(y)) for y in completions])
    completion_mask = torch.tensor([[1] * len(y) + [0] * (lc - len(y)) for y in completions])
    return prompt_ids, prompt_mask, completion_ids, completion_mask, ["7", "3", "7", "12"], [0, 0, 1, 1]


def trainer_forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask, position_ids=None):
    """What a trainer runs for its old log-probs: one forward, log-softmax, gather; entropies."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    logits = logits[:, prompt_ids.shape[1] - 1: -1].float()
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, completion_ids[..., None])[..., 0], -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gpt2"])
def test_agrees_with_score_padded_in_fp32(gpt2_tokenizer, arch):
    model = make_tiny_model(arch)
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    # GPT-2 looks its positions up: the trainer passes them counting from each row's first token.
    positions = (torch.cat([pm, cm], 1).cumsum(1) - 1).clamp_min(0) if arch == "gpt2" else None
    with scorer.capture_phase1() as phase1:
        logps, entropies = trainer_forward(model, pi, pm, ci, cm, positions)
    got = scorer.score_phase1(phase1, pi, pm, ci, cm, answers, groups,
                              token_logprobs=logps, token_entropies=entropies)
    expected = scorer.score_padded(pi, pm, ci, cm, answers, groups)
    assert got.token_logprobs is logps  # the trainer's tensor itself
    real = cm.bool()
    torch.testing.assert_close(logps[real], expected.token_logprobs[real], atol=1e-4, rtol=0)
    assert got.points == expected.points
    for b in range(len(TEXTS)):
        torch.testing.assert_close(got.nll[b], expected.nll[b], atol=1e-4, rtol=0)
        torch.testing.assert_close(got.rewards[b], expected.rewards[b], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.token_entropies, expected.token_entropies, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.process_advantages, expected.process_advantages, atol=1e-3, rtol=0)
    assert torch.equal(got.reward_mask, expected.reward_mask)


def test_agrees_with_score_padded_under_bf16_autocast(gpt2_tokenizer):
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with scorer.capture_phase1() as phase1:
            logps, entropies = trainer_forward(model, pi, pm, ci, cm)
        got = scorer.score_phase1(phase1, pi, pm, ci, cm, answers, groups,
                                  token_logprobs=logps, token_entropies=entropies)
        expected = scorer.score_padded(pi, pm, ci, cm, answers, groups)
    assert got.token_logprobs is logps
    for b in range(len(TEXTS)):  # bf16: the README's bound, as for score() vs the naive backend
        if got.points[b] == expected.points[b]:
            bound = 1e-2 + 1e-2 * float(expected.nll[b].abs().max())
            torch.testing.assert_close(got.nll[b], expected.nll[b], atol=bound, rtol=0)


def test_bad_records_and_layouts_are_named(gpt2_tokenizer):
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer)
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    with scorer.capture_phase1() as phase1:
        logps, entropies = trainer_forward(model, pi, pm, ci, cm)
    kwargs = dict(token_logprobs=logps, token_entropies=entropies)
    with pytest.raises(TypeError, match="phase1"):
        scorer.score_phase1(object(), pi, pm, ci, cm, answers, **kwargs)
    with pytest.raises(TypeError, match="token_entropies"):
        scorer.score_phase1(phase1, pi, pm, ci, cm, answers, token_logprobs=logps, token_entropies=entropies[:, 1:])
    right = torch.stack([torch.roll(r, int((r == 0).sum())) for r in pm])  # right-padded prompts
    with pytest.raises(ValueError, match="prompt_mask: row 0 is not left-padded"):
        scorer.score_phase1(phase1, pi, right, ci, cm, answers, **kwargs)
    with scorer.capture_phase1() as twice:
        trainer_forward(model, pi, pm, ci, cm)
        trainer_forward(model, pi, pm, ci, cm)
    with pytest.raises(ValueError, match="phase1: expected one decoder call"):
        scorer.score_phase1(twice, pi, pm, ci, cm, answers, **kwargs)
    with pytest.raises(TypeError, match="backend='fast'"):
        RePROScorer(model, gpt2_tokenizer, backend="naive").capture_phase1()
