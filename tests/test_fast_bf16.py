"""bf16 models: the fast backend against the naive one at the same dtype, and both against fp32.

Measured (tiny Llama / Qwen2 / GPT-2, CPU, 2026-11): fast vs naive in bf16 differ by at most
3.1e-3 in NLL at NLL = 12.5 (2.5e-4 relative: attention sums in another order over the cache than
over a recomputed prefix) and 0 in token log-probs; each is 1e-2 to 3e-2 away from the fp32
model, the cost of bf16 weights, not of the fast path. Asserted: fast vs naive within
1e-3 + 1e-3 x |NLL|, and the flash-attention rule fast's error vs fp32 <= 2 x naive's + 1e-3.
"""

from __future__ import annotations

import pytest
import torch

from repro_fast import RePROConfig, RePROScorer

TEXTS = [
    "First we add.\n\nThen we check 7 + 8 = 15.\nSo far so good?\nYes.\n\n\n\nDone</think>\\boxed{4}",
    "",
    "a.\n\nb.\n\nc.\n\nd.\n\ne." * 4,
]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_fast_bf16_error_bound(gpt2_tokenizer, tiny_model_factory, arch):
    tok = gpt2_tokenizer
    prompts = [tok.encode("Question: 2+2?"), tok.encode("Hi"), [5, 6, 7]]
    responses = [tok.encode(t) for t in TEXTS]
    answers = ["4", "4", "12"]
    config = RePROConfig(num_segments=3)
    m32 = tiny_model_factory(arch)
    m16 = tiny_model_factory(arch).to(torch.bfloat16)
    ref = RePROScorer(m32, tok, config, backend="naive").score(prompts, responses, answers)
    naive = RePROScorer(m16, tok, config, backend="naive").score(prompts, responses, answers)
    fast = RePROScorer(m16, tok, config, backend="fast").score(prompts, responses, answers)
    assert fast.points == naive.points
    for b in range(len(TEXTS)):
        torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=1e-3, rtol=1e-3)
        if fast.points[b] == ref.points[b]:
            fast_err = (fast.nll[b] - ref.nll[b]).abs().max()
            naive_err = (naive.nll[b] - ref.nll[b]).abs().max()
            assert fast_err <= 2 * naive_err + 1e-3
    lp_fast = (fast.token_logprobs - ref.token_logprobs).abs().max()
    lp_naive = (naive.token_logprobs - ref.token_logprobs).abs().max()
    assert lp_fast <= 2 * lp_naive + 1e-3
