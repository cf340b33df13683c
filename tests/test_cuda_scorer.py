"""The scorer on CUDA (run by benchmarks/gpu_check.sh; skipped on machines without a GPU).

On CUDA the fast backend takes the Triton head; the naive backend on the same model is the
reference. fp32 must agree within SPEC §7's tolerance; bf16 within the bound documented here.
"""

from __future__ import annotations

import pytest
import torch

from repro_fast import RePROConfig, RePROScorer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TEXTS = [
    "First we add 7 and 8.\n\nThat gives 15.\nWait, let me check 7 + 8 again.\n\n"
    "Yes, 15.\n\nSo the total is 30?\nYes.</think>\n\nThe answer is \\boxed{30}.",
    "",
    "One line, no boundary",
    "a.\n\nb.\n\nc.\n\nd.\n\ne.\n\nf.\n\ng",
]


def _batch(tok):
    prompts = [tok.encode(p, add_special_tokens=False) for p in
               ("Question: 7 + 8 twice?", "Hi", "A much longer prompt " * 20, "x")]
    responses = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    return prompts, responses, ["30", "1", "x", "12"], [0, 0, 1, 1]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_fast_matches_naive_on_cuda(gpt2_tokenizer, tiny_model_factory, arch, dtype, atol):
    model = tiny_model_factory(arch).to("cuda", dtype)
    config = RePROConfig(num_segments=3)
    batch = _batch(gpt2_tokenizer)
    naive = RePROScorer(model, gpt2_tokenizer, config, backend="naive").score(*batch)
    fast = RePROScorer(model, gpt2_tokenizer, config, backend="fast").score(*batch)
    assert fast.token_logprobs.device.type == "cuda"
    if dtype == torch.float32:
        assert fast.points == naive.points
    for name in ("token_logprobs", "token_entropies"):
        torch.testing.assert_close(getattr(fast, name), getattr(naive, name), atol=atol, rtol=0)
    for b in range(len(TEXTS)):
        if fast.points[b] == naive.points[b]:
            torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=atol, rtol=0)
            torch.testing.assert_close(fast.score[b], naive.score[b], atol=atol, rtol=0)


def test_fast_uses_triton_head_on_cuda(gpt2_tokenizer, tiny_model_factory, monkeypatch):
    from repro_fast.ops import logprob_entropy
    calls = []
    real = logprob_entropy.fused_logprob_entropy

    def spy(*args, **kwargs):
        calls.append((args[0].device.type, kwargs.get("backend")))
        return real(*args, **kwargs)

    from repro_fast.ops import prefix_limited_attention

    launches = []
    real_attention = prefix_limited_attention._prefix_attention_triton
    monkeypatch.setattr(prefix_limited_attention, "_prefix_attention_triton",
                        lambda *a, **k: launches.append(a[0].shape) or real_attention(*a, **k))
    monkeypatch.setattr("repro_fast.ops.fused_logprob_entropy", spy)
    model = tiny_model_factory("llama").to("cuda")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3))
    assert scorer.kernels == "triton" and scorer.backend.prefix_kernel
    scorer.score(*_batch(gpt2_tokenizer))
    assert calls and set(calls) == {("cuda", "triton")}
    assert launches, "phase 2 did not run the prefix-limited attention kernel"
