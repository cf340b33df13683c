"""`repro_fast.rewards` (SPEC §5-6 as tensor math) against the float64 reference (tests/reference.py):
the NLL moving average, Kendall tau-a of every prefix, magnitude / stability / score / rewards in both
stability forms (and the hand-worked numbers of test_reference.py), scope ids, normalization over
group / batch / none with empty reward lists and scopes of one, placement on token P_j - 1 and the
reward-to-go."""

from __future__ import annotations

import random

import numpy as np
import pytest
import reference as R
import torch

from repro_fast import RePROConfig
from repro_fast.rewards import (
    kendall_tau_prefixes,
    nll_ema,
    normalize_rewards,
    place,
    scope_ids,
    segment_scores,
)


def dense_reward_to_go(placed: torch.Tensor) -> torch.Tensor:
    """SPEC §6 reward-to-go the obvious way: ``A_t = sum_{s >= t} placed[:, s]`` along each row."""
    return placed.flip(-1).cumsum(-1).flip(-1)


def _curve(rng: random.Random) -> list[float]:
    n = rng.randint(2, 12)
    if rng.random() < 0.3:  # a few repeated values: ties in the EMA signs
        return [rng.choice([1.0, 2.0, 3.0]) for _ in range(n)]
    return [rng.uniform(0.1, 5.0) for _ in range(n)]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("form", ["paper", "authors_code"])
def test_segment_scores_equal_reference(seed, form):
    rng = random.Random(seed)
    nll = _curve(rng)
    w, d = rng.choice([0.0, 0.1, 0.5, 1.0]), rng.choice([0.0, 0.5, 0.99, 1.0])
    config = RePROConfig(stability_weight=w, ema_decay=d, stability_form=form)
    nll32 = torch.tensor(nll, dtype=torch.float32)  # J arrives in fp32: the reference reads the same values
    got = segment_scores(nll32, config)
    want = R.scores_from_nll(nll32.tolist(), w=w, d=d, stability_form=form)
    for key in ("s_magn", "s_stab", "score", "rewards"):
        assert got[key].dtype == torch.float64, key
        assert got[key].tolist() == pytest.approx(want[key], abs=1e-12), key
    t = nll32.double()
    assert nll_ema(t, d).tolist() == pytest.approx(want["ema"], abs=1e-12)
    assert kendall_tau_prefixes(nll_ema(t, d)).tolist() == pytest.approx(want["tau"], abs=1e-12)


def test_segment_scores_by_hand():
    # the hand-worked curve of test_reference.py::test_non_monotone_curve_by_hand: NLL [2, 1, 3]
    got = segment_scores(torch.tensor([2.0, 1.0, 3.0]), RePROConfig())
    assert got["s_stab"].tolist() == pytest.approx([1.0, 1 / 3], abs=1e-15)
    assert got["score"].tolist() == pytest.approx([0.584095, 0.118700], abs=1e-5)
    assert got["rewards"].tolist() == pytest.approx([0.584095, -0.465395], abs=1e-5)
    # a response with no segments after P_0 has no rewards
    assert segment_scores(torch.tensor([2.5]), RePROConfig())["rewards"].numel() == 0


def test_scope_ids():
    assert scope_ids("none", 3, ["a", "b", "a"]) is None
    assert scope_ids("batch", 3, ["a", "b", "a"]) == [0, 0, 0]
    assert scope_ids("group", 3, None) == [0, 1, 2]  # each trajectory its own group
    assert scope_ids("group", 4, ["b", "a", "b", (1, 2)]) == [0, 1, 0, 2]  # dense, first-seen order


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(
    "mode, grouped", [("group", True), ("group", False), ("batch", True), ("none", True)]
)
def test_normalize_place_and_reward_to_go_equal_reference(seed, mode, grouped):
    rng = random.Random(seed)
    n, width = rng.randint(1, 8), 12
    points = [[0, *sorted(rng.sample(range(1, width + 1), rng.randint(0, 4)))] for _ in range(n)]
    rewards = [[rng.gauss(0, 1) for _ in p[1:]] for p in points]
    groups = [rng.randint(0, 2) for _ in range(n)] if grouped else None
    norm = normalize_rewards([torch.tensor(r, dtype=torch.float64) for r in rewards], mode, groups)
    want = R.normalize_rewards(rewards, groups, mode)
    for got_b, want_b in zip(norm, want):
        assert got_b.tolist() == pytest.approx(want_b, abs=1e-9)
    placed = place(norm, points, width)
    assert placed.shape == (n, width) and placed.dtype == torch.float64
    for b, p in enumerate(points):  # r'_j sits on token P_j - 1, nothing elsewhere
        expect = torch.zeros(width, dtype=torch.float64)
        expect[torch.tensor(p[1:], dtype=torch.long) - 1] = norm[b]
        assert torch.equal(placed[b], expect)
    togo = dense_reward_to_go(placed)
    for b, p in enumerate(points):
        assert togo[b].tolist() == pytest.approx(R.reward_to_go(width, p, want[b]), abs=1e-9)


def test_normalize_rewards_edges():
    empty = normalize_rewards([torch.zeros(0, dtype=torch.float64)] * 2, "group", ["a", "a"])
    assert [r.numel() for r in empty] == [0, 0]
    one = normalize_rewards([torch.tensor([3.0], dtype=torch.float64)], "group", None)
    assert one[0].tolist() == [0.0]  # a scope of one reward: centred, sigma 0 -> 0 / 1e-6 = 0
    raw = [torch.tensor([1.0, 2.0])]
    kept = normalize_rewards(raw, "none", None)
    assert kept[0] is not raw[0] and torch.equal(kept[0], raw[0])  # a copy, unchanged
    assert normalize_rewards([], "batch", None) == []


def test_reward_to_go_at_points_equals_the_dense_cumsum():
    """The chunk-wise fill (suffix sums in float64, written once as float32) equals the dense
    reward-to-go of the placed rewards, rows without rewards and P_m < width included."""
    from repro_fast.rewards import reward_to_go_at_points

    rng = np.random.default_rng(3)
    width = 23
    points = [[0, *sorted(rng.choice(np.arange(1, width + 1), rng.integers(0, 6), replace=False).tolist())]
              for _ in range(40)]
    values = [torch.from_numpy(rng.normal(size=len(p) - 1)) for p in points]
    counts = [len(p) - 1 for p in points]
    got = reward_to_go_at_points(torch.cat(values), counts, points, width)
    expected = dense_reward_to_go(place(values, points, width)).float()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (got[[b for b, c in enumerate(counts) if c == 0]] == 0).all()
