"""The fast backend across decoder families and dtypes, and how it treats the model.

Mistral and Gemma (1 and 2: embedding scaling, logit soft-capping, attention soft-capping,
sliding-window config) on top of the Llama/Qwen2/Qwen3/GPT-2 set of test_fast_vs_naive.py;
fp16; a model in train mode (scored without dropout, left in train mode); no autograd graph;
a decoder that returns no KV cache; inputs longer than a sliding window.
"""

from __future__ import annotations

import pytest
import torch

from repro_fast import RePROConfig, RePROScorer

TEXTS = [
    "First we add.\n\nThen we check 7 + 8 = 15.\nSo far so good?\nYes.\n\n\n\nDone</think>\\boxed{4}",
    "",
    "a.\n\nb.\n\nc.\n\nd.",
]


def _batch(tok):
    prompts = [tok.encode("Question: 2+2?"), tok.encode("Hi"), [5, 6, 7, 8, 9, 10, 11]]
    return prompts, [tok.encode(t) for t in TEXTS], ["4", "4", "12"], [0, 0, 1]


def _tiny(family: str):
    import transformers as tf

    common = dict(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  max_position_embeddings=512, initializer_range=0.25)
    config = {
        "mistral": lambda: tf.MistralConfig(sliding_window=None, **common),
        "gemma": lambda: tf.GemmaConfig(**common),
        "gemma2": lambda: tf.Gemma2Config(final_logit_softcapping=5.0, attn_logit_softcapping=20.0,
                                          sliding_window=256, query_pre_attn_scalar=8, **common),
    }[family]()
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.mark.parametrize("family", ["mistral", "gemma", "gemma2"])
def test_fast_matches_naive_other_families(gpt2_tokenizer, family):
    model = _tiny(family)
    config = RePROConfig(num_segments=3)
    batch = _batch(gpt2_tokenizer)
    naive = RePROScorer(model, gpt2_tokenizer, config, backend="naive").score(*batch)
    fast = RePROScorer(model, gpt2_tokenizer, config, backend="fast").score(*batch)
    assert fast.points == naive.points
    for b in range(len(TEXTS)):
        torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.token_logprobs, naive.token_logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.token_entropies, naive.token_entropies, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.process_advantages, naive.process_advantages, atol=1e-3, rtol=0)


def test_gemma2_logits_match_its_own_forward(gpt2_tokenizer):
    """Soft-capped logits: token log-probs equal log_softmax of the model's own forward."""
    model = _tiny("gemma2")
    prompts, responses, answers, _ = _batch(gpt2_tokenizer)
    res = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3)).score(
        prompts[:1], responses[:1], answers[:1])
    ids = torch.tensor([prompts[0] + responses[0]])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    q, n = len(prompts[0]), len(responses[0])
    expect = torch.log_softmax(logits[q - 1 : q - 1 + n], -1).gather(
        1, torch.tensor(responses[0])[:, None])[:, 0]
    torch.testing.assert_close(res.token_logprobs[0, :n].double(), expect, atol=1e-4, rtol=0)


def test_fp16_fast_close_to_naive(gpt2_tokenizer, tiny_model_factory):
    model = tiny_model_factory("llama").to(torch.float16)
    config = RePROConfig(num_segments=3)
    batch = _batch(gpt2_tokenizer)
    naive = RePROScorer(model, gpt2_tokenizer, config, backend="naive").score(*batch)
    fast = RePROScorer(model, gpt2_tokenizer, config, backend="fast").score(*batch)
    assert fast.points == naive.points
    assert fast.token_logprobs.dtype == torch.float32
    for b in range(len(TEXTS)):
        torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_train_mode_scored_without_dropout_and_restored(gpt2_tokenizer, tiny_model_factory, backend):
    model = tiny_model_factory("gpt2")
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3), backend=backend)
    batch = _batch(gpt2_tokenizer)
    reference = scorer.score(*batch)  # eval mode
    model.train()
    again = scorer.score(*batch)
    assert model.training, "the model must be left in the mode it came in"
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(again.token_logprobs, reference.token_logprobs, atol=0, rtol=0)
    for a, b in zip(again.nll, reference.nll):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not again.token_logprobs.requires_grad and not again.nll[0].requires_grad


def test_decoder_without_cache_is_a_clear_error(gpt2_tokenizer, tiny_model_factory, monkeypatch):
    scorer = RePROScorer(tiny_model_factory("llama"), gpt2_tokenizer, RePROConfig(num_segments=2))
    real = scorer.adapter.hidden

    def no_cache(*args, **kwargs):
        hidden, _ = real(*args, **kwargs)
        return hidden, None

    monkeypatch.setattr(scorer.adapter, "hidden", no_cache)
    with pytest.raises(TypeError, match="no KV cache"):
        scorer.score([[1, 2]], [[3, 4, 5]], ["1"])


def test_longer_than_sliding_window_is_refused(gpt2_tokenizer):
    model = _tiny("gemma2")  # sliding_window = 256
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2), backend="fast")
    with pytest.raises(ValueError, match="sliding window"):
        scorer.score([[1] * 200], [[2] * 100], ["1"])
    naive = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2), backend="naive")
    assert len(naive.score([[1] * 200], [[2] * 100], ["1"]).points[0]) >= 2


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_longer_than_learned_positions_is_a_clear_error(gpt2_tokenizer, backend):
    import transformers as tf

    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50257, n_embd=16, n_layer=1, n_head=2,
                                             n_positions=32)).eval()
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2), backend=backend)
    with pytest.raises(ValueError, match=r"responses\[1\].*position embedding has 32"):
        scorer.score([[1] * 10, [1] * 10], [[2] * 5, [2] * 30], ["1", "1"])
    # Exactly at the limit still scores: [q, y, a[:-1]] = 10 + 17 + |a| - 1 positions.
    answer_len = len(scorer.answer_ids("1"))
    result = scorer.score([[1] * 10], [[2] * (23 - answer_len)], ["1"])
    assert len(result.points[0]) >= 2
