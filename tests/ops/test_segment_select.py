"""`repro_fast.ops.segment_select` and `triton_segment_select`: segment_select (torch path and
Triton kernel) against the reference loop, with exact ties."""

from __future__ import annotations

import pytest
import torch

from repro_fast.ops import segment_select, segment_select_naive


def random_case(B, n, p_cand, levels, seed):
    """Entropies drawn from few distinct levels, so ties are everywhere."""
    g = torch.Generator().manual_seed(seed)
    ent = torch.randint(0, levels, (B, n), generator=g).float() * 0.25
    cand = torch.rand(B, n, generator=g) < p_cand
    return ent, cand


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "B,n,k,p,levels",
    [(1, 1, 1, 1.0, 3), (3, 37, 5, 0.3, 3), (4, 100, 20, 0.5, 2), (2, 50, 7, 0.0, 4), (5, 19, 40, 0.6, 5),
     (2, 300, 3, 0.9, 1)],
)
def test_matches_reference(backend, B, n, k, p, levels):
    ent, cand = random_case(B, n, p, levels, seed=B * 1000 + n)
    ref_idx, ref_count = segment_select_naive(ent, cand, k)
    idx, count = segment_select(ent, cand, k, backend=backend)
    assert idx.tolist() == ref_idx.tolist()
    assert count.tolist() == ref_count.tolist()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_all_equal_entropies_take_smallest_indices(backend):
    ent = torch.full((1, 30), 2.0)
    cand = torch.zeros(1, 30, dtype=torch.bool)
    cand[0, [3, 7, 9, 20, 28]] = True
    idx, count = segment_select(ent, cand, 3, backend=backend)
    assert idx.tolist() == [[3, 7, 9]] and count.tolist() == [3]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_agrees_with_scorer_selection_rule(backend):
    from reference import select_points  # the independent SPEC reference

    ent, cand = random_case(3, 64, 0.4, 3, seed=11)
    idx, count = segment_select(ent, cand, 6, backend=backend)
    for b in range(3):
        cands = torch.nonzero(cand[b]).flatten().tolist()
        expect = select_points(cands, {i: float(ent[b, i]) for i in cands}, 6, 64)
        got = sorted({0, 64, *idx[b, : count[b]].tolist()})
        assert got == expect


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(3), torch.zeros(3, dtype=torch.bool), 2), "2-D"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), 2), "bool"),
        ((torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool), 2), "shape"),
        ((torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), 0), "k: expected"),
    ],
)
def test_bad_inputs(args, match):
    with pytest.raises((TypeError, ValueError), match=match):
        segment_select(*args)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_large_batch():
    ent, cand = random_case(64, 8192, 0.05, 50, seed=5)
    ref_idx, ref_count = segment_select(ent, cand, 20, backend="torch")
    idx, count = segment_select(ent.cuda(), cand.cuda(), 20)
    assert idx.cpu().tolist() == ref_idx.tolist() and count.cpu().tolist() == ref_count.tolist()
