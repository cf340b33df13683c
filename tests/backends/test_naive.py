"""`repro_fast.backends.naive`: backend="naive" in fp32 against the float64 SPEC reference
(tests/reference.py).

Tiny random Llama / Qwen2 / Qwen3 / GPT-2 models with GPT-2's real BPE tokenizer; texts chosen
to cover every rule of SPEC §1-4 (boundaries, runs of newlines, straddling boundaries, a
multi-token ``</think>`` in the middle / at token 0 / absent, fewer candidates than k, exact
entropy ties, an empty response) and all three normalize modes with group ids; then the real
SmolLM2-135M-Instruct (offline GGUF) on real GSM8K problems (slow: model load ~25 s, once per
session).
"""

from __future__ import annotations

import pytest
import reference as R
import torch
from conftest import TINY_ARCHS
from data import A_, B_, DOT, NL, NLNL, QM, SPACE, X_, Y_, gsm8k_examples

from repro_fast import RePROConfig, RePROScorer

TEXTS = {
    # ".\n", "?\n", a run of three newlines, "\n\n", multi-token </think> in the middle
    "mixed": "First add the numbers.\nThen check?\nSo 3+4 is 7\n\n\nHello world. Seven.\n</think>"
             "The answer is 7.",
    # no think end, several boundaries
    "no_think": "Step one is easy.\nStep two is harder.\n\nStep three?\nDone, it is 12",
    # think end at token 0: no candidates (E = 0), F = 3
    "think_at_0": "</think>\n\nThe answer is 7.",
    # no boundary at all: P = [0, n]
    "no_candidates": "just one line without any boundary at all",
    # "42.</think>": the marker begins inside the token '.</'
    "marker_in_token": "We get 6 times 7.\n\nThat is 42.</think> so \\boxed{42}",
}

PROMPTS = {
    "short": "Q: 3+4?\n",
    "long": "Question: A farmer has 3 cows and buys 4 more. Each cow gives 2 litres of milk a day. "
    "How many cows does the farmer have now? Think step by step.\n",
}

# hand-built ids: boundaries that straddle tokens ('\n' '\n'), a blank token after a boundary
STRADDLE = [A_, NL, NL, B_, X_, DOT, NL, NL, NL, Y_, A_, QM, NL, SPACE, B_, NLNL, X_]

_M64: dict[int, object] = {}


def model64(model):
    """A float64 copy of ``model``, made once per model."""
    key = id(model)
    if key not in _M64:
        _M64[key] = R.float64_copy(model)
    return _M64[key]


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def run_both(model, tok, prompts, responses, answers, group_ids=None, cfg=None, check_conditioning=True):
    cfg = cfg or RePROConfig()
    res = RePROScorer(model, tok, cfg, backend="naive").score(prompts, responses, answers, group_ids)
    ref = R.reference_score(model, tok, prompts, responses, answers, group_ids, cfg, model64(model))
    if check_conditioning:
        # The test case must be well conditioned for an fp32 implementation: no near-tie at the
        # k-th entropy (an exact float64 tie would be decided by index, but fp32 noise is ~1e-6),
        # and no tiny nonzero normalization std (r' divides by it).
        for b, t in enumerate(ref.traj):
            assert t.margin > 1e-5, f"ill-conditioned test case: entropy gap {t.margin} in trajectory {b}"
        for b, s in enumerate(ref.sigmas):
            assert s == 0 or s > 2e-3, f"ill-conditioned test case: normalization std {s} in trajectory {b}"
    return res, ref


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize(
    "cfg",
    [
        RePROConfig(),  # k = 20: fewer candidates than k everywhere
        RePROConfig(num_segments=2, normalize="batch", temperature=0.7),
    ],
    ids=["default", "k2_batch_t0.7"],
)
def test_batch_matches_reference(tiny_models, gpt2_tokenizer, arch, cfg):
    tok = gpt2_tokenizer
    model = tiny_models[arch]
    names = list(TEXTS)
    responses = [enc(tok, TEXTS[n]) for n in names] + [STRADDLE, []]
    prompts = [enc(tok, PROMPTS["short" if i % 2 else "long"]) for i in range(len(responses))]
    answers = ["7", "12", "7", "3", "42", "5", "0"]
    groups = ["a", "a", "b", "b", "b", "c", "c"]
    res, ref = run_both(model, tok, prompts, responses, answers, groups, cfg)
    R.assert_results_close(res, ref, label=f"{arch}")
    # sanity of the test data itself (so the cases above really cover the rules)
    t = {n: ref.traj[i] for i, n in enumerate(names)}
    assert t["mixed"].E < len(responses[0]) and t["mixed"].F - t["mixed"].E == 3
    assert t["think_at_0"].E == 0 and t["think_at_0"].candidates == []
    assert t["no_candidates"].candidates == []
    assert t["no_think"].E == len(responses[1])
    assert t["marker_in_token"].F - t["marker_in_token"].E == 3  # '.</' 'think' '>'
    assert ref.points[-1] == [0] and ref.nll[-1].numel() == 1  # empty response: m = 0
    if cfg.num_segments == 2:
        assert any(len(tr.candidates) > 2 for tr in ref.traj)  # k really selects somewhere


@pytest.mark.parametrize(
    "normalize, groups, cfg_extra",
    [
        ("group", [0, 0, 0, 1, 1], {}),
        ("group", None, {"stability_weight": 0.5, "ema_decay": 0.5}),
        ("batch", [0, 0, 0, 1, 1], {"num_segments": 1, "temperature": 1.3}),
        ("none", [0, 0, 0, 1, 1], {}),
    ],
)
def test_groups_and_normalize_modes(tiny_models, gpt2_tokenizer, normalize, groups, cfg_extra):
    tok = gpt2_tokenizer
    model = tiny_models["qwen2"]
    q1 = enc(tok, PROMPTS["long"])
    q2 = enc(tok, PROMPTS["short"])
    ys = [
        enc(tok, TEXTS["mixed"]),
        enc(tok, TEXTS["no_think"]),
        STRADDLE,
        enc(tok, TEXTS["marker_in_token"]),
        enc(tok, TEXTS["no_candidates"]),
    ]
    prompts = [q1, q1, q1, q2, q2]
    answers = ["7", "7", "7", "42", "42"]
    cfg = RePROConfig(num_segments=3, normalize=normalize).replace(**cfg_extra)
    res, ref = run_both(model, tok, prompts, ys, answers, groups, cfg)
    R.assert_results_close(res, ref, label=f"{normalize}/{groups}")


def test_single_trajectory_default_config(tiny_llama, gpt2_tokenizer):
    # one trajectory, default everything (also the default backend argument "auto" is NOT used
    # here: this file is about the naive backend)
    tok = gpt2_tokenizer
    res, ref = run_both(tiny_llama, tok, [enc(tok, PROMPTS["short"])], [enc(tok, TEXTS["mixed"])], ["7"])
    R.assert_results_close(res, ref)
    assert len(ref.points[0]) >= 4


def test_empty_response_reports_nll0(tiny_models, gpt2_tokenizer):
    tok = gpt2_tokenizer
    for arch in ("llama", "gpt2"):
        res, ref = run_both(tiny_models[arch], tok, [enc(tok, PROMPTS["short"])], [[]], ["7"])
        R.assert_results_close(res, ref, label=arch)
        assert tuple(res.token_rewards.shape) == (1, 0)
        assert res.rewards[0].numel() == 0 and res.nll[0].numel() == 1


def test_tensor_inputs(tiny_llama, gpt2_tokenizer):
    # 1-D integer tensors are accepted for prompts and responses (SPEC §7)
    tok = gpt2_tokenizer
    q = enc(tok, PROMPTS["short"])
    y = enc(tok, TEXTS["no_think"])
    res = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2), backend="naive").score(
        [torch.tensor(q)], [torch.tensor(y, dtype=torch.int32)], ["12"]
    )
    ref = R.reference_score(
        tiny_llama, tok, [q], [y], ["12"], None, RePROConfig(num_segments=2), model64(tiny_llama)
    )
    R.assert_results_close(res, ref)


def test_exact_entropy_ties_pick_smaller_index(constant_logit_llama, gpt2_tokenizer):
    # lm_head = 0 -> all entropies are exactly log V: the top-k must be the k smallest candidates
    tok = gpt2_tokenizer
    y = enc(tok, "One.\nTwo.\nThree.\nFour.\nFive.\nSix")
    q = enc(tok, PROMPTS["short"])
    for k in (2, 10):
        cfg = RePROConfig(num_segments=k)
        res, ref = run_both(constant_logit_llama, tok, [q], [y], ["7"], None, cfg, check_conditioning=False)
        cands = ref.traj[0].candidates
        assert len(cands) == 5
        assert ref.points[0] == sorted({0, *cands[:k], len(y)})
        R.assert_results_close(res, ref, label=f"k={k}")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_authors_code_switches(tiny_models, gpt2_tokenizer, arch):
    # RePROConfig.authors_code(): token-id boundaries (first id of each suffix: '\n\n', '.', '?'),
    # token-id think end (must be one token: ' Therefore' is one GPT-2 token), 1/2 - tau, w = 0.
    tok = gpt2_tokenizer
    model = tiny_models[arch]
    ys = [
        enc(tok, "So we add. Then we check?\nIt is 7\n\nok. Therefore the answer is 7."),
        STRADDLE,
        enc(tok, TEXTS["no_think"]),
        [],
    ]
    qs = [
        enc(tok, PROMPTS["long"]),
        enc(tok, PROMPTS["short"]),
        enc(tok, PROMPTS["short"]),
        enc(tok, PROMPTS["long"]),
    ]
    for cfg in (
        RePROConfig.authors_code(think_end=" Therefore", num_segments=3),
        RePROConfig.authors_code(think_end=None, num_segments=20, stability_weight=0.3),
    ):
        res, ref = run_both(model, tok, qs, ys, ["7", "1", "12", "7"], ["g", "g", "h", "h"], cfg)
        R.assert_results_close(res, ref, label=str(cfg.think_end))
        t0 = ref.traj[0]
        if cfg.think_end is None:
            assert t0.E == t0.F == len(ys[0])
        else:  # think end by token id: E = index of ' Therefore', F = E + 1
            assert ys[0][t0.E] == 8447 and t0.F == t0.E + 1
        # token-id boundaries: 'So we add.' -> the token after '.' starts (no newline needed)
        assert ys[0].index(DOT) + 1 in t0.candidates
        # ...and the straddling '\n' '\n' boundary is missed (only '.'/'?' ids end segments there)
        assert 3 not in ref.traj[1].candidates


def test_authors_code_answer_with_bos(tiny_models, gpt2_tokenizer_bos):
    # answer_add_special_tokens=True with a tokenizer that adds BOS: BOS sits mid-sequence and
    # its log-prob enters J (SPEC §8). The default (False) must not add it.
    tok = gpt2_tokenizer_bos
    model = tiny_models["qwen2"]
    q = enc(tok, PROMPTS["short"])
    ys = [enc(tok, TEXTS["no_think"]), enc(tok, TEXTS["mixed"])]
    for flag in (True, False):
        cfg = RePROConfig(answer_add_special_tokens=flag, num_segments=2)
        res, ref = run_both(model, tok, [q, q], ys, ["12", "7"], None, cfg)
        R.assert_results_close(res, ref, label=f"bos={flag}")
    # the two settings really differ (otherwise this test would not test anything)
    ref_t = R.reference_score(
        model, tok, [q], [ys[0]], ["12"], None, RePROConfig(answer_add_special_tokens=True), model64(model)
    )
    ref_f = R.reference_score(model, tok, [q], [ys[0]], ["12"], None, RePROConfig(), model64(model))
    assert abs(float(ref_t.nll[0][0]) - float(ref_f.nll[0][0])) > 1e-3


def test_float64_model(tiny_models, gpt2_tokenizer):
    # a float64 model is a valid Hugging Face causal LM too; the SPEC tolerances still hold
    tok = gpt2_tokenizer
    m64 = model64(tiny_models["gpt2"])
    q = enc(tok, PROMPTS["short"])
    ys = [enc(tok, TEXTS["mixed"]), STRADDLE]
    cfg = RePROConfig(num_segments=2)
    res = RePROScorer(m64, tok, cfg, backend="naive").score([q, q], ys, ["7", "7"], [0, 0])
    ref = R.reference_score(m64, tok, [q, q], ys, ["7", "7"], [0, 0], cfg, m64)
    R.assert_results_close(res, ref, label="float64 model")

# ------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct on real GSM8K problems (slow)
# ------------------------------------------------------------------------------------------


def chat_prompt(tok, question: str) -> list[int]:
    out = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
    )
    if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    if isinstance(out, torch.Tensor):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(i) for i in out]


@pytest.fixture(scope="module")
def smol_case(smollm2):
    model, tok = smollm2
    (q1, cot1, a1), (q2, cot2, a2) = gsm8k_examples(2, start=0)
    cot1 = cot1.replace("\n\nThe answer is", "\n\n</think>\n\nThe answer is")  # think end in one
    prompts = [chat_prompt(tok, q1), chat_prompt(tok, q2)]
    responses = [tok.encode(cot1, add_special_tokens=False), tok.encode(cot2, add_special_tokens=False)]
    return model, tok, prompts, responses, [a1, a2]


@pytest.fixture(scope="module")
def smol64(smollm2):
    return R.float64_copy(smollm2[0])


@pytest.mark.slow
def test_smollm2_inputs_are_real(smol_case):
    model, tok, prompts, responses, answers = smol_case
    text = R.text_of(tok, prompts[0])
    assert "<|im_start|>assistant" in text and text.rstrip().endswith("assistant")
    assert "</think>" in R.text_of(tok, responses[0])
    assert "\\boxed{" + answers[1] + "}" in R.text_of(tok, responses[1])
    assert model.config.vocab_size == 49152


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg",
    [RePROConfig(num_segments=2), RePROConfig(normalize="batch", temperature=0.8)],
    ids=["k2_group", "k20_batch_t0.8"],
)
def test_smollm2_naive_matches_reference(smol_case, smol64, cfg):
    model, tok, prompts, responses, answers = smol_case
    res = RePROScorer(model, tok, cfg, backend="naive").score(prompts, responses, answers, ["g", "g"])
    ref = R.reference_score(model, tok, prompts, responses, answers, ["g", "g"], cfg, smol64)
    t0, t1 = ref.traj
    # the test case covers the rules: a think end inside the response, real candidates
    assert t0.F < len(responses[0]) and t0.E < t0.F
    assert len(t0.candidates) >= 2 and len(t1.candidates) >= 2
    for t in ref.traj:
        assert t.margin > 1e-5, f"ill-conditioned: entropy gap {t.margin}"
    assert all(s > 2e-3 for s in ref.sigmas)
    R.assert_results_close(res, ref, label="smollm2")
