"""The float64 SPEC reference itself (tests/reference.py) on small hand-checked cases: SPEC §5 scores
and rewards and §6 normalization, reward-to-go and GRPO against numbers worked out by hand in the
comments, Kendall tau-a against scipy, and the §1 think-end / §3 segment-start rules on hand-built
GPT-2 token sequences, so that the reference every other test trusts is itself trustworthy.
(The package's own functions are checked against the same numbers in test_rewards.py,
test_advantages.py and test_scorer.py.)"""

from __future__ import annotations

import math
import random

import pytest
import reference as R
from data import A_, B_, DOT, DOTLTSLASH, GT, LT, LTSLASH, NL, NLNL, QM, SLASH, SPACE, THINK, X_, Y_

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
    assert (
        R.scores_from_nll([3.0, 2.0, 1.0], w=0.0, d=0.99, stability_form="authors_code")["s_stab"][-1] == 1.5
    )


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


# ==========================================================================================
# §1 think end and §3 segment starts on hand-built GPT-2 token sequences
# ==========================================================================================


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
