"""`repro_fast.ops.naive`: the plain-torch twins every fused op is compared against are themselves
checked against independent definitions: log-prob and entropy against `torch.distributions`
(p = 0 contributes 0, NaN stays NaN), segment selection against the float64 SPEC reference's
`select_points`, and prefix attention against a softmax written out per query over exactly the keys
SPEC §2 lets it see (its cache prefix, then its own copy up to itself)."""

from __future__ import annotations

import math
import random

import pytest
import reference as R
import torch

from repro_fast.ops import logprob_entropy_naive, logprob_naive, prefix_attention_naive, segment_select_naive


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logprob_entropy_naive_equals_the_distribution(temperature):
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    bias, targets = torch.randn(11, generator=g), torch.randint(0, 11, (7,), generator=g)
    lp, ent = logprob_entropy_naive(hidden, weight, targets, temperature, bias=bias)
    dist = torch.distributions.Categorical(
        logits=(hidden.double() @ weight.double().T + bias.double()) / temperature
    )
    torch.testing.assert_close(lp, dist.log_prob(targets), atol=1e-12, rtol=0)
    torch.testing.assert_close(ent, dist.entropy(), atol=1e-12, rtol=0)
    assert lp.dtype == ent.dtype == torch.float64
    torch.testing.assert_close(
        logprob_naive(hidden, weight, targets, temperature, bias=bias), lp, atol=0, rtol=0
    )
    half, _ = logprob_entropy_naive(
        hidden, weight, targets, temperature, bias=bias, compute_dtype=torch.float32
    )
    assert half.dtype == torch.float32


def test_zero_probabilities_add_nothing_and_nan_stays_nan():
    hidden, weight = torch.ones(1, 1), torch.ones(3, 1)
    bias = torch.tensor([0.0, 0.0, -math.inf])  # a token of probability exactly 0
    lp, ent = logprob_entropy_naive(hidden, weight, torch.tensor([0]), bias=bias)
    assert ent.item() == pytest.approx(math.log(2), abs=1e-12) and lp.item() == pytest.approx(-math.log(2))
    _, ent = logprob_entropy_naive(hidden, weight, torch.tensor([0]), bias=torch.tensor([0.0, math.nan, 0.0]))
    assert math.isnan(ent.item())


@pytest.mark.parametrize("seed", range(10))
def test_segment_select_naive_equals_reference(seed):
    rng = random.Random(seed)
    B, n, k = rng.randint(1, 4), rng.randint(1, 12), rng.randint(1, 6)
    ent = torch.tensor([[rng.choice([0.5, 1.0, rng.random()]) for _ in range(n)] for _ in range(B)])  # ties
    cand = torch.tensor([[0 < i and rng.random() < 0.5 for i in range(n)] for _ in range(B)])  # SPEC: i >= 1
    idx, count = segment_select_naive(ent, cand, k)
    assert idx.shape == (B, min(k, n)) and idx.dtype == count.dtype == torch.int64
    for b in range(B):
        cands = [i for i in range(n) if cand[b, i]]
        chosen = R.select_points(cands, ent[b].tolist(), k, F=n)[1:-1]  # without P_0 = 0 and F = n
        assert count[b] == len(chosen) and idx[b, : count[b]].tolist() == chosen
        assert (idx[b, count[b]:] == -1).all()


def _attention_by_definition(q, k, v, limit, start, scale):
    """out[b, c, h] = softmax over the keys query c may see: cache [0, limit), copy [start, c]."""
    B, Hq, C, D = q.shape
    L = k.shape[2] - C
    group = Hq // k.shape[1]
    out = torch.zeros(B, C, Hq, D, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            keys = list(range(int(limit[b, c]))) + [L + j for j in range(int(start[b, c]), c + 1)]
            for h in range(Hq):
                kv = h // group
                scores = torch.stack([q[b, h, c].double() @ k[b, kv, j].double() * scale for j in keys])
                weights = torch.softmax(scores, 0)
                out[b, c, h] = sum(w * v[b, kv, j].double() for w, j in zip(weights, keys))
    return out


def test_prefix_attention_naive_equals_the_definition():
    g = torch.Generator().manual_seed(1)
    B, Hq, Hkv, L, D = 2, 4, 2, 5, 3
    copies, span = 2, 2
    C = copies * span
    q, k, v = torch.randn(B, Hq, C, D, generator=g), torch.randn(B, Hkv, L + C, D, generator=g), \
        torch.randn(B, Hkv, L + C, D, generator=g)
    limit = torch.tensor([[1, 1, 4, 4], [3, 3, 5, 5]])  # copy j of row b: prefix limit
    start = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2]])  # the first token of its copy
    got = prefix_attention_naive(q, k, v, limit, start, scale=0.7)
    assert got.shape == (B, C, Hq, D)
    torch.testing.assert_close(got, _attention_by_definition(q, k, v, limit, start, 0.7), atol=1e-12, rtol=0)
    default = prefix_attention_naive(q, k, v, limit, start)  # scale D ** -0.5
    torch.testing.assert_close(
        default, _attention_by_definition(q, k, v, limit, start, D**-0.5), atol=1e-12, rtol=0
    )
