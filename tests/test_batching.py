"""`repro_fast.batching`: `micro_batches` (every sequence once, longest first, within the token budget),
`padding_aware_batches` against a brute-force search over every set of cut points on small random
inputs (the same minimal cost, every run within the budget), `right_padded` model inputs and
`padded` (values back to back -> ``[N, width]``, zeros elsewhere, gradients through)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from repro_fast.batching import micro_batches, padded, padding_aware_batches, right_padded


def _cost(runs, lengths, extra, overhead):
    """SPEC of the padding DP: sum over runs of B * (max length + max extra), plus overhead per run."""
    return sum(len(r) * (max(lengths[i] for i in r) + max(extra[i] for i in r)) + overhead for r in runs)


def _feasible(runs, lengths, budget):
    return all(len(r) == 1 or len(r) * max(lengths[i] for i in r) <= budget for r in runs)


def _brute_force(lengths, extra, budget, overhead):
    """The least cost over every way to cut the longest-first order into consecutive runs."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], -extra[i]))
    n, best = len(order), float("inf")
    for mask in itertools.product([False, True], repeat=max(n - 1, 0)):
        cuts = [0] + [i + 1 for i, cut in enumerate(mask) if cut] + [n]
        runs = [order[a:b] for a, b in zip(cuts, cuts[1:])]
        if _feasible(runs, lengths, budget):
            best = min(best, _cost(runs, lengths, extra, overhead))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_padding_aware_batches_is_optimal(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    lengths = [rng.randint(1, 40) for _ in range(n)]
    extra = [rng.randint(0, 30) for _ in range(n)]
    budget = rng.choice([40, 64, 100, 1000])
    overhead = rng.choice([0, 5, 50])
    runs = padding_aware_batches(lengths, extra, budget, overhead)
    assert sorted(i for r in runs for i in r) == list(range(n)), "every sequence exactly once"
    order = sorted(range(n), key=lambda i: (-lengths[i], -extra[i]))
    assert [i for r in runs for i in r] == order, "runs are consecutive pieces of the longest-first order"
    assert _feasible(runs, lengths, budget)
    assert _cost(runs, lengths, extra, overhead) == _brute_force(lengths, extra, budget, overhead)


def test_padding_aware_batches_edges():
    assert padding_aware_batches([], [], 100, 0) == []
    assert padding_aware_batches([500], [3], 100, 0) == [[0]]  # longer than the budget: a run of its own
    # equal lengths: splitting saves no padding, so an overhead per forward makes one run the optimum
    assert padding_aware_batches([10, 10, 10], [2, 2, 2], 1000, 100) == [[0, 1, 2]]
    # a budget of one sequence forces runs of one
    assert padding_aware_batches([10, 10, 10], [2, 2, 2], 10, 100) == [[0], [1], [2]]


@pytest.mark.parametrize("seed", range(10))
def test_micro_batches(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 50) for _ in range(rng.randint(0, 20))]
    budget = rng.choice([1, 30, 64, 200])
    batches = micro_batches(lengths, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b[0]] <= budget  # padded to its first (longest) member
    for b in batches[:-1]:  # greedy: the next sequence did not fit
        assert (len(b) + 1) * lengths[b[0]] > budget


def test_right_padded():
    seqs = [np.array([5, 6, 7]), np.array([8]), np.array([9, 10])]
    ids, mask, pos = right_padded(seqs, "cpu")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert pos.tolist() == [[0, 1, 2]] * 3
    assert ids.dtype == mask.dtype == torch.int64


def test_padded_places_back_to_back_values_and_passes_gradients():
    packed = torch.arange(1.0, 6.0, requires_grad=True)  # rows of 2, 0 and 3 values
    out = padded(packed, [2, 0, 3], width=4)
    assert out.tolist() == [[1, 2, 0, 0], [0, 0, 0, 0], [3, 4, 5, 0]]
    (out * torch.arange(12.0).reshape(3, 4)).sum().backward()
    assert packed.grad.tolist() == [0.0, 1.0, 8.0, 9.0, 10.0]
    assert padded(torch.zeros(0), [], 3).shape == (0, 3)
