"""`repro_fast.backends.fast`: backend="fast" against backend="naive" (both fp32) on random and real
trajectories: identical points; per-trajectory curves, token log-probs / entropies / rewards within
1e-4; process advantages within 1e-3 (SPEC §7). Ragged batches mix empty responses, responses
without candidates, and prompts of very different lengths; a hypothesis property test draws batch
shapes and contents; phase 2 holds m + 1 copies per trajectory, never k + 2.

Then the fast backend across decoder families and dtypes, and how it treats the model: Mistral and
Gemma (1 and 2: embedding scaling, logit soft-capping, attention soft-capping, sliding-window
config); fp16; bf16 within a documented bound; a decoder that returns no KV cache; inputs longer
than a sliding window; and on CUDA (skipped without a GPU; run by benchmarks/gpu_check.sh) the
Triton head and prefix kernel against the naive backend on the same model.

bf16, measured (tiny Llama / Qwen2 / GPT-2, CPU, 2026-11): fast vs naive in bf16 differ by at most
3.1e-3 in NLL at NLL = 12.5 (2.5e-4 relative: attention sums in another order over the cache than
over a recomputed prefix) and 0 in token log-probs; each is 1e-2 to 3e-2 away from the fp32
model, the cost of bf16 weights, not of the fast path. Asserted: fast vs naive within
1e-3 + 1e-3 x |NLL|, and the flash-attention rule fast's error vs fp32 <= 2 x naive's + 1e-3.
"""

from __future__ import annotations

import random

import pytest
import reference as R
import torch
from conftest import TINY_ARCHS
from data import DOT, FAMILY_TEXTS, GT, LTSLASH, NL, NLNL, QM, SPACE, THINK, family_batch, gsm8k_examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from repro_fast import RePROConfig, RePROScorer

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# a small alphabet that makes boundaries, blank tokens, think-end pieces and words likely
ALPHABET = [NL, NLNL, DOT, QM, SPACE, LTSLASH, THINK, GT, 64, 65, 87, 56, 15496, 995, 1495, 3682, 8447, 25970]


def well_conditioned(tok, responses, res, cfg, group_ids):
    """True when fp32 noise cannot legitimately change the result: no near-tie at the k-th
    entropy among candidates (checked with the naive backend's entropies) and no tiny nonzero
    normalization std. Returns (ok, why)."""
    rc = R.ref_config(cfg)
    for b, y in enumerate(responses):
        y = [int(v) for v in y]
        E, _ = R.think_bounds(tok, y, rc)
        cands = R.segment_starts(tok, y, E, rc)
        ent = res.token_entropies[b, : len(y)].double().tolist()
        if R.selection_margin(cands, ent, rc.num_segments) <= 1e-5:
            return False, f"entropy near-tie in trajectory {b}"
    rewards = [r.double().tolist() for r in res.rewards]
    sig = R.scope_sigmas(rewards, group_ids, rc.normalize)
    N = len(rewards)
    scope = [0] * N if rc.normalize == "batch" else (list(range(N)) if group_ids is None else list(group_ids))
    for b in range(N):
        count = sum(len(rewards[c]) for c in range(N) if scope[c] == scope[b])
        if count > 1 and sig[b] < 2e-3:
            return False, f"normalization std {sig[b]} in trajectory {b}"
    return True, ""


def both(model, tok, prompts, responses, answers, group_ids=None, cfg=None, fast_cfg=None):
    cfg = cfg or RePROConfig()
    naive = RePROScorer(model, tok, cfg, backend="naive").score(prompts, responses, answers, group_ids)
    fast = RePROScorer(model, tok, fast_cfg or cfg, backend="fast").score(
        prompts, responses, answers, group_ids
    )
    return naive, fast


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


LONG_PROMPT = (
    "You are a careful math tutor. Read the problem, reason step by step, separate the steps "
    "with blank lines, and put the final answer in a box. Problem: Tom has 12 apples, gives away "
    "5, buys 3 bags of 4 apples each, and eats 2. How many apples does Tom have now? " * 2
)

TEXTS = [
    "He starts with 12.\nHe gives away 5, so 7 are left.\n\nThen 3 bags of 4 is 12?\nSo 19 apples.\n\n\n"
    "He eats 2.</think>\\boxed{17}",
    "",  # empty response
    "no boundary in this response at all",  # no candidates
    "</think>\n\nThe answer is 17.",  # think end at token 0
    "First.\nSecond.\nThird.\nFourth.\nFifth.\nSixth.\nSeventh",
]


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize(
    "cfg",
    [
        RePROConfig(num_segments=2),
        RePROConfig(num_segments=20, normalize="batch", temperature=0.6),
        RePROConfig.authors_code(think_end=" Therefore", num_segments=3),
    ],
    ids=["k2_group", "k20_batch_t0.6", "authors_code"],
)
def test_ragged_batch(tiny_models, gpt2_tokenizer, arch, cfg):
    tok = gpt2_tokenizer
    model = tiny_models[arch]
    responses = [enc(tok, t) for t in TEXTS]
    prompts = [
        enc(tok, LONG_PROMPT),
        [15496],
        enc(tok, "Q: apples?\n"),
        enc(tok, LONG_PROMPT)[:40],
        [30, 198],
    ]
    assert max(map(len, prompts)) > 100 and min(map(len, prompts)) == 1
    answers = ["17", "17", "3", "17", "7"]
    groups = [0, 0, 1, 1, 1]
    naive, fast = both(model, tok, prompts, responses, answers, groups, cfg)
    ok, why = well_conditioned(tok, responses, naive, cfg, groups)
    assert ok, f"ill-conditioned test case: {why}"
    R.assert_results_close(fast, naive, label=f"fast vs naive {arch}")


def test_all_empty_responses(tiny_llama, gpt2_tokenizer):
    naive, fast = both(tiny_llama, gpt2_tokenizer, [[1, 2], [3]], [[], []], ["1", "2"], [0, 0])
    R.assert_results_close(fast, naive)
    assert tuple(fast.token_rewards.shape) == (2, 0)


def test_small_token_budget_matches(tiny_models, gpt2_tokenizer):
    # the fast backend may split the batch into micro-batches by token_budget; results must not change
    tok = gpt2_tokenizer
    model = tiny_models["qwen3"]
    responses = [enc(tok, t) for t in TEXTS]
    prompts = [enc(tok, LONG_PROMPT)[: 20 + 7 * i] for i in range(len(responses))]
    answers = ["17"] * len(responses)
    cfg = RePROConfig(num_segments=3)
    for budget in (64, 256):
        naive, fast = both(
            model, tok, prompts, responses, answers, None, cfg, cfg.replace(token_budget=budget)
        )
        ok, why = well_conditioned(tok, responses, naive, cfg, None)
        assert ok, why
        R.assert_results_close(fast, naive, label=f"token_budget={budget}")


def test_auto_is_fast(tiny_llama, gpt2_tokenizer):
    tok = gpt2_tokenizer
    prompts = [enc(tok, "Q: apples?\n")] * 2
    responses = [enc(tok, TEXTS[0]), enc(tok, TEXTS[4])]
    cfg = RePROConfig(num_segments=2)
    fast = RePROScorer(tiny_llama, tok, cfg, backend="fast").score(prompts, responses, ["17", "7"])
    auto = RePROScorer(tiny_llama, tok, cfg).score(prompts, responses, ["17", "7"])
    R.assert_results_close(auto, fast, atol=1e-6, adv_atol=1e-5)


def test_batch_composition_does_not_matter(tiny_models, gpt2_tokenizer):
    # per-trajectory quantities of the fast backend do not depend on what else is in the batch
    # (normalize="none" so that rewards are per trajectory too)
    tok = gpt2_tokenizer
    model = tiny_models["llama"]
    cfg = RePROConfig(num_segments=2, normalize="none")
    prompts = [enc(tok, LONG_PROMPT), [15496], enc(tok, "Q: apples?\n")]
    responses = [enc(tok, TEXTS[0]), enc(tok, TEXTS[4]), []]
    s = RePROScorer(model, tok, cfg, backend="fast")
    full = s.score(prompts, responses, ["17", "7", "1"])
    for b in range(3):
        one = s.score([prompts[b]], [responses[b]], [["17", "7", "1"][b]])
        assert [int(p) for p in one.points[0]] == [int(p) for p in full.points[b]]
        n = len(responses[b])
        for name in ("nll", "rewards"):
            torch.testing.assert_close(
                getattr(one, name)[0].double(), getattr(full, name)[b].double(), atol=1e-4, rtol=0
            )
        for name in ("token_logprobs", "token_entropies", "process_advantages"):
            torch.testing.assert_close(
                getattr(one, name)[0, :n].double(), getattr(full, name)[b, :n].double(), atol=1e-4, rtol=0
            )


# ------------------------------------------------------------------------------------------
# property test
# ------------------------------------------------------------------------------------------

traj = st.tuples(
    st.lists(st.integers(0, 50256), min_size=1, max_size=30),  # prompt
    st.lists(
        st.one_of(st.sampled_from(ALPHABET), st.integers(0, 50256)), min_size=0, max_size=40
    ),  # response
    st.sampled_from(["7", "12", "3.5", "-4"]),
)


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(traj, min_size=1, max_size=4),
    k=st.integers(1, 5),
    normalize=st.sampled_from(["group", "batch", "none"]),
    temperature=st.sampled_from([0.5, 1.0, 1.7]),
    grouped=st.booleans(),
    arch_i=st.integers(0, len(TINY_ARCHS) - 1),
    seed=st.integers(0, 3),
)
def test_property_fast_equals_naive(
    tiny_models, gpt2_tokenizer, batch, k, normalize, temperature, grouped, arch_i, seed
):
    model = tiny_models[TINY_ARCHS[arch_i]]
    prompts = [b[0] for b in batch]
    responses = [b[1] for b in batch]
    answers = [b[2] for b in batch]
    groups = [random.Random(seed + i).randint(0, 1) for i in range(len(batch))] if grouped else None
    cfg = RePROConfig(num_segments=k, normalize=normalize, temperature=temperature)
    naive, fast = both(model, gpt2_tokenizer, prompts, responses, answers, groups, cfg)
    ok, _ = well_conditioned(gpt2_tokenizer, responses, naive, cfg, groups)
    assume(ok)
    R.assert_results_close(fast, naive, label="property")


# ------------------------------------------------------------------------------------------
# real model, real problems
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_fast_vs_naive(smollm2):
    model, tok = smollm2
    ex = gsm8k_examples(3, start=2)
    prompts, responses, answers = [], [], []
    for i, (q, cot, a) in enumerate(ex):
        ids = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        prompts.append([int(t) for t in ids])
        if i == 1:
            cot = cot.replace("\n\nThe answer is", "\n\n</think>\n\nThe answer is")
        responses.append(tok.encode(cot, add_special_tokens=False))
        answers.append(a)
    prompts.append(prompts[0][:5])  # a very short prompt
    responses.append([])  # and an empty response
    answers.append("1")
    groups = ["a", "a", "b", "b"]
    for cfg in (RePROConfig(num_segments=2), RePROConfig(normalize="batch")):
        naive, fast = both(model, tok, prompts, responses, answers, groups, cfg)
        ok, why = well_conditioned(tok, responses, naive, cfg, groups)
        assert ok, f"ill-conditioned test case: {why}"
        R.assert_results_close(fast, naive, label="smollm2 fast vs naive")


def test_batch_with_0_to_k_candidates_and_cost_from_real_points(tiny_llama, gpt2_tokenizer, monkeypatch):
    """Trajectories with 0, 1, ..., more than k candidates in one batch: identical points, J
    within SPEC §7; phase 2 holds each trajectory's m + 1 copies, never k + 2, so a huge k
    builds exactly the same phase-2 input as a k that covers every candidate."""
    from repro_fast.model import ModelAdapter

    tok = gpt2_tokenizer
    texts = [
        "",
        "x",
        "a.\n\nb",
        "a.\n\nb.\n\nc",
        "a.\n\nb.\n\nc?\nd</think>e",
        "1.\n\n2.\n\n3.\n\n4.\n\n5.\n\n6",
    ]
    prompts = [tok.encode("Q: what is it?")] * len(texts)
    responses = [tok.encode(t) for t in texts]
    answers = ["12"] * len(texts)  # '12' -> '\\boxed{12}': several answer tokens
    shapes = []
    real = ModelAdapter.run_decoder

    def spy(self, input_ids, *args, cache=None, **kwargs):
        if cache is not None:  # phase 2: the copies
            shapes.append(tuple(input_ids.shape))
        return real(self, input_ids, *args, cache=cache, **kwargs)

    monkeypatch.setattr(ModelAdapter, "run_decoder", spy)
    span = len(tok.encode("\\boxed{12}")) - 1
    by_k = {}
    for k in (3, 5, 65536):
        cfg = RePROConfig(num_segments=k)
        naive = RePROScorer(tiny_llama, tok, cfg, backend="naive").score(prompts, responses, answers)
        shapes.clear()
        fast = RePROScorer(tiny_llama, tok, cfg, backend="fast").score(prompts, responses, answers)
        R.assert_results_close(fast, naive, label=f"k={k}")
        counts = [len(p) for p in fast.points]
        assert shapes == [(len(texts), max(counts) * span)], (shapes, counts)
        by_k[k] = (fast.points, shapes[:])
    assert [len(p) - 1 for p in by_k[3][0]] == [0, 1, 2, 3, 4, 4]  # m: 0..k candidates, + F
    assert by_k[5] == by_k[65536]  # every candidate already selected: same points, same phase 2

# ==========================================================================================
# Other decoder families, fp16, and how the fast backend treats the model
# ==========================================================================================


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
    batch = family_batch(gpt2_tokenizer)
    naive = RePROScorer(model, gpt2_tokenizer, config, backend="naive").score(*batch)
    fast = RePROScorer(model, gpt2_tokenizer, config, backend="fast").score(*batch)
    assert fast.points == naive.points
    for b in range(len(FAMILY_TEXTS)):
        torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.token_logprobs, naive.token_logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.token_entropies, naive.token_entropies, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.process_advantages, naive.process_advantages, atol=1e-3, rtol=0)


def test_gemma2_logits_match_its_own_forward(gpt2_tokenizer):
    """Soft-capped logits: token log-probs equal log_softmax of the model's own forward."""
    model = _tiny("gemma2")
    prompts, responses, answers, _ = family_batch(gpt2_tokenizer)
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
    batch = family_batch(gpt2_tokenizer)
    naive = RePROScorer(model, gpt2_tokenizer, config, backend="naive").score(*batch)
    fast = RePROScorer(model, gpt2_tokenizer, config, backend="fast").score(*batch)
    assert fast.points == naive.points
    assert fast.token_logprobs.dtype == torch.float32
    for b in range(len(FAMILY_TEXTS)):
        torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=1e-3, rtol=1e-3)


def test_decoder_without_cache_is_a_clear_error(gpt2_tokenizer, tiny_model_factory, monkeypatch):
    scorer = RePROScorer(tiny_model_factory("llama"), gpt2_tokenizer, RePROConfig(num_segments=2))
    real = scorer.adapter.run_decoder

    def no_cache(*args, **kwargs):
        hidden, _ = real(*args, **kwargs)
        return hidden, None

    monkeypatch.setattr(scorer.adapter, "run_decoder", no_cache)
    with pytest.raises(ValueError, match="no KV cache"):
        scorer.score([[1, 2]], [[3, 4, 5]], ["1"])


def test_longer_than_sliding_window_is_refused(gpt2_tokenizer):
    model = _tiny("gemma2")  # sliding_window = 256
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2), backend="fast")
    with pytest.raises(ValueError, match="sliding window"):
        scorer.score([[1] * 200], [[2] * 100], ["1"])
    naive = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2), backend="naive")
    assert len(naive.score([[1] * 200], [[2] * 100], ["1"]).points[0]) >= 2

# ==========================================================================================
# bf16: fast vs naive at the same dtype, and both against fp32
# ==========================================================================================


BF16_TEXTS = [
    "First we add.\n\nThen we check 7 + 8 = 15.\nSo far so good?\nYes.\n\n\n\nDone</think>\\boxed{4}",
    "",
    "a.\n\nb.\n\nc.\n\nd.\n\ne." * 4,
]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_fast_bf16_error_bound(gpt2_tokenizer, tiny_model_factory, arch):
    tok = gpt2_tokenizer
    prompts = [tok.encode("Question: 2+2?"), tok.encode("Hi"), [5, 6, 7]]
    responses = [tok.encode(t) for t in BF16_TEXTS]
    answers = ["4", "4", "12"]
    config = RePROConfig(num_segments=3)
    m32 = tiny_model_factory(arch)
    m16 = tiny_model_factory(arch).to(torch.bfloat16)
    ref = RePROScorer(m32, tok, config, backend="naive").score(prompts, responses, answers)
    naive = RePROScorer(m16, tok, config, backend="naive").score(prompts, responses, answers)
    fast = RePROScorer(m16, tok, config, backend="fast").score(prompts, responses, answers)
    assert fast.points == naive.points
    for b in range(len(BF16_TEXTS)):
        torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=1e-3, rtol=1e-3)
        if fast.points[b] == ref.points[b]:
            fast_err = (fast.nll[b] - ref.nll[b]).abs().max()
            naive_err = (naive.nll[b] - ref.nll[b]).abs().max()
            assert fast_err <= 2 * naive_err + 1e-3
    lp_fast = (fast.token_logprobs - ref.token_logprobs).abs().max()
    lp_naive = (naive.token_logprobs - ref.token_logprobs).abs().max()
    assert lp_fast <= 2 * lp_naive + 1e-3

# ==========================================================================================
# CUDA: the Triton head and the prefix-limited kernel
# ==========================================================================================


CUDA_TEXTS = [
    "First we add 7 and 8.\n\nThat gives 15.\nWait, let me check 7 + 8 again.\n\n"
    "Yes, 15.\n\nSo the total is 30?\nYes.</think>\n\nThe answer is \\boxed{30}.",
    "",
    "One line, no boundary",
    "a.\n\nb.\n\nc.\n\nd.\n\ne.\n\nf.\n\ng",
]


def _cuda_batch(tok):
    prompts = [tok.encode(p, add_special_tokens=False) for p in
               ("Question: 7 + 8 twice?", "Hi", "A much longer prompt " * 20, "x")]
    responses = [tok.encode(t, add_special_tokens=False) for t in CUDA_TEXTS]
    return prompts, responses, ["30", "1", "x", "12"], [0, 0, 1, 1]


@pytest.mark.cuda
@NEEDS_CUDA
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_fast_matches_naive_on_cuda(gpt2_tokenizer, tiny_model_factory, arch, dtype, atol):
    model = tiny_model_factory(arch).to("cuda", dtype)
    config = RePROConfig(num_segments=3)
    batch = _cuda_batch(gpt2_tokenizer)
    naive = RePROScorer(model, gpt2_tokenizer, config, backend="naive").score(*batch)
    fast = RePROScorer(model, gpt2_tokenizer, config, backend="fast").score(*batch)
    assert fast.token_logprobs.device.type == "cuda"
    if dtype == torch.float32:
        assert fast.points == naive.points
    for name in ("token_logprobs", "token_entropies"):
        torch.testing.assert_close(getattr(fast, name), getattr(naive, name), atol=atol, rtol=0)
    for b in range(len(CUDA_TEXTS)):
        if fast.points[b] == naive.points[b]:
            torch.testing.assert_close(fast.nll[b], naive.nll[b], atol=atol, rtol=0)
            torch.testing.assert_close(fast.score[b], naive.score[b], atol=atol, rtol=0)


@pytest.mark.cuda
@NEEDS_CUDA
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
    scorer.score(*_cuda_batch(gpt2_tokenizer))
    assert calls and set(calls) == {("cuda", "triton")}
    assert launches, "phase 2 did not run the prefix-limited attention kernel"
