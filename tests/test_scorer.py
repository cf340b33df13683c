"""`RePROScorer` (SPEC §7): bad inputs raise ValueError / TypeError naming the argument and the
trajectory index; points and scores on cases derivable by hand; `score_padded` and ``width``;
`capture_phase1` + `score_phase1` (phase 1 from a trainer's own forward) and `capture_generation` +
`score_generation` (from its own sampling) against `score_padded`;
scoring inside autocast; config assignment; the faults a hostile user found (each test reproduces
one and checks the fix); and the ways trainers hold a model and a tokenizer (added tokens, threads,
``torch.compile``, PEFT adapters), each scored like the plain model."""

from __future__ import annotations

import copy
import math
import re
import threading

import numpy as np
import peft  # the dev extra installs it: a missing peft fails here, never skips
import pytest
import torch
from conftest import make_scaled_head_model, make_tiny_model
from data import A_, B_, DOT, DOTLTSLASH, GT, LTSLASH, NL, NLNL, QM, SPACE, THINK, X_, Y_
from transformers import GPT2TokenizerFast

from repro_fast import RePROConfig, RePROScorer

Q = [15496, 995, 30]  # "Hello world?"
Y = [64, 628, 65, 13, 198, 56]  # 'a' '\n\n' 'b' '.' '\n' 'Y'
# Three segments: 'a' '.' '\n\n' 'b' ' c' '\n\n' 'd' ' e' '.' '\n\n' 'f'
Y3 = [64, 13, 628, 65, 269, 628, 67, 304, 13, 628, 69]
TEXTS = ["a.\n\nb.\n\nc?\nd</think>e", "", "x", "one.\n\ntwo.\n\nthree.\n\nfour.\n\nfive"]


def batch(tok):
    prompts = [Q, Q + [64], tok.encode("Question: what?"), Q]
    return prompts, [tok.encode(t) for t in TEXTS], ["12", "3", "7", "12"], ["g", "g", "h", "h"]


@pytest.fixture(scope="module", params=["naive", "fast"])
def scorer(request, tiny_llama, gpt2_tokenizer):
    return RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(num_segments=2), backend=request.param)


def _names_index(exc_info, index: int):
    msg = str(exc_info.value)
    assert re.search(rf"(?<![0-9]){index}(?![0-9])", msg), f"message does not name index {index}: {msg!r}"


# ------------------------------------------------------------------------------------------
# score() inputs: errors name the argument and the trajectory index (SPEC §7)
# ------------------------------------------------------------------------------------------


def test_valid_inputs_pass(scorer):
    # the baseline for every case below: this call is fine (an empty response is valid)
    res = scorer.score([Q, Q], [Y, []], ["7", "8"])
    assert len(res.points) == 2 and res.points[1] == [0]


def test_empty_prompt(scorer):
    with pytest.raises(ValueError, match="prompts") as ei:
        scorer.score([Q, []], [Y, Y], ["1", "2"])
    _names_index(ei, 1)


def test_empty_answer(scorer):
    with pytest.raises(ValueError, match="answers") as ei:
        scorer.score([Q, Q], [Y, Y], ["1", ""])
    _names_index(ei, 1)


def test_answer_encoding_to_zero_tokens(tiny_llama, gpt2_tokenizer):
    # template "{answer}" with an empty answer renders "" -> zero answer tokens
    s = RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(answer_template="{answer}"), backend="naive")
    with pytest.raises(ValueError, match="answer") as ei:
        s.score([Q, Q], [Y, Y], ["3", ""])
    _names_index(ei, 1)


def test_answer_not_a_string(scorer):
    with pytest.raises(TypeError, match="answers"):
        scorer.score([Q], [Y], [7])


@pytest.mark.parametrize(
    "args, names",
    [
        (([Q, Q], [Y], ["1", "2"]), "responses|prompts"),
        (([Q], [Y, Y], ["1"]), "responses|prompts"),
        (([Q, Q], [Y, Y], ["1"]), "answers"),
    ],
)
def test_lengths_differ(scorer, args, names):
    with pytest.raises(ValueError, match=names):
        scorer.score(*args)


def test_group_ids_wrong_length(scorer):
    with pytest.raises(ValueError, match="group_ids"):
        scorer.score([Q, Q], [Y, Y], ["1", "2"], group_ids=[0])


@pytest.mark.parametrize("bad", [-1, 50257, 10**9])
@pytest.mark.parametrize("where", ["prompts", "responses"])
def test_token_id_out_of_vocab(scorer, where, bad):
    prompts, responses = [Q, list(Q)], [Y, list(Y)]
    target = prompts if where == "prompts" else responses
    target[1] = target[1][:2] + [bad] + target[1][2:]
    with pytest.raises(ValueError, match=where) as ei:
        scorer.score(prompts, responses, ["1", "2"])
    _names_index(ei, 1)


def test_token_id_out_of_vocab_in_tensor(scorer):
    with pytest.raises(ValueError, match="responses"):
        scorer.score([Q], [torch.tensor([1, 2, 50257])], ["1"])


@pytest.mark.parametrize(
    "bad",
    [
        [1.0, 2.0],
        [1, 2.5],
        torch.tensor([1.0, 2.0]),
        ["a", "b"],
        "hello",
        [[1, 2], [3, 4]],
        torch.tensor([[1, 2], [3, 4]]),
        [True, False],
    ],
    ids=["floats", "mixed_float", "float_tensor", "strings", "str", "nested_list", "2d_tensor", "bools"],
)
@pytest.mark.parametrize("where", ["prompts", "responses"])
def test_non_integer_ids(scorer, where, bad):
    prompts, responses = [Q, Q], [Y, Y]
    if where == "prompts":
        prompts = [Q, bad]
    else:
        responses = [Y, bad]
    with pytest.raises(TypeError, match=where) as ei:
        scorer.score(prompts, responses, ["1", "2"])
    _names_index(ei, 1)


def test_prompts_not_a_list(scorer):
    with pytest.raises(TypeError, match="prompts"):
        scorer.score(None, [Y], ["1"])


# ------------------------------------------------------------------------------------------
# model / tokenizer / backend / config arguments
# ------------------------------------------------------------------------------------------


def test_model_without_lm_head(gpt2_tokenizer, tiny_llama):
    from transformers import AutoModel

    base = AutoModel.from_config(tiny_llama.config).eval()  # LlamaModel: hidden states, no logits
    with pytest.raises(TypeError, match="model"):
        RePROScorer(base, gpt2_tokenizer, backend="naive").score([Q], [Y], ["1"])


def test_tokenizer_larger_than_model_vocab(gpt2_tokenizer, tiny_model_factory):
    small = tiny_model_factory("llama", seed=3, vocab_size=1000)
    with pytest.raises(ValueError, match="tokenizer"):
        RePROScorer(small, gpt2_tokenizer, backend="naive").score([[1, 2]], [[3, 4]], ["1"])


@pytest.mark.parametrize("backend, error", [("slow", ValueError), ("", ValueError), ("NAIVE", ValueError),
                                            (None, TypeError), (3, TypeError)])
def test_bad_backend(tiny_llama, gpt2_tokenizer, backend, error):
    with pytest.raises(error, match="backend"):
        RePROScorer(tiny_llama, gpt2_tokenizer, backend=backend)


def test_config_not_a_config(tiny_llama, gpt2_tokenizer):
    with pytest.raises(TypeError, match="config"):
        RePROScorer(tiny_llama, gpt2_tokenizer, config={"num_segments": 3}, backend="naive")


def test_token_id_think_end_of_several_tokens_uses_its_first_id(tiny_llama, gpt2_tokenizer):
    # authors' code (SPEC §8): "</think>" is three GPT-2 tokens; thinking ends before the first
    # "</" fragment, F = E + 1, as their code does
    tok = gpt2_tokenizer
    y = tok.encode("a.\n\nb</c.\n\nd</think>e")
    res = RePROScorer(tiny_llama, tok, RePROConfig.authors_code(), backend="naive").score([Q], [y], ["1"])
    E = y.index(tok.encode("</think>")[0])
    assert res.think_end == [E + 1] and res.points[0][-1] == E + 1


# ------------------------------------------------------------------------------------------
# points and scores derivable by hand (constant logits: every entropy log V)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["naive", "fast"])
@pytest.mark.parametrize(
    "y, points",
    [
        ([A_, NL, NL, B_], [0, 3, 4]),  # straddling "\n\n", no think end: F = n = 4
        ([X_, DOT, NLNL, NL, Y_], [0, 4, 5]),  # run of newlines: one start, at 'Y'
        ([A_, DOT, NL, B_, QM, NL, Y_], [0, 3, 6, 7]),
        ([A_, NLNL, B_, NLNL, LTSLASH, THINK, GT, Y_], [0, 2, 7]),  # think end E=4, F=7
        ([3682, DOTLTSLASH, THINK, GT, A_], [0, 4]),  # marker begins inside token 1
        ([LTSLASH, THINK, GT, NLNL, A_], [0, 3]),  # think end at token 0: no candidates
        ([A_, NL, B_], [0, 3]),  # no candidates, no think end
        ([A_, NLNL, SPACE, B_], [0, 4]),  # ' ' after "\n\n" is blank, then "\n\n " is no boundary
        ([A_, NLNL, NL, NL, B_], [0, 4, 5]),  # run of newline tokens: one start, at 'b'
        ([], [0]),  # empty response: m = 0
    ],
)
def test_package_points_by_hand(constant_logit_llama, gpt2_tokenizer, backend, y, points):
    # k = 20 > #candidates: P = {0} ∪ candidates ∪ {F}, so the points expose the segment rule.
    scorer = RePROScorer(constant_logit_llama, gpt2_tokenizer, RePROConfig(), backend=backend)
    res = scorer.score([[A_, B_]], [y], ["7"])
    assert [int(p) for p in res.points[0]] == points


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_package_constant_logits_by_hand(constant_logit_llama, gpt2_tokenizer, backend):
    # lm_head = 0: every logit 0 -> every H = log V, every answer log-prob = -log V, so
    #   NLL_j = log V for all j; S_magn = 1 - tanh(logV/(logV + 1e-6)) ≈ 1 - tanh(1) = 0.238406
    #   EMA flat -> tau = 0 -> S_stab = 1/2 -> S = .9*.238406 + .1*.5 = 0.264565 for every j
    #   r = [0.264565, 0, 0, ...]; all entropies tie -> k = 2 picks the 2 smallest candidates
    # y = 'a' '\n\n' 'b' '\n\n' 'x' '\n\n' 'Y': candidates {2, 4, 6} -> P = [0, 2, 4, 7]
    logV = math.log(50257)
    smagn = 1 - math.tanh(logV / (logV + 1e-6))
    S = 0.9 * smagn + 0.05
    y = [A_, NLNL, B_, NLNL, X_, NLNL, Y_]
    cfg = RePROConfig(num_segments=2, normalize="none")
    res = RePROScorer(constant_logit_llama, gpt2_tokenizer, cfg, backend=backend).score(
        [[A_]], [y], ["12"]
    )
    assert [int(p) for p in res.points[0]] == [0, 2, 4, 7]
    torch.testing.assert_close(
        res.nll[0].double(), torch.full((4,), logV, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        res.s_magn[0].double(), torch.full((3,), smagn, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        res.s_stab[0].double(), torch.full((3,), 0.5, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        res.rewards[0].double(), torch.tensor([S, 0, 0], dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        res.token_entropies.double(), torch.full((1, 7), logV, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        res.token_logprobs.double(), torch.full((1, 7), -logV, dtype=torch.float64), atol=1e-4, rtol=0
    )
    # rewards on tokens P_j - 1 = 1, 3, 6; normalize = "none" -> reward-to-go of raw rewards
    assert res.reward_mask[0].tolist() == [False, True, False, True, False, False, True]
    assert res.response_mask[0].tolist() == [True] * 7
    exp_adv = torch.tensor([S, S, 0, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(res.process_advantages[0].double(), exp_adv, atol=1e-3, rtol=0)
    exp_tr = torch.tensor([0, S, 0, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(res.token_rewards[0].double(), exp_tr, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------
# score_padded, width, autocast, config assignment, and faults one by one
# ------------------------------------------------------------------------------------------


def test_score_padded_equals_score(tiny_llama, gpt2_tokenizer):
    tok = gpt2_tokenizer
    prompts, responses, answers, groups = batch(tok)
    scorer = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2))
    ref = scorer.score(prompts, responses, answers, groups)
    Lq, Lc = max(map(len, prompts)) + 2, max(map(len, responses)) + 3
    p_ids = torch.full((4, Lq), 7)
    p_mask = torch.zeros(4, Lq, dtype=torch.long)
    c_ids = torch.full((4, Lc), 9)
    c_mask = torch.zeros(4, Lc, dtype=torch.long)
    for b, (q, y) in enumerate(zip(prompts, responses)):
        if b % 2:  # right-padded prompt
            p_ids[b, : len(q)] = torch.tensor(q)
            p_mask[b, : len(q)] = 1
        else:  # left-padded, as TRL does
            p_ids[b, Lq - len(q):] = torch.tensor(q)
            p_mask[b, Lq - len(q):] = 1
        c_ids[b, : len(y)] = torch.tensor(y, dtype=torch.long)
        c_mask[b, : len(y)] = 1
    got = scorer.score_padded(p_ids, p_mask, c_ids, c_mask, answers, groups)
    assert got.points == ref.points
    for name in (
        "token_logprobs",
        "token_entropies",
        "process_advantages",
        "token_rewards",
        "reward_mask",
        "response_mask",
    ):
        t = getattr(got, name)
        assert tuple(t.shape) == (4, Lc), name
        n = ref.token_logprobs.shape[1]
        torch.testing.assert_close(t[:, :n], getattr(ref, name), atol=1e-6, rtol=0)
        assert not t[:, n:].any(), f"{name}: padding past n_max is not 0"
    torch.testing.assert_close(got.response_mask, c_mask.bool())
    wide = scorer.score(prompts, responses, answers, groups, width=Lc)
    torch.testing.assert_close(wide.process_advantages, got.process_advantages)


@pytest.mark.parametrize(
    "mutate, match",
    [
        # the dtype is named, not the shape (the old message said "got (2, 3)")
        (lambda p, pm, c, cm: (p, pm.float(), c, cm), "prompt_mask: .* got dtype torch.float32"),
        (lambda p, pm, c, cm: (p, pm[:, 1:], c, cm), "prompt_mask: expected the shape"),
        (lambda p, pm, c, cm: (p, pm, c, cm * 2), "completion_mask: expected 0/1"),
        (lambda p, pm, c, cm: (p, pm, c, torch.tensor([[0, 1, 1]] * 2)), "completion_mask: row 0"),
        (lambda p, pm, c, cm: (p, torch.tensor([[1, 0, 1]] * 2), c, cm), "prompt_mask: row 0"),
        (lambda p, pm, c, cm: (p[0], pm, c, cm), "prompt_ids"),
    ],
)
def test_score_padded_bad_input(tiny_llama, gpt2_tokenizer, mutate, match):
    scorer = RePROScorer(tiny_llama, gpt2_tokenizer)
    p, pm = torch.tensor([Q, Q]), torch.ones(2, 3, dtype=torch.long)
    c, cm = torch.tensor([[64, 65, 66]] * 2), torch.tensor([[1, 1, 0]] * 2)
    with pytest.raises((ValueError, TypeError), match=match):
        scorer.score_padded(*mutate(p, pm, c, cm), ["1", "2"])


def test_width_must_cover_the_longest_response(tiny_llama, gpt2_tokenizer):
    scorer = RePROScorer(tiny_llama, gpt2_tokenizer)
    with pytest.raises(ValueError, match="width"):
        scorer.score([Q], [[64, 65, 66]], ["1"], width=2)


@pytest.mark.parametrize("width", [10**12, 10**30])
def test_absurd_width_is_refused_before_the_forward(tiny_llama, gpt2_tokenizer, monkeypatch, width):
    """Fault: these failed inside torch after the forward pass (allocating ``[N, width]``)."""
    scorer = RePROScorer(tiny_llama, gpt2_tokenizer)
    monkeypatch.setattr(scorer.backend, "response_pass", lambda *a: pytest.fail("the forward ran"))
    with pytest.raises(ValueError, match="width"):
        scorer.score([Q], [[64, 65, 66]], ["1"], width=width)


def test_scoring_inside_autocast_matches_the_trainers_own_forward(tiny_llama, gpt2_tokenizer):
    """accelerate / TRL with bf16=True wrap the forward in autocast: the scorer must work there,
    and its token log-probs must be the trainer's own under the same autocast within the bound
    documented in the README (Precision)."""
    tok = gpt2_tokenizer
    prompts, responses, answers, groups = batch(tok)
    scorer = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = scorer.score(prompts, responses, answers, groups)
        naive = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2), backend="naive").score(
            prompts, responses, answers, groups)
        for b, (q, y) in enumerate(zip(prompts, responses)):
            if not y:
                continue
            logits = tiny_llama(torch.tensor([q + y])).logits[0, len(q) - 1 : len(q) - 1 + len(y)]
            own = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(y)[:, None])[:, 0]
            err = (res.token_logprobs[b, : len(y)] - own).abs()
            assert float(err.max()) <= 0.05 + 0.01 * float(own.detach().abs().max()), float(err.max())
    assert res.points == naive.points
    for b in range(4):
        torch.testing.assert_close(
            res.nll[b], naive.nll[b], atol=1e-3 + 1e-3 * float(naive.nll[b].abs().max()), rtol=0
        )


def test_config_assignment_applies_every_field(tiny_llama, gpt2_tokenizer):
    tok = gpt2_tokenizer
    y = tok.encode("a.\n\nb.\n\nc</think>d")
    scorer = RePROScorer(tiny_llama, tok)
    scorer.score([Q], [y], ["1"])  # fills the answer cache
    cfg = RePROConfig(temperature=0.5, think_end=None, answer_template="= {answer}", num_segments=1)
    scorer.config = cfg
    got = scorer.score([Q], [y], ["1"])
    fresh = RePROScorer(tiny_llama, tok, cfg).score([Q], [y], ["1"])
    assert got.points == fresh.points and got.points[0][-1] == len(y)  # think_end=None applied
    torch.testing.assert_close(got.nll[0], fresh.nll[0])
    torch.testing.assert_close(got.token_logprobs, fresh.token_logprobs)
    with pytest.raises(Exception, match="cannot assign"):
        scorer.config.temperature = 2.0  # frozen: change settings through replace()
    with pytest.raises(TypeError, match="config"):
        scorer.config = {"temperature": 2.0}


@pytest.mark.parametrize(
    "response, match",
    [
        ([64, 2**63], "token id 9223372036854775808 at position 1"),
        (np.array([64, 2**64 - 1], dtype=np.uint64), "token id 18446744073709551615 at position 1"),
        ([64, -1], "token id -1 at position 1"),
    ],
)
def test_out_of_range_ids_are_named(tiny_llama, gpt2_tokenizer, response, match):
    with pytest.raises(ValueError, match=match):
        RePROScorer(tiny_llama, gpt2_tokenizer).score([Q], [response], ["1"])


def test_unhashable_group_id_inside_a_tuple(tiny_llama, gpt2_tokenizer):
    with pytest.raises(TypeError, match="group_ids\\[0\\]"):
        RePROScorer(tiny_llama, gpt2_tokenizer).score([Q], [[64]], ["1"], group_ids=[(1, [2])])


def test_answer_with_a_lone_surrogate(tiny_llama, gpt2_tokenizer):
    with pytest.raises(ValueError, match="answers\\[0\\]"):
        RePROScorer(tiny_llama, gpt2_tokenizer).score([Q], [[64]], ["4\ud800"])


def test_tokenizer_that_gained_tokens(gpt2_tokenizer_dir, tiny_models):
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir)
    model = copy.deepcopy(tiny_models["llama"])
    scorer = RePROScorer(model, tok, planner="python")
    scorer.score([Q], [[64]], ["1"])
    tok.add_tokens(["<step>"])
    model.resize_token_embeddings(len(tok))
    step = tok.convert_tokens_to_ids("<step>")
    y = [64, 13, 628, step, 65]  # 'a' '.' '\n\n' '<step>' 'b'
    got = scorer.score([Q], [y], ["1"])
    assert got.points == RePROScorer(model, tok, planner="python").score([Q], [y], ["1"]).points
    assert 3 in got.points[0]  # the added token starts a segment after "\n\n"


def test_ids_past_the_tokenizer_but_inside_the_embedding_are_scored(gpt2_tokenizer, tiny_models):
    """Qwen pads its embedding past len(tokenizer); a policy can sample those ids."""
    model = copy.deepcopy(tiny_models["llama"])
    model.resize_token_embeddings(50257 + 15)
    y = [64, 13, 628, 50260, 65, 628, 66]  # an unnamed id after '\n\n': its text is empty (blank)
    for backend in ("naive", "fast"):
        res = RePROScorer(model, gpt2_tokenizer, backend=backend).score([Q], [y], ["1"])
        assert res.points == [[0, 4, 6, 7]], backend  # the start skips the blank id, as for '\n'
    with pytest.raises(ValueError, match="token id 50272"):
        RePROScorer(model, gpt2_tokenizer).score([Q], [[50272]], ["1"])


# ------------------------------------------------------------------------------------------
# capture_phase1 + score_phase1: phase 1 from a trainer's own forward
# ------------------------------------------------------------------------------------------


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
def test_score_phase1_agrees_with_score_padded_in_fp32(gpt2_tokenizer, arch):
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


def assert_nll_within_bf16_bound(got, expected) -> None:
    """bf16: the README's bound on NLL, as for score() vs the naive backend, on every trajectory
    whose points agree (near-tied entropies may pick other points under bf16)."""
    compared = 0
    for b in range(len(expected)):
        if got.points[b] == expected.points[b]:
            bound = 1e-2 + 1e-2 * float(expected.nll[b].abs().max())
            torch.testing.assert_close(got.nll[b], expected.nll[b], atol=bound, rtol=0)
            compared += 1
    # Most trajectories must be compared, or the check says nothing.
    assert compared >= max(1, len(expected) // 2), f"points agreed on {compared} of {len(expected)} only"


def test_score_phase1_agrees_with_score_padded_under_bf16_autocast(gpt2_tokenizer):
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
    assert_nll_within_bf16_bound(got, expected)


def test_score_phase1_bad_records_and_layouts_are_named(gpt2_tokenizer):
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer)
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    with scorer.capture_phase1() as phase1:
        logps, entropies = trainer_forward(model, pi, pm, ci, cm)
    kwargs = dict(token_logprobs=logps, token_entropies=entropies)
    with pytest.raises(TypeError, match="phase1"):
        scorer.score_phase1(object(), pi, pm, ci, cm, answers, **kwargs)
    with pytest.raises(ValueError, match="token_entropies"):
        scorer.score_phase1(
            phase1, pi, pm, ci, cm, answers, token_logprobs=logps, token_entropies=entropies[:, 1:]
        )
    with pytest.raises(TypeError, match="token_entropies"):
        scorer.score_phase1(phase1, pi, pm, ci, cm, answers, token_logprobs=logps,
                            token_entropies=entropies.long())
    right = torch.stack([torch.roll(r, int((r == 0).sum())) for r in pm])  # right-padded prompts
    with pytest.raises(ValueError, match="prompt_mask: row 0 is not left-padded"):
        scorer.score_phase1(phase1, pi, right, ci, cm, answers, **kwargs)
    with scorer.capture_phase1() as twice:
        trainer_forward(model, pi, pm, ci, cm)
        trainer_forward(model, pi, pm, ci, cm)
    with pytest.raises(ValueError, match="phase1: expected one decoder call"):
        scorer.score_phase1(twice, pi, pm, ci, cm, answers, **kwargs)
    with pytest.raises(ValueError, match="backend='fast'"):
        RePROScorer(model, gpt2_tokenizer, backend="naive").capture_phase1()


def test_a_cache_that_dropped_columns_is_refused(gpt2_tokenizer):
    """A sliding-window layer keeps only its last keys: phase 2 would index the wrong columns."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=50257, use_sliding_window=True,
                            sliding_window=4, max_window_layers=0)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    scorer = RePROScorer(model, gpt2_tokenizer)
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    with scorer.capture_phase1() as phase1:
        logps, entropies = trainer_forward(model, pi, pm, ci, cm)
    with pytest.raises(ValueError, match=r"phase1: layer 0 of the KV cache .* holds 3 columns of the"):
        scorer.score_phase1(phase1, pi, pm, ci, cm, answers, groups,
                            token_logprobs=logps, token_entropies=entropies)


# ------------------------------------------------------------------------------------------
# capture_generation + score_generation: phase 1 from a trainer's own sampling
# ------------------------------------------------------------------------------------------

# Completions drawn from a few tokens, "?" ending them, so that rows stop at different lengths
# and carry segment boundaries ("\n\n", ".\n").
GENERATION_TOKENS = [A_, B_, X_, Y_, DOT, NL, NLNL, SPACE, QM]


def trainer_generate(model, tok, seed: int = 0, max_new_tokens: int = 14, **kwargs):
    """What TRL's transformers path runs: left-padded prompts, one sampled sequence per row, the
    completion mask cut after the first EOS. Returns the four tensors, answers and group ids."""
    prompts = [tok.encode("Hello world?"), tok.encode("Q"), tok.encode("Question: what is 2 + 5?"),
               tok.encode("Q")]
    lq = max(map(len, prompts))
    prompt_ids = torch.tensor([[0] * (lq - len(q)) + q for q in prompts])
    prompt_mask = torch.tensor([[0] * (lq - len(q)) + [1] * len(q) for q in prompts])
    torch.manual_seed(seed)
    sequences = model.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, max_new_tokens=max_new_tokens,
        eos_token_id=QM, pad_token_id=0, prefix_allowed_tokens_fn=lambda b, ids: GENERATION_TOKENS, **kwargs)
    completion_ids = sequences[:, lq:]
    is_eos = completion_ids == QM
    ends = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion_ids.shape[1])
    completion_mask = (torch.arange(completion_ids.shape[1])[None] <= ends[:, None]).long()
    return prompt_ids, prompt_mask, completion_ids, completion_mask, ["7", "3", "7", "12"], [0, 0, 1, 1]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gpt2", "gemma2", "cohere2"])
def test_score_generation_agrees_with_score_padded_in_fp32(gpt2_tokenizer, arch):
    # Gemma2 soft-caps its logits, Cohere2 scales them: the sampling logits are the model's own.
    model = make_scaled_head_model(arch).eval() if arch in ("gemma2", "cohere2") else make_tiny_model(arch)
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3))
    seed = {"cohere2": 3}.get(arch, 0)  # a seed whose samples have inner points
    with scorer.capture_generation() as generation:
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer, seed=seed)
    lengths = cm.sum(1).tolist()
    assert len(set(lengths)) > 1 and max(lengths) == ci.shape[1]  # rows stopped apart; the longest is cut
    got = scorer.score_generation(generation, pi, pm, ci, cm, answers, groups)
    expected = scorer.score_padded(pi, pm, ci, cm, answers, groups)
    assert sum(len(p) for p in got.points) > 2 * len(groups)  # some rows have inner points
    assert got.points == expected.points
    for b in range(len(groups)):
        torch.testing.assert_close(got.nll[b], expected.nll[b], atol=1e-4, rtol=0)
        torch.testing.assert_close(got.rewards[b], expected.rewards[b], atol=1e-4, rtol=0)
    for field in ("token_logprobs", "token_entropies"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), atol=1e-4, rtol=0)
    torch.testing.assert_close(got.process_advantages, expected.process_advantages, atol=1e-3, rtol=0)
    assert torch.equal(got.response_mask, expected.response_mask)
    assert len(generation.entropies) == ci.shape[1]  # the stats came from generate's own logits


def test_score_generation_without_the_sampling_logits_uses_the_head(gpt2_tokenizer):
    """A wrapper whose outer forward generate() does not call leaves no sampling logits: the
    scorer's head on the recorded hidden states gives the same result."""
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3))
    results = []
    for drop_logits in (False, True):
        with scorer.capture_generation() as generation:
            pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer)
        if drop_logits:
            generation.entropies.pop()
        results.append(scorer.score_generation(generation, pi, pm, ci, cm, answers, groups))
    _same_result(results[0], results[1], atol=1e-4)


def test_score_generation_agrees_with_score_padded_under_bf16_autocast(gpt2_tokenizer):
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with scorer.capture_generation() as generation:
            pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer)
        expected = scorer.score_padded(pi, pm, ci, cm, answers, groups)
    # Scored outside the autocast block: the generation's precision is recorded and restored.
    got = scorer.score_generation(generation, pi, pm, ci, cm, answers, groups)
    fp32 = scorer.score_padded(pi, pm, ci, cm, answers, groups)
    real = cm.bool()
    bf16_gap = (got.token_logprobs - expected.token_logprobs)[real].abs().max()
    fp32_gap = (got.token_logprobs - fp32.token_logprobs)[real].abs().max()
    assert bf16_gap < fp32_gap  # it ran in bf16, like the generation, not in fp32
    assert_nll_within_bf16_bound(got, expected)


def test_score_generation_bad_records_and_layouts_are_named(gpt2_tokenizer):
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer)

    def recorded(**kwargs):
        with scorer.capture_generation() as generation:
            tensors = trainer_generate(model, gpt2_tokenizer, **kwargs)
        return generation, tensors

    generation, (pi, pm, ci, cm, answers, groups) = recorded()
    with pytest.raises(TypeError, match="generation: expected the record of capture_generation"):
        scorer.score_generation(object(), pi, pm, ci, cm, answers)
    changed = ci.clone()
    changed[0, 0] = B_ if int(ci[0, 0]) != B_ else A_
    with pytest.raises(ValueError, match="completion_ids: not the tokens generate"):
        scorer.score_generation(generation, pi, pm, changed, cm, answers)
    with pytest.raises(ValueError, match="prompt_ids: not the prompts"):
        scorer.score_generation(generation, pi.flip(0), pm.flip(0), ci, cm, answers)
    wider_mask = torch.cat([cm, cm[:, -1:]], 1)  # the rows that reached the last column go on
    wider_ids = torch.cat([ci, torch.zeros_like(ci[:, :1])], 1)
    with pytest.raises(ValueError, match="completion_mask: real tokens past column"):
        scorer.score_generation(generation, pi, pm, wider_ids, wider_mask, answers)
    right = torch.stack([torch.roll(r, int((r == 0).sum())) for r in pm])
    with pytest.raises(ValueError, match="prompt_mask: row 0 is not left-padded; score_generation"):
        scorer.score_generation(generation, pi, right, ci, cm, answers)
    with scorer.capture_generation() as twice:
        trainer_generate(model, gpt2_tokenizer)
        trainer_generate(model, gpt2_tokenizer)
    with pytest.raises(ValueError, match="more than one generation"):
        scorer.score_generation(twice, pi, pm, ci, cm, answers)
    with pytest.raises(ValueError, match="no decoder call was recorded"):
        with scorer.capture_generation() as empty:
            pass
        scorer.score_generation(empty, pi, pm, ci, cm, answers)
    generation, (pi, pm, ci, cm, answers, groups) = recorded(num_return_sequences=2)
    with pytest.raises(ValueError, match="generation: it sampled 8 rows, expected 4"):
        scorer.score_generation(generation, pi, pm, ci[::2], cm[::2], answers)
    generation, (pi, pm, ci, cm, answers, groups) = recorded(cache_implementation="static",
                                                             disable_compile=True)
    with pytest.raises(ValueError, match="static cache is preallocated and cannot be extended"):
        scorer.score_generation(generation, pi, pm, ci, cm, answers)
    with pytest.raises(ValueError, match="backend='fast'"):
        RePROScorer(model, gpt2_tokenizer, backend="naive").capture_generation()


def test_a_trainer_may_pad_completions_past_the_sampled_columns(gpt2_tokenizer):
    """TRL pads to ``pad_to_multiple_of``: extra masked columns, outputs as wide as the trainer's."""
    model = make_tiny_model("qwen2")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3))
    with scorer.capture_generation() as generation:
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer)
    extra = 3
    ci_wide = torch.cat([ci, torch.zeros(ci.shape[0], extra, dtype=ci.dtype)], 1)
    cm_wide = torch.cat([cm, torch.zeros(cm.shape[0], extra, dtype=cm.dtype)], 1)
    got = scorer.score_generation(generation, pi, pm, ci_wide, cm_wide, answers, groups)
    expected = scorer.score_padded(pi, pm, ci_wide, cm_wide, answers, groups)
    assert got.token_logprobs.shape == (4, ci.shape[1] + extra)
    assert got.points == expected.points
    torch.testing.assert_close(got.process_advantages, expected.process_advantages, atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------
# how trainers hold a model and a tokenizer: added tokens, threads, torch.compile, PEFT
# ------------------------------------------------------------------------------------------


def _same_result(a, b, atol: float) -> None:
    assert a.points == b.points
    for field in ("nll", "rewards"):
        for x, y in zip(getattr(a, field), getattr(b, field)):
            torch.testing.assert_close(x, y, atol=atol, rtol=0)
    for field in ("token_logprobs", "token_entropies", "process_advantages"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), atol=atol, rtol=0)


def test_answer_ids_follow_tokens_added_after_the_first_call(gpt2_tokenizer_dir):
    """Fault: the answer's ids were cached by text only, so a tokenizer that gained ``\\boxed{``
    kept being scored with the old split (NLLs off by up to 1.7 against a fresh scorer)."""
    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir)
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, tok)
    before = scorer.score([Q], [Y3], ["42"])
    tok.add_tokens(["\\boxed{"])
    model.resize_token_embeddings(len(tok))
    with torch.no_grad():
        model.get_input_embeddings().weight[-1].normal_()  # the new row: not a copy of another
    assert scorer.answer_ids("42").tolist() == tok.encode("\\boxed{42}", add_special_tokens=False)
    after = scorer.score([Q], [Y3], ["42"])
    fresh = RePROScorer(model, tok).score([Q], [Y3], ["42"])
    _same_result(after, fresh, atol=0.0)
    assert not torch.allclose(after.nll[0], before.nll[0])  # the new split changed J


def test_threads_share_one_scorer(gpt2_tokenizer):
    """Fault: two threads' calls switched the model's train/eval flags under each other (dropout
    on inside a call, the model left in eval mode). Calls are serialized now."""
    model = make_tiny_model("gpt2").train()  # GPT-2's dropout is on in train mode
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    prompts, responses = [Q, Q[:2]], [Y3, Y3[:7]]
    expected = scorer.score(prompts, responses, ["1", "2"], group_ids=[0, 0])
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(scorer.score(prompts, responses, ["1", "2"], group_ids=[0, 0]))
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 160
    for got in results:
        _same_result(got, expected, atol=0.0)
    assert model.training and all(m.training for m in model.modules())


def test_compiled_model_scores_like_the_plain_model(gpt2_tokenizer):
    """Fault: ``RePROScorer(torch.compile(model), ...)`` failed in verify() with
    ``_forward_unimplemented() got an unexpected keyword argument 'input_ids'``."""
    model = make_tiny_model("llama")
    compiled = torch.compile(model, backend="eager")
    got = RePROScorer(compiled, gpt2_tokenizer).score([Q], [Y3], ["7"])
    expected = RePROScorer(make_tiny_model("llama"), gpt2_tokenizer).score([Q], [Y3], ["7"])
    _same_result(got, expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["fast", "naive"])
@pytest.mark.parametrize("adapter", ["lora_embed_and_head", "trainable_tokens"])
def test_peft_model_scores_like_its_merged_weights(gpt2_tokenizer, adapter, backend):
    """Fault: a LoRA adapter on ``embed_tokens`` (or ``trainable_token_indices``) failed at
    construction (``... has no attribute 'num_embeddings'``). The wrapped model must score like
    a plain model holding the merged weights."""
    if adapter == "lora_embed_and_head":
        config = peft.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj", "lm_head"],
                                 init_lora_weights=False)
    else:
        config = peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False,
                                 trainable_token_indices={"embed_tokens": [64, 628]})
    wrapped = peft.get_peft_model(make_tiny_model("llama"), config)
    if adapter == "trainable_tokens":
        with torch.no_grad():  # make the trained rows differ from the base rows
            for name, p in wrapped.named_parameters():
                if "trainable_tokens_delta" in name:
                    p.normal_()
    merged = copy.deepcopy(wrapped).merge_and_unload()
    cfg = RePROConfig(num_segments=2)
    got = RePROScorer(wrapped, gpt2_tokenizer, cfg, backend=backend).score([Q], [Y3], ["7"])
    expected = RePROScorer(merged, gpt2_tokenizer, cfg, backend=backend).score([Q], [Y3], ["7"])
    _same_result(got, expected, atol=1e-5)
    plain = RePROScorer(make_tiny_model("llama"), gpt2_tokenizer, cfg, backend=backend).score(
        [Q], [Y3], ["7"]
    )
    assert not torch.allclose(got.token_logprobs, plain.token_logprobs, atol=1e-3)  # the adapter acts


# ------------------------------------------------------------------------------------------
# a record is used only where it is the pass score() would run (issue 27); the caller's record
# is left as it was (issue 26)
# ------------------------------------------------------------------------------------------


def _gpt2_with_dropout(p: float):
    """A tiny GPT-2 whose config has GPT-2's dropouts (0.1 by default) at ``p``."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=50257, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                           resid_pdrop=p, embd_pdrop=p, attn_pdrop=p)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # spread the logits (as make_tiny_model does): no near-tied entropies
        model.lm_head.weight.mul_(20.0)
    return model


def _positions(pm, cm):
    return (torch.cat([pm, cm], 1).cumsum(1) - 1).clamp_min(0)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_a_pass_with_dropout_in_effect_is_refused_on_both_paths(gpt2_tokenizer, p):
    """Fault: a train-mode (dropout) pass was scored as if it were score()'s eval-mode pass
    (NLL off 0.47-0.77, process advantages up to 2.0). Refused, naming the dropout module; the
    same pass in eval mode is used and agrees with score_padded."""
    from repro_fast import UnusableRecord

    model = _gpt2_with_dropout(p)
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    for training in (True, False):
        model.train(training)
        with scorer.capture_phase1() as record:
            logps, entropies = trainer_forward(model, pi, pm, ci, cm, _positions(pm, cm))
        if training:
            with pytest.raises(UnusableRecord, match=r"dropout was in effect .*Dropout, p=" + str(p)):
                scorer.score_phase1(record, pi, pm, ci, cm, answers, groups, token_logprobs=logps,
                                    token_entropies=entropies)
        else:
            got = scorer.score_phase1(record, pi, pm, ci, cm, answers, groups, token_logprobs=logps,
                                      token_entropies=entropies)
            expected = scorer.score_padded(pi, pm, ci, cm, answers, groups)
            for b in range(len(groups)):
                torch.testing.assert_close(got.nll[b], expected.nll[b], atol=1e-4, rtol=0)
    model.train()
    with scorer.capture_generation() as record:
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer)
    with pytest.raises(UnusableRecord, match="generation: dropout was in effect"):
        scorer.score_generation(record, pi, pm, ci, cm, answers, groups)


def _windowed_qwen2(window: int):
    import transformers as tf

    torch.manual_seed(0)
    config = tf.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=50257, use_sliding_window=True,
                            sliding_window=window, max_window_layers=0)
    return tf.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("window", [24, 26, 40, 200])
def test_sliding_window_records_agree_with_naive_or_refuse(gpt2_tokenizer, window):
    """Fault: where [q | y] fits the window but [q | y | answer] does not, both record paths
    returned NLLs off by 0.06-0.07 with no error. Now each either refuses (UnusableRecord naming
    the window) or agrees with the naive backend, which applies the window as the model does."""
    from repro_fast import UnusableRecord

    model = _windowed_qwen2(window)
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3))
    naive = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3), backend="naive")
    with scorer.capture_generation() as generation:
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer, max_new_tokens=16)
    expected = naive.score_padded(pi, pm, ci, cm, answers, groups)
    longest = max(int(q.sum() + c.sum()) + len(scorer.answer_ids(a)) for q, c, a in zip(pm, cm, answers))
    with scorer.capture_phase1() as forward:
        logps, entropies = trainer_forward(model, pi, pm, ci, cm)
    attempts = {
        "generation": lambda: scorer.score_generation(generation, pi, pm, ci, cm, answers, groups),
        "phase1": lambda: scorer.score_phase1(forward, pi, pm, ci, cm, answers, groups, token_logprobs=logps,
                                              token_entropies=entropies),
    }
    for name, attempt in attempts.items():
        if longest > window:
            refused = rf"^{name}: .*sliding window \({window}\)|^{name}: layer"
            with pytest.raises(UnusableRecord, match=refused):
                attempt()
        else:
            got = attempt()
            assert got.points == expected.points
            for b in range(len(groups)):
                torch.testing.assert_close(got.nll[b], expected.nll[b], atol=1e-4, rtol=0)
    if window in (24, 200):  # the two branches are both exercised
        assert (longest > window) == (window == 24)


def test_capture_phase1_checks_what_its_forward_was_fed(gpt2_tokenizer):
    """Faults (no error before): a forward without attention_mask (pads attended, NLL off 0.65),
    other completions of the same shape (off 1.08), GPT-2 without position_ids (off 1.38)."""
    from repro_fast import UnusableRecord

    model = make_tiny_model("gpt2")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    ids, mask = torch.cat([pi, ci], 1), torch.cat([pm, cm], 1)

    def recorded(**kwargs):
        with scorer.capture_phase1() as record, torch.no_grad():
            logits = model(input_ids=ids, **kwargs).logits[:, pi.shape[1] - 1: -1].float()
        logp = torch.log_softmax(logits, -1)
        return record, dict(token_logprobs=logp.gather(-1, ci[..., None])[..., 0],
                            token_entropies=-(logp.exp() * logp).sum(-1))

    positions = _positions(pm, cm)
    record, stats = recorded(attention_mask=mask, position_ids=positions)
    without_mask, _ = recorded(position_ids=positions)
    with pytest.raises(UnusableRecord, match="no attention_mask"):
        scorer.score_phase1(without_mask, pi, pm, ci, cm, answers, **stats)
    all_ones, _ = recorded(attention_mask=torch.ones_like(mask), position_ids=positions)
    with pytest.raises(UnusableRecord, match="attention_mask is not"):
        scorer.score_phase1(all_ones, pi, pm, ci, cm, answers, **stats)
    other = ci.clone()
    other[cm.bool()] = (other[cm.bool()] + 1) % 50257
    with pytest.raises(UnusableRecord, match="the tokens its forward was fed"):
        scorer.score_phase1(record, pi, pm, other, cm, answers, **stats)
    column_positions, _ = recorded(attention_mask=mask)
    with pytest.raises(UnusableRecord, match="learned table.*position_ids"):
        scorer.score_phase1(column_positions, pi, pm, ci, cm, answers, **stats)
    scorer.score_phase1(record, pi, pm, ci, cm, answers, **stats)  # the right record passes


def test_a_config_changed_since_the_capture_is_refused(gpt2_tokenizer):
    """Fault: a record taken at tau 1.0 was scored at the new config's tau 0.5 (log-probs off 3.8)."""
    from repro_fast import UnusableRecord

    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    with scorer.capture_generation() as generation:
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer)
    with scorer.capture_phase1() as forward:
        logps, entropies = trainer_forward(model, pi, pm, ci, cm)
    scorer.config = RePROConfig(num_segments=2, temperature=0.5)
    with pytest.raises(UnusableRecord, match="generation: the scorer's config changed"):
        scorer.score_generation(generation, pi, pm, ci, cm, answers, groups)
    with pytest.raises(UnusableRecord, match="phase1: the scorer's config changed"):
        scorer.score_phase1(forward, pi, pm, ci, cm, answers, groups, token_logprobs=logps,
                            token_entropies=entropies)


def test_a_generation_sampled_at_another_temperature_is_refused(gpt2_tokenizer):
    from repro_fast import UnusableRecord

    model = make_tiny_model("llama")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))  # tau = 1.0
    with scorer.capture_generation() as generation:
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer, temperature=0.7)
    with pytest.raises(UnusableRecord, match="sampled at temperature 0.7 .* temperature 1.0"):
        scorer.score_generation(generation, pi, pm, ci, cm, answers, groups)
    scorer.config = RePROConfig(num_segments=2, temperature=0.7)
    with scorer.capture_generation() as generation:
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer, temperature=0.7)
    got = scorer.score_generation(generation, pi, pm, ci, cm, answers, groups)
    expected = scorer.score_padded(pi, pm, ci, cm, answers, groups)
    torch.testing.assert_close(got.token_logprobs, expected.token_logprobs, atol=1e-4, rtol=0)
    assert "generate" not in model.__dict__  # the recording wrapper is gone


def test_misuse_is_named_by_its_cause(gpt2_tokenizer):
    """Faults: gradient checkpointing, nested captures and a record scored twice all said "a
    sliding-window layer ... or a static cache" or ``torch.cat(): expected a non-empty list``."""
    from repro_fast import UnusableRecord

    model = _gpt2_with_dropout(0.0)
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
    model.gradient_checkpointing_enable()
    model.train()
    with scorer.capture_phase1() as record:
        logps, entropies = trainer_forward(model, pi, pm, ci, cm, _positions(pm, cm))
    with pytest.raises(UnusableRecord, match="(no|empty) KV cache.*gradient checkpointing"):
        scorer.score_phase1(record, pi, pm, ci, cm, answers, token_logprobs=logps, token_entropies=entropies)
    model.gradient_checkpointing_disable()
    model.eval()
    with scorer.capture_phase1():
        with pytest.raises(ValueError, match="capture_generation: a capture of this model is already open"):
            with scorer.capture_generation():
                pass
    with scorer.capture_phase1() as record:  # the outer capture closed cleanly: a new one opens
        logps, entropies = trainer_forward(model, pi, pm, ci, cm, _positions(pm, cm))
    first = scorer.score_phase1(record, pi, pm, ci, cm, answers, groups, token_logprobs=logps,
                                token_entropies=entropies)
    again = scorer.score_phase1(record, pi, pm, ci, cm, answers, groups, token_logprobs=logps,
                                token_entropies=entropies)  # documented: the same result
    _same_result(first, again, atol=0)


def test_a_window_exactly_the_sequence_is_named_by_the_generation_path(gpt2_tokenizer):
    """Fault: refused with a ``phase1:`` prefix inside score_generation."""
    from repro_fast import UnusableRecord

    model = make_tiny_model("llama")
    probe = RePROScorer(model, gpt2_tokenizer)
    with probe.capture_generation():
        pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer, max_new_tokens=6)
    fed = pi.shape[1] + ci.shape[1] - 1
    windowed = _windowed_qwen2(fed)
    scorer = RePROScorer(windowed, gpt2_tokenizer)
    with scorer.capture_generation() as generation:
        pi, pm, ci, cm, answers, groups = trainer_generate(windowed, gpt2_tokenizer, max_new_tokens=6)
    with pytest.raises(UnusableRecord, match="^generation: "):
        scorer.score_generation(generation, pi, pm, ci, cm, answers, groups)


@pytest.mark.parametrize("path", ["phase1", "generation"])
def test_scoring_leaves_the_callers_record_and_tensors_as_they_were(gpt2_tokenizer, path):
    """Scoring reads a record and the caller's tensors and changes neither (the cache it extends
    is put back as recorded): a second scoring of the same record gives the same result."""
    model = make_tiny_model("qwen2")
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=3))
    if path == "generation":
        with scorer.capture_generation() as record:
            pi, pm, ci, cm, answers, groups = trainer_generate(model, gpt2_tokenizer)
        extra = {}
    else:
        pi, pm, ci, cm, answers, groups = trainer_batch(gpt2_tokenizer)
        with scorer.capture_phase1() as record:
            logps, entropies = trainer_forward(model, pi, pm, ci, cm)
        extra = dict(token_logprobs=logps, token_entropies=entropies)
    tensors = [t.clone() for t in (pi, pm, ci, cm, *extra.values())]
    hidden = record.hidden if path == "phase1" else list(record.hidden)
    layers = [(layer.keys, layer.values) for layer in record.cache.layers]
    width = record.cache.get_seq_length()
    score = scorer.score_phase1 if path == "phase1" else scorer.score_generation
    first = score(record, pi, pm, ci, cm, answers, groups, **extra)
    assert record.cache.get_seq_length() == width
    assert all(layer.keys is k and layer.values is v for layer, (k, v) in zip(record.cache.layers, layers))
    assert (record.hidden is hidden) if path == "phase1" else all(
        a is b for a, b in zip(record.hidden, hidden))
    for before, after in zip(tensors, (pi, pm, ci, cm, *extra.values())):
        assert torch.equal(before, after)
    _same_result(first, score(record, pi, pm, ci, cm, answers, groups, **extra), atol=0)


def test_a_hybrid_model_is_refused_by_the_fast_backend_and_scored_by_the_naive_one(gpt2_tokenizer):
    """A recurrent (Mamba) layer keeps one state for the whole sequence: the answer copies cannot
    rewind it to a prefix, so the fast backend says so (score and fast_backend_refusal) and the
    naive backend, one forward per prefix, scores the model."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.NemotronHConfig(vocab_size=50257, hidden_size=32, num_hidden_layers=3,
                                layers_block_type=["mamba", "attention", "mlp"], num_attention_heads=4,
                                num_key_value_heads=2, head_dim=8, intermediate_size=64, mamba_num_heads=4,
                                mamba_head_dim=8, ssm_state_size=16, n_groups=1)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    fast = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    reason = fast.fast_backend_refusal()
    assert reason is not None and "recurrent" in reason
    with pytest.raises(ValueError, match="recurrent.*backend='naive'"):
        fast.score([Q], [Y3], ["7"])
    naive = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2), backend="naive")
    naive = naive.score([Q], [Y3], ["7"])
    assert torch.isfinite(naive.nll[0]).all() and len(naive.points[0]) > 2
    assert RePROScorer(make_tiny_model("llama"), gpt2_tokenizer).fast_backend_refusal(10**6) is None
