"""`repro_fast.model`: the model as the scorer sees it. `scoring_mode` (eval, no autograd, every
module's flag restored, a frozen block included); `ModelAdapter`'s head statistics and
`response_pass` against the model's own forward (plain, soft-capped and logit-scaled heads, fp32 and
bf16 weights, inside ``torch.autocast`` as TRL and accelerate run with ``bf16=True``); the head looked
up on every call (resized embeddings); `verify` refusing a model
that is not decoder + head or gives NaN / inf logits; learned-position limits.

Fault (autocast): the scorer cast the rows to bf16 with autocast off, then called the fp32 head
(``expected m1 and m2 to have the same dtype``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import make_scaled_head_model
from data import family_batch

from repro_fast import RePROConfig, RePROScorer
from repro_fast.model import ModelAdapter, scoring_mode, text_config

Q = [15496, 995, 30]  # "Hello world?" in GPT-2's BPE
Y = [64, 13, 628, 65, 269, 628, 67, 304, 13, 628, 69]  # three segments
def _own_stats(model, q, y, temperature):
    """log p(y_t) and the entropy at every response position, from the model's own forward."""
    with torch.no_grad():
        logits = model(torch.tensor([q + y])).logits[0, len(q) - 1 : len(q) - 1 + len(y)].double()
    logp = torch.log_softmax(logits / temperature, -1)
    return logp.gather(1, torch.tensor(y)[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


# ------------------------------------------------------------------------------------------
# scoring_mode: no dropout, no autograd, flags restored
# ------------------------------------------------------------------------------------------


def test_scoring_mode_is_eval_without_grad_and_restores_every_flag(tiny_llama):
    model = copy.deepcopy(tiny_llama).train()
    model.model.layers[0].eval()  # a frozen block inside a training model
    before = {name: m.training for name, m in model.named_modules()}
    with scoring_mode(model):
        assert not torch.is_grad_enabled()
        assert not any(m.training for m in model.modules())
    assert torch.is_grad_enabled()
    assert {name: m.training for name, m in model.named_modules()} == before
    with pytest.raises(RuntimeError, match="inside"), scoring_mode(model):
        raise RuntimeError("inside")
    assert {name: m.training for name, m in model.named_modules()} == before  # restored on error too


def test_frozen_submodule_keeps_its_eval_mode(tiny_llama, gpt2_tokenizer):
    model = copy.deepcopy(tiny_llama).train()
    model.model.layers[0].eval()  # a frozen block
    RePROScorer(model, gpt2_tokenizer).score([Q], [[64, 65]], ["1"])
    assert model.training and not model.model.layers[0].training
    assert all(m.training for m in model.model.layers[1].modules())


def test_resized_embeddings_are_seen(tiny_llama, gpt2_tokenizer):
    model = copy.deepcopy(tiny_llama)
    scorer = RePROScorer(model, gpt2_tokenizer)
    before = scorer.score([Q], [[64, 65]], ["1"]).nll[0]
    model.resize_token_embeddings(50257 + 64)
    with torch.no_grad():
        model.get_output_embeddings().weight[-64:] = 5.0  # new rows change every softmax
    after = scorer.score([Q], [[64, 65]], ["1"]).nll[0]
    fresh = RePROScorer(model, gpt2_tokenizer).score([Q], [[64, 65]], ["1"]).nll[0]
    torch.testing.assert_close(after, fresh)
    assert not torch.allclose(after, before)


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_train_mode_scored_without_dropout_and_restored(gpt2_tokenizer, tiny_model_factory, backend):
    model = tiny_model_factory("gpt2")
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3), backend=backend)
    batch = family_batch(gpt2_tokenizer)
    reference = scorer.score(*batch)  # eval mode
    model.train()
    again = scorer.score(*batch)
    assert model.training, "the model must be left in the mode it came in"
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(again.token_logprobs, reference.token_logprobs, atol=0, rtol=0)
    for a, b in zip(again.nll, reference.nll):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not again.token_logprobs.requires_grad and not again.nll[0].requires_grad


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


# ------------------------------------------------------------------------------------------
# ModelAdapter: head statistics, response pass, capture, verify
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "cohere2"])
def test_response_pass_equals_the_models_own_log_softmax(tiny_model_factory, arch):
    """Every response token's log-prob and entropy at temperature tau, back to back, equal the
    log-softmax of the model's own logits / tau (plain, soft-capped and logit-scaled heads)."""
    model = make_scaled_head_model(arch) if arch in ("gemma2", "cohere2") else tiny_model_factory(arch)
    adapter = ModelAdapter(model, temperature=0.7)
    prompts = [Q, [5, 6]]
    responses = [Y, [64, 65, 66]]
    with torch.no_grad():
        out = adapter.response_pass([np.array(q) for q in prompts], [np.array(y) for y in responses])
    expect = [_own_stats(model, q, y, 0.7) for q, y in zip(prompts, responses)]
    torch.testing.assert_close(out.logprobs.double(), torch.cat([lp for lp, _ in expect]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.entropies.double(), torch.cat([e for _, e in expect]), atol=1e-4, rtol=0)
    assert out.hidden is None and out.cache is None  # nothing kept unless asked
    with torch.no_grad():
        kept = adapter.response_pass([np.array(Q)], [np.array(Y)], keep=True)
    assert kept.hidden.shape[:2] == (1, len(Q) + len(Y)) and kept.cache is not None
    assert kept.offset.tolist() == kept.position_base.tolist() == [len(Q)] and kept.key_start.tolist() == [0]


def test_max_positions_and_text_config(tiny_model_factory):
    """Learned position tables bound the input (GPT-2's 512 rows); rotary models have none."""
    gpt2, llama = tiny_model_factory("gpt2"), tiny_model_factory("llama")
    assert ModelAdapter(gpt2, 1.0).max_positions == 512
    assert ModelAdapter(llama, 1.0).max_positions is None
    assert text_config(llama) is llama.config.get_text_config()


def test_verify_refuses_a_model_that_is_not_decoder_plus_head(tiny_llama):
    model = copy.deepcopy(tiny_llama)

    class Shifted(type(model)):
        def forward(self, *args, **kwargs):  # logits that the decoder + head split cannot give
            out = super().forward(*args, **kwargs)
            out.logits = out.logits + 1.0
            return out

    model.__class__ = Shifted
    with torch.no_grad():
        with pytest.raises(TypeError, match="decoder"):
            ModelAdapter(model, 1.0).verify(Q + Y)
        ModelAdapter(tiny_llama, 1.0).verify(Q + Y)  # the real model passes


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_nan_in_logits(tiny_llama, gpt2_tokenizer, backend):
    bad = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        bad.lm_head.weight[5].fill_(float("nan"))
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        RePROScorer(bad, gpt2_tokenizer, backend=backend).score([Q], [Y], ["1"])


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_inf_in_logits(tiny_llama, gpt2_tokenizer, backend):
    bad = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        bad.model.norm.weight.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        RePROScorer(bad, gpt2_tokenizer, backend=backend).score([Q], [Y], ["1"])


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", ["gemma2", "cohere2"])
def test_scores_under_autocast_like_the_models_own_forward(gpt2_tokenizer, arch, weights):
    model = make_scaled_head_model(arch).to(weights)
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = scorer.score([Q], [Y], ["7"])
        with torch.no_grad():
            logits = model(torch.tensor([Q + Y])).logits[0, len(Q) - 1: len(Q) - 1 + len(Y)]
    own = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(Y)[:, None])[:, 0]
    # The same bf16 logits, normalized in fp32 by both: equal up to the log-softmax's own rounding.
    torch.testing.assert_close(result.token_logprobs[0], own, atol=1e-4, rtol=0)
    assert torch.isfinite(result.nll[0]).all()
    if arch == "gemma2":  # the cap is active: no logit above it, so no log-prob below -2 * cap
        assert float(own.min()) >= -2 * 3.0 - torch.log(torch.tensor(50257.0)).item()
