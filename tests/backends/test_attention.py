"""`repro_fast.backends.attention`: the prefix-limited attention plugged into transformers for phase 2.
`register` is repeat-safe, the attention refuses a call without its metadata, `phase2_attention`
switches the model only inside its block and restores it (on an error too), and the fast backend
with phase 2 through the Triton kernel equals the naive backend on every tiny architecture.

On CPU the kernel runs under the Triton interpreter (tests/ops/conftest.py sets
TRITON_INTERPRET=1 before any kernel is built; this file sets it the same way). Only the
attention is forced to Triton here: the LM head stays on its torch path, since the interpreted
head over GPT-2's 50k vocabulary would take minutes.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from repro_fast import RePROConfig, RePROScorer  # noqa: E402
from repro_fast.backends import attention  # noqa: E402
from repro_fast.backends import fast as fast_module  # noqa: E402
from repro_fast.ops import prefix_limited_attention  # noqa: E402

TEXTS = [
    "First we add.\n\nThen we check 7 + 8 = 15.\nSo far so good?\nYes.\n\n\n\nDone</think>\\boxed{4}",
    "",
    "no boundaries here",
    "a.\n\nb.\n\nc",
]


@pytest.fixture
def kernel_calls(monkeypatch):
    """Force the kernel for phase 2 and count its launches."""
    calls = []
    real = prefix_limited_attention._prefix_attention_triton

    def spy(*args, **kwargs):
        calls.append(tuple(args[0].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(prefix_limited_attention, "_prefix_attention_triton", spy)
    real_init = fast_module.FastBackend.__init__

    def init(self, *args, **kwargs):  # kernels stay "torch" for the head: only attention is forced
        real_init(self, *args, **kwargs)
        self.prefix_kernel = True

    monkeypatch.setattr(fast_module.FastBackend, "__init__", init)
    return calls


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gpt2"])
def test_fast_with_prefix_kernel_matches_naive(gpt2_tokenizer, tiny_models, kernel_calls, arch):
    model = tiny_models[arch]
    tok = gpt2_tokenizer
    prompts = [tok.encode(p) for p in ("Question: 2+2?", "Hi", "A longer prompt here " * 5, "x")]
    responses = [tok.encode(t) for t in TEXTS]
    answers = ["4", "4", "x", "12"]
    config = RePROConfig(num_segments=3)
    naive = RePROScorer(model, tok, config, backend="naive").score(prompts, responses, answers)
    before = model.config._attn_implementation
    fast = RePROScorer(model, tok, config, backend="fast").score(prompts, responses, answers)
    assert kernel_calls, "phase 2 did not go through the prefix-limited kernel"
    assert len(kernel_calls) == model.config.num_hidden_layers  # one launch per layer
    assert model.config._attn_implementation == before, "the model's attention was not restored"
    assert fast.points == naive.points
    for b in range(len(TEXTS)):
        torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=1e-4, rtol=0)
        torch.testing.assert_close(fast.rewards[b], naive.rewards[b], atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.process_advantages, naive.process_advantages, atol=1e-3, rtol=0)


def test_attention_restored_after_error(gpt2_tokenizer, tiny_models, kernel_calls, monkeypatch):
    model = tiny_models["llama"]
    before = model.config._attn_implementation
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2), backend="fast")

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(prefix_limited_attention, "_prefix_attention_triton", boom)  # fails inside phase 2
    with pytest.raises(RuntimeError, match="boom"):
        scorer.score([[1, 2]], [[3, 4, 5]], ["1"])
    assert model.config._attn_implementation == before


def test_register_is_repeat_safe():
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert attention.register() == attention.register() == attention.NAME
    assert ALL_ATTENTION_FUNCTIONS[attention.NAME] is attention._attention
    assert ALL_MASK_ATTENTION_FUNCTIONS[attention.NAME]() is None  # the kernel needs no dense mask


def test_attention_without_metadata_is_refused():
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="repro_prefix=PrefixMeta"):
        attention._attention(None, q, q, q, None)


def test_phase2_attention_switches_only_inside_its_block(tiny_models):
    model = tiny_models["qwen2"]
    before = model.config._attn_implementation
    assert before != attention.NAME
    with attention.phase2_attention(model):
        assert model.config._attn_implementation == attention.NAME
        assert all(getattr(m.config, "_attn_implementation", attention.NAME) == attention.NAME
                   for m in model.modules() if hasattr(m, "config"))
    assert model.config._attn_implementation == before
    with pytest.raises(ValueError, match="inside"), attention.phase2_attention(model):
        raise ValueError("inside")
    assert model.config._attn_implementation == before
