"""`repro_fast.selection.select_points` (SPEC §4: ``P = [0, top-k candidates by entropy, ascending, F]``,
ties to the smaller index) against the float64 reference's `select_points` (tests/reference.py) on
random batches of plans: empty responses, no candidates, fewer candidates than k, exact entropy ties."""

from __future__ import annotations

import random

import numpy as np
import pytest
import reference as R
import torch

from repro_fast.segments import Plan
from repro_fast.selection import select_points


def _random_plan(rng: random.Random, n: int) -> Plan:
    """E <= F <= n with E < F unless E = F = n (SPEC §1); candidates a subset of [1, E)."""
    E = rng.choice([n, rng.randint(0, n)])
    F = n if E == n else rng.randint(E + 1, n)
    cands = sorted(rng.sample(range(1, max(E, 1)), rng.randint(0, max(E - 1, 0))))
    return Plan(E, F, np.array(cands, dtype=np.int64))


@pytest.mark.parametrize("seed", range(30))
def test_select_points_equals_reference(seed):
    rng = random.Random(seed)
    B, k = rng.randint(1, 6), rng.randint(1, 6)
    lengths = [rng.choice([0, rng.randint(1, 15)]) for _ in range(B)]
    plans = [_random_plan(rng, n) for n in lengths]
    tied = rng.random() < 0.5  # a few exact values (exact in fp32): ties decided by the index
    entropies = [[rng.choice([0.5, 1.25, 2.0]) if tied else rng.uniform(0, 5) for _ in range(n)]
                 for n in lengths]
    packed = torch.tensor([h for row in entropies for h in row], dtype=torch.float32)
    points = select_points(packed, lengths, plans, k, kernels="torch")
    assert points.dtype == torch.int64
    counts = [p.num_points(k) for p in plans]
    assert points.numel() == sum(counts)
    for b, got in enumerate(points.split(counts)):
        h32 = torch.tensor(entropies[b], dtype=torch.float32).tolist()  # what the package compared
        want = R.select_points(plans[b].candidates.tolist(), h32, k, plans[b].think_end)
        assert got.tolist() == want, (b, plans[b], h32)


def test_ties_go_to_the_smaller_index():
    plan = Plan(6, 7, np.array([1, 2, 3, 5]))
    entropies = torch.tensor([9.0, 1.0, 1.0, 1.0, 9.0, 1.0, 9.0])  # the non-candidates hold the maxima
    assert select_points(entropies, [7], [plan], 2, kernels="torch").tolist() == [0, 1, 2, 7]
    assert select_points(entropies, [7], [plan], 9, kernels="torch").tolist() == [0, 1, 2, 3, 5, 7]
    empty = Plan(0, 0, np.zeros(0, dtype=np.int64))
    assert select_points(torch.zeros(0), [0], [empty], 3, kernels="torch").tolist() == [0]
