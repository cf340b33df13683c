"""SPEC §1-6 on small hand-checked cases.

Two kinds of tests live here:
1. the float64 reference (tests/reference.py) against numbers worked out by hand in the
   comments, against scipy, and against the SPEC's segment/think-end rules on hand-built
   token sequences, so that the reference itself is trustworthy;
2. the package's public API (`grpo_advantages`, and `RePROScorer` on cases whose points and
   scores can be derived by hand) against those same hand-derived numbers.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

import reference as R

# ==========================================================================================
# §5 scores and rewards by hand
# ==========================================================================================

TANH_05 = 0.46211715726000974  # tanh(0.5)
TANH_075 = 0.6351489523872873  # tanh(0.75)
TANH_15 = 0.9051482536448664  # tanh(1.5)


def test_monotone_curve_by_hand():
    # NLL = [2.0, 1.5, 1.0], w = 0.1, d = 0.99
    # S_magn_1 = 1 - tanh(1.5 / 2.000001) ≈ 1 - tanh(0.75)   = 0.364851 (1e-6 shifts it ~2e-7)
    # S_magn_2 = 1 - tanh(1.0 / 2.000001) ≈ 1 - tanh(0.5)    = 0.537883
    # EMA: e0 = 2, e1 = .99*2 + .01*1.5 = 1.995, e2 = .99*1.995 + .01*1.0 = 1.98505
    # tau_1: (0,1): sign(2 - 1.995) = +1            -> 1/1 = 1     -> S_stab_1 = 1
    # tau_2: (0,1) +1, (0,2) +1, (1,2) +1           -> 3/3 = 1     -> S_stab_2 = 1
    # S_1 = .9*0.364851 + .1 = 0.428366 ; S_2 = .9*0.537883 + .1 = 0.584095
    # r = [0.428366, 0.155729], sum = S_2
    out = R.scores_from_nll([2.0, 1.5, 1.0], w=0.1, d=0.99)
    assert out["ema"] == pytest.approx([2.0, 1.995, 1.98505], abs=1e-12)
    assert out["tau"] == [1.0, 1.0]
    assert out["s_magn"] == pytest.approx([1 - TANH_075, 1 - TANH_05], abs=1e-6)
    assert out["s_stab"] == [1.0, 1.0]
    assert out["score"] == pytest.approx([0.428366, 0.584095], abs=1e-5)
    assert out["rewards"] == pytest.approx([0.428366, 0.155729], abs=1e-5)
    assert sum(out["rewards"]) == pytest.approx(out["score"][-1], abs=1e-12)


def test_non_monotone_curve_by_hand():
    # NLL = [2.0, 1.0, 3.0]
    # EMA: e0 = 2, e1 = 1.98 + .01 = 1.99, e2 = .99*1.99 + .03 = 2.0001
    # tau_1 = +1 -> S_stab_1 = 1
    # tau_2: (0,1): sign(2 - 1.99) = +1; (0,2): sign(2 - 2.0001) = -1; (1,2): sign(1.99 - 2.0001) = -1
    #        -> -1/3 -> S_stab_2 = (1 - 1/3)/2 = 1/3
    # S_magn_1 = 1 - tanh(0.5) = 0.537883 ; S_magn_2 = 1 - tanh(1.5) = 0.094852
    # S_1 = .9*.537883 + .1 = 0.584095 ; S_2 = .9*.094852 + .1/3 = 0.118700
    # r = [0.584095, -0.465395]
    out = R.scores_from_nll([2.0, 1.0, 3.0], w=0.1, d=0.99)
    assert out["ema"] == pytest.approx([2.0, 1.99, 2.0001], abs=1e-12)
    assert out["tau"] == pytest.approx([1.0, -1 / 3], abs=1e-15)
    assert out["s_stab"] == pytest.approx([1.0, 1 / 3], abs=1e-15)
    assert out["s_magn"] == pytest.approx([1 - TANH_05, 1 - TANH_15], abs=1e-6)
    assert out["score"] == pytest.approx([0.584095, 0.118700], abs=1e-5)
    assert out["rewards"] == pytest.approx([0.584095, -0.465395], abs=1e-5)
    # authors' form (SPEC §8): mono = tau_j + 1/2 -> [1.5, 1/6]
    a = R.scores_from_nll([2.0, 1.0, 3.0], w=0.1, d=0.99, stability_form="authors_code")
    assert a["s_stab"] == pytest.approx([1.5, 1 / 2 - 1 / 3], abs=1e-15)
    # SPEC §8's own example: NLL [3, 2, 1] gives mono = 1.5
    assert R.scores_from_nll([3.0, 2.0, 1.0], w=0.0, d=0.99, stability_form="authors_code")["s_stab"][-1] == 1.5


def test_no_gain_gives_1_minus_tanh_1_and_flat_ema_gives_half():
    # NLL constant: S_magn = 1 - tanh(1) ≈ 0.238406; EMA constant -> every sign is 0 -> tau = 0
    # -> S_stab = 1/2; S = .9*.238406 + .05 = 0.264565; r = [S, 0, 0]
    out = R.scores_from_nll([3.0] * 4, w=0.1, d=0.99)
    assert out["s_magn"] == pytest.approx([0.238406] * 3, abs=1e-6)
    assert out["tau"] == [0.0, 0.0, 0.0]
    assert out["s_stab"] == [0.5] * 3
    assert out["rewards"] == pytest.approx([0.264565, 0.0, 0.0], abs=1e-6)


def test_empty_curve_has_no_rewards():
    out = R.scores_from_nll([2.5], w=0.1, d=0.99)
    assert out["score"] == [] and out["rewards"] == [] and out["ema"] == [2.5]


def test_weights_d_and_w_edges():
    # d = 1: EMA frozen at NLL_0 -> tau = 0 -> S_stab = 1/2. d = 0: EMA = NLL itself.
    out = R.scores_from_nll([2.0, 1.0, 0.5], w=1.0, d=1.0)
    assert out["score"] == [0.5, 0.5]
    out = R.scores_from_nll([2.0, 1.0, 1.5], w=1.0, d=0.0)
    # tau_2: (0,1) +1, (0,2) +1, (1,2) sign(1 - 1.5) = -1 -> 1/3 -> S = (1 + 1/3)/2 = 2/3
    assert out["score"] == pytest.approx([1.0, 2 / 3], abs=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_rewards_telescope_to_last_score(seed):
    rng = random.Random(seed)
    nll = [rng.uniform(0.1, 5) for _ in range(rng.randint(2, 12))]
    out = R.scores_from_nll(nll, w=0.3, d=0.9)
    assert sum(out["rewards"]) == pytest.approx(out["score"][-1], abs=1e-12)
    for s in out["s_magn"]:
        assert 0 < s <= 1
    for s in out["s_stab"]:
        assert 0 <= s <= 1


# ==========================================================================================
# Kendall tau-a
# ==========================================================================================


@pytest.mark.parametrize("seed", range(8))
def test_tau_a_matches_scipy_without_ties(seed):
    from scipy.stats import kendalltau

    rng = random.Random(seed)
    n = rng.randint(2, 15)
    ys = [rng.random() for _ in range(n)]
    xs = list(range(n))
    expected = kendalltau(xs, ys).statistic  # tau-b == tau-a when there are no ties
    assert R.kendall_tau_a(xs, ys) == pytest.approx(expected, abs=1e-12)
    # and the tau used in the scores: tau_j between (0..j) and (-e_0..-e_j) (tie-free EMA)
    nll = [rng.uniform(0.5, 3) for _ in range(n)]
    out = R.scores_from_nll(nll, w=0.1, d=0.5)
    for j in range(1, n):
        e = out["ema"][: j + 1]
        assert out["tau"][j - 1] == pytest.approx(
            kendalltau(list(range(j + 1)), [-v for v in e]).statistic, abs=1e-12
        )


def test_tau_a_with_ties_by_double_sum():
    # (0,1,2,3) vs (1, 1, 0, 2): pairs (0,1) tie 0, (0,2) -1, (0,3) +1, (1,2) -1, (1,3) +1,
    # (2,3) +1 -> 1 / 6 (tau-a divides by all 6 pairs, unlike scipy's tau-b)
    assert R.kendall_tau_a([0, 1, 2, 3], [1, 1, 0, 2]) == pytest.approx(1 / 6, abs=1e-15)
    # an EMA with ties: NLL [1, 1, 1] with d = 0 -> e = [1, 1, 1] -> tau = 0
    assert R.scores_from_nll([1.0, 1.0, 1.0], w=0.0, d=0.0)["tau"] == [0.0, 0.0]
    # NLL [2, 2, 1], d = 0: e = [2,2,1]: (0,1) 0, (0,2) +1, (1,2) +1 -> 2/3
    assert R.scores_from_nll([2.0, 2.0, 1.0], w=0.0, d=0.0)["tau"] == pytest.approx([0.0, 2 / 3])


# ==========================================================================================
# §6 normalization, reward-to-go, GRPO by hand
# ==========================================================================================


def test_normalization_by_hand():
    rewards = [[1.0, 3.0], [2.0], [4.0, 6.0]]
    groups = ["g", "g", "h"]
    # group g: {1, 3, 2}: mu 2, pop std sqrt(2/3) = 0.8164966 -> [-1.2247433, 1.2247433], [0]
    # group h: {4, 6}: mu 5, std 1 -> [-1/(1+1e-6), 1/(1+1e-6)]
    s = math.sqrt(2 / 3) + 1e-6
    out = R.normalize_rewards(rewards, groups, "group")
    assert out[0] == pytest.approx([-1 / s, 1 / s], abs=1e-12)
    assert out[1] == [0.0]
    assert out[2] == pytest.approx([-1 / (1 + 1e-6), 1 / (1 + 1e-6)], abs=1e-12)
    # batch: {1,3,2,4,6}: mu 3.2, var (4.84+.04+1.44+.64+7.84)/5 = 2.96, std 1.7204651
    sb = math.sqrt(2.96) + 1e-6
    out = R.normalize_rewards(rewards, groups, "batch")
    assert out == [
        pytest.approx([-2.2 / sb, -0.2 / sb]),
        pytest.approx([-1.2 / sb]),
        pytest.approx([0.8 / sb, 2.8 / sb]),
    ]
    # none: unchanged
    assert R.normalize_rewards(rewards, groups, "none") == rewards
    # no group ids: every trajectory is its own group; a single reward normalizes to 0
    out = R.normalize_rewards(rewards, None, "group")
    assert out[1] == [0.0]
    assert out[0] == pytest.approx([-1 / (1 + 1e-6), 1 / (1 + 1e-6)])


def test_reward_to_go_by_hand():
    # n = 6, P = [0, 2, 5]: r'_1 on token 1, r'_2 on token 4 -> [a+b, a+b, b, b, b, 0]
    a, b = 0.7, -0.2
    assert R.reward_to_go(6, [0, 2, 5], [a, b]) == pytest.approx([a + b, a + b, b, b, b, 0.0])
    # P_m = n: the last token carries the last reward
    assert R.reward_to_go(3, [0, 1, 3], [a, b]) == pytest.approx([a + b, b, b])
    assert R.reward_to_go(0, [0], []) == []


def test_grpo_outcome_by_hand():
    # R = [1, 0, 1, 0.5], groups [a, a, a, b]
    # group a: mean 2/3, unbiased std sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = sqrt(1/3) = 0.5773503
    #   -> A = [(1/3)/s, -(2/3)/s, (1/3)/s] with s = 0.5773503 + 1e-6 -> [0.57735, -1.1547, 0.57735]
    # group b (one member): 0
    s = math.sqrt(1 / 3) + 1e-6
    A = R.grpo_outcome([1.0, 0.0, 1.0, 0.5], ["a", "a", "a", "b"])
    assert A == pytest.approx([1 / 3 / s, -2 / 3 / s, 1 / 3 / s, 0.0], abs=1e-12)
    assert A[0] == pytest.approx(0.57735, abs=1e-5)


# ------------------------------------------------------------------------------------------
# the package's grpo_advantages against the same hand numbers
# ------------------------------------------------------------------------------------------


def _grpo():
    import repro_fast

    return repro_fast.grpo_advantages


@pytest.mark.parametrize("as_tensor", [False, True])
def test_package_grpo_advantages_by_hand(as_tensor):
    grpo_advantages = _grpo()
    s = math.sqrt(1 / 3) + 1e-6
    A = [1 / 3 / s, -2 / 3 / s, 1 / 3 / s, 0.0]
    outcome = [1.0, 0.0, 1.0, 0.5]
    if as_tensor:
        outcome = torch.tensor(outcome)
    groups = ["a", "a", "a", "b"]
    proc = torch.tensor(
        [[1.0, 2.0, 3.0], [0.5, 0.0, 0.0], [-1.0, -1.0, 0.0], [4.0, 0.0, 0.0]], dtype=torch.float32
    )
    mask = torch.tensor(
        [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool
    )
    out = grpo_advantages(outcome, groups, process_advantages=proc, response_mask=mask, alpha=0.5)
    assert tuple(out.shape) == (4, 3)
    expected = torch.zeros(4, 3, dtype=torch.float64)
    for b in range(4):
        for t in range(3):
            if mask[b, t]:
                expected[b, t] = A[b] + 0.5 * float(proc[b, t])
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


def test_package_grpo_advantages_default_alpha_and_no_process():
    grpo_advantages = _grpo()
    # R = [0, 1] in one group: mean .5, unbiased std sqrt(.5) = 0.7071068 -> A = -/+ 0.5/0.7071078
    s = math.sqrt(0.5) + 1e-6
    proc = torch.tensor([[2.0, 1.0], [3.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    out = grpo_advantages([0.0, 1.0], [7, 7], process_advantages=proc, response_mask=mask)
    exp = torch.tensor([[-0.5 / s + 0.2, -0.5 / s + 0.1], [0.5 / s + 0.3, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.double(), exp, atol=1e-5, rtol=0)
    # no process advantage: the outcome advantage on every real token
    out = grpo_advantages([0.0, 1.0], [7, 7], response_mask=mask)
    exp = torch.tensor([[-0.5 / s, -0.5 / s], [0.5 / s, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.double(), exp, atol=1e-5, rtol=0)


def test_package_grpo_group_of_one_is_zero():
    grpo_advantages = _grpo()
    proc = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    out = grpo_advantages([5.0, -3.0], ["x", "y"], process_advantages=proc, response_mask=mask, alpha=0.0)
    torch.testing.assert_close(out.double(), torch.zeros(2, 2, dtype=torch.float64), atol=1e-7, rtol=0)
    # equal rewards in a group: std 0 -> A = 0 / 1e-6 = 0
    out = grpo_advantages([2.0, 2.0], ["x", "x"], process_advantages=proc, response_mask=mask, alpha=1.0)
    torch.testing.assert_close(out.double(), proc.double(), atol=1e-6, rtol=0)


# ==========================================================================================
# §1 think end and §3 segment starts on hand-built GPT-2 token sequences
# ==========================================================================================

# GPT-2 ids used below (checked in test_gpt2_ids_used_here):
NL, NLNL, DOT, QM, SPACE = 198, 628, 13, 30, 220
A_, B_, X_, Y_ = 64, 65, 87, 56
LT, SLASH, THINK, GT, LTSLASH, DOTLTSLASH = 27, 14, 14925, 29, 3556, 25970


def test_gpt2_ids_used_here(gpt2_tokenizer):
    t = lambda i: gpt2_tokenizer.decode([i])  # noqa: E731
    assert [t(i) for i in (NL, NLNL, DOT, QM, SPACE)] == ["\n", "\n\n", ".", "?", " "]
    assert [t(i) for i in (A_, B_, X_, Y_)] == ["a", "b", "x", "Y"]
    assert [t(i) for i in (LT, SLASH, THINK, GT, LTSLASH, DOTLTSLASH)] == [
        "<", "/", "think", ">", "</", ".</"
    ]


@pytest.mark.parametrize(
    "y, E, F",
    [
        # "42.</think>" -> ['42', '.</', 'think', '>']: the marker begins inside token 1
        ([3682, DOTLTSLASH, THINK, GT], 1, 4),
        # marker at token 0, as three tokens
        ([LTSLASH, THINK, GT, A_], 0, 3),
        # marker spelled with four tokens '<' '/' 'think' '>' after 'a'
        ([A_, LT, SLASH, THINK, GT, B_], 1, 5),
        # two occurrences: the first one counts
        ([A_, LTSLASH, THINK, GT, B_, LTSLASH, THINK, GT], 1, 4),
        # incomplete marker: no think end -> E = F = n
        ([A_, LTSLASH, THINK, B_], 4, 4),
        ([], 0, 0),
    ],
)
def test_reference_think_bounds(gpt2_tokenizer, y, E, F):
    assert R.think_bounds_text(gpt2_tokenizer, y, "</think>") == (E, F)
    assert R.think_bounds_text(gpt2_tokenizer, y, None) == (len(y), len(y))


@pytest.mark.parametrize(
    "y, expected",
    [
        # "a\n\nb" as ['a', '\n', '\n', 'b']: a boundary straddling two tokens -> start at 3
        ([A_, NL, NL, B_], [3]),
        # "a\n\nb" as ['a', '\n\n', 'b']
        ([A_, NLNL, B_], [2]),
        # "x.\n\n\nY": ['x', '.', '\n\n', '\n', 'Y']: one start, at the first non-blank token
        ([X_, DOT, NLNL, NL, Y_], [4]),
        # ".\n" and "?\n": 'a' '.' '\n' 'b' '?' '\n' 'Y'
        ([A_, DOT, NL, B_, QM, NL, Y_], [3, 6]),
        # a lone "\n" after a word is not a boundary
        ([A_, NL, B_], []),
        # blank token (' ') after a boundary is not a start, and the prefix then ends with
        # "\n\n " which is no boundary: read literally, the SPEC gives no start at all
        ([A_, NLNL, SPACE, B_], []),
        # blank tokens that are newlines keep the boundary: 'a' '\n\n' '\n' '\n' 'b' -> 4
        ([A_, NLNL, NL, NL, B_], [4]),
        # a boundary at the very end of the response has no start
        ([A_, DOT, NL], []),
        # i = 0 is never a start
        ([NLNL, A_], [1]),
    ],
)
def test_reference_segment_starts(gpt2_tokenizer, y, expected):
    E = len(y)
    assert R.segment_starts_text(gpt2_tokenizer, y, E, ("\n\n", ".\n", "?\n")) == expected


def test_reference_segment_starts_stop_before_think_end(gpt2_tokenizer):
    # 'a' '\n\n' 'b' '\n\n' '</' 'think' '>' 'Y': E = 4 -> starts {2}; 4 is not < E
    y = [A_, NLNL, B_, NLNL, LTSLASH, THINK, GT, Y_]
    E, F = R.think_bounds_text(gpt2_tokenizer, y, "</think>")
    assert (E, F) == (4, 7)
    assert R.segment_starts_text(gpt2_tokenizer, y, E, ("\n\n", ".\n", "?\n")) == [2]


def test_reference_token_id_rules(gpt2_tokenizer):
    # token-id mode: firsts = {encode('\n\n')[0], encode('.\n')[0], encode('?\n')[0]} = {628, 13, 30}
    # 'a' '\n' '\n' 'b' -> no start (straddling boundary missed); 'a' '.' 'b' -> start at 2
    sfx = ("\n\n", ".\n", "?\n")
    assert R.segment_starts_token_id(gpt2_tokenizer, [A_, NL, NL, B_], 4, sfx) == []
    assert R.segment_starts_token_id(gpt2_tokenizer, [A_, DOT, B_, NLNL, NL], 5, sfx) == [2, 4]
    # think end by a single token id: ' Therefore' is 8447
    assert R.think_bounds_token_id(gpt2_tokenizer, [A_, 8447, B_, 8447], " Therefore") == (1, 2)
    assert R.think_bounds_token_id(gpt2_tokenizer, [A_, B_], " Therefore") == (2, 2)
    # a marker of several tokens: its first id, the fragment '</' (3556), as the authors' code does
    assert R.think_bounds_token_id(gpt2_tokenizer, [A_, 3556, B_], "</think>") == (1, 2)
    assert R.think_bounds_token_id(gpt2_tokenizer, [A_, B_, 3556], "</think>") == (2, 3)


def test_reference_selection_tie_rule():
    H = {1: 2.0, 3: 5.0, 4: 5.0, 6: 1.0, 8: 5.0}
    # k = 2 among three equal 5.0 entropies -> smaller indices 3, 4
    assert R.select_points([1, 3, 4, 6, 8], H, 2, 10) == [0, 3, 4, 10]
    # fewer candidates than k -> all; F already a candidate? (F never is, but unique anyway)
    assert R.select_points([1, 3], H, 5, 3) == [0, 1, 3]
    assert R.select_points([], H, 5, 0) == [0]


# ==========================================================================================
# The package's scorer on cases derivable by hand
# ==========================================================================================


def _scorer_cls():
    import repro_fast

    return repro_fast.RePROScorer, repro_fast.RePROConfig


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
    RePROScorer, RePROConfig = _scorer_cls()
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
    RePROScorer, RePROConfig = _scorer_cls()
    logV = math.log(50257)
    smagn = 1 - math.tanh(logV / (logV + 1e-6))
    S = 0.9 * smagn + 0.05
    y = [A_, NLNL, B_, NLNL, X_, NLNL, Y_]
    cfg = RePROConfig(num_segments=2, normalize="none")
    res = RePROScorer(constant_logit_llama, gpt2_tokenizer, cfg, backend=backend).score(
        [[A_]], [y], ["12"]
    )
    assert [int(p) for p in res.points[0]] == [0, 2, 4, 7]
    torch.testing.assert_close(res.nll[0].double(), torch.full((4,), logV, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(res.s_magn[0].double(), torch.full((3,), smagn, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(res.s_stab[0].double(), torch.full((3,), 0.5, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(res.rewards[0].double(), torch.tensor([S, 0, 0], dtype=torch.float64), atol=1e-4, rtol=0)
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
