"""`repro_fast.ops.prefix_limited_attention` and `triton_prefix_attention`: prefix_attention
(torch path and Triton kernel) against the float64 reference.

The reference writes the mask out element by element; the torch path builds it vectorized and
runs SDPA; the Triton kernel never builds it. Sizes are awkward on purpose: head dims that are
not powers of two, GQA groups that do not divide the row block, copies of length 1, splits of
the cache across programs, batch rows with different limits.
"""

from __future__ import annotations

import pytest
import torch

from repro_fast.ops import prefix_attention, prefix_attention_mask, prefix_attention_naive


def make_case(B, Hq, Hkv, L, copies, span, D, dtype=torch.float32, seed=0, device="cpu"):
    """Random q/k/v and the metadata of `copies` answer copies of `span` tokens per row,
    with prefix limits drawn in [1, L] (row-dependent)."""
    g = torch.Generator().manual_seed(seed)
    C = copies * span
    q = torch.randn(B, Hq, C, D, generator=g)
    k = torch.randn(B, Hkv, L + C, D, generator=g)
    v = torch.randn(B, Hkv, L + C, D, generator=g)
    limit = torch.zeros(B, C, dtype=torch.int64)
    copy_start = torch.zeros(B, C, dtype=torch.int64)
    for b in range(B):
        prefix = torch.sort(torch.randint(1, L + 1, (copies,), generator=g)).values
        for j in range(copies):
            limit[b, j * span : (j + 1) * span] = prefix[j]
            copy_start[b, j * span : (j + 1) * span] = j * span
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(q), cast(k), cast(v), limit.to(device), copy_start.to(device)


CASES = [  # B, Hq, Hkv, L, copies, span, D
    (1, 2, 1, 5, 1, 1, 16),  # one copy of a one-token answer
    (2, 4, 2, 37, 3, 2, 24),  # GQA 2, D not a power of two
    (3, 6, 2, 70, 4, 3, 8),  # GQA 3 (rows per block not a multiple of G), tiny D
    (1, 3, 3, 130, 5, 1, 40),  # MHA, long cache -> several KV splits
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_prefix_attention_matches_float64(case, backend):
    q, k, v, limit, start = make_case(*case)
    ref = prefix_attention_naive(q, k, v, limit, start, scale=0.3)
    out = prefix_attention(q, k, v, limit, start, scale=0.3, backend=backend)
    assert out.shape == ref.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=0)


def test_long_cache_case_takes_several_splits():
    from repro_fast.ops.prefix_limited_attention import kv_splits

    splits, per_split = kv_splits(130, programs=3, block_n=16, interpret=True)
    assert splits > 1 and splits * per_split >= 130
    splits, per_split = kv_splits(8448, programs=12, block_n=64, interpret=False)
    assert splits > 1 and splits * per_split >= 8448 and per_split % 64 == 0


def test_prefix_attention_bf16_error_bound():
    """bf16: the kernel's error vs float64 stays within 2x torch-at-bf16's error (+ eps)."""
    q, k, v, limit, start = make_case(2, 4, 2, 37, 3, 2, 24, dtype=torch.bfloat16, seed=3)
    ref = prefix_attention_naive(q, k, v, limit, start)
    torch_err = (prefix_attention(q, k, v, limit, start, backend="torch").double() - ref).abs().max()
    kern_err = (prefix_attention(q, k, v, limit, start, backend="triton").double() - ref).abs().max()
    assert kern_err <= 2 * torch_err + 1e-2


def test_mask_rule_matches_reference_loops():
    _, _, _, limit, start = make_case(2, 2, 1, 9, 3, 2, 16, seed=5)
    mask = prefix_attention_mask(limit, start, 9)
    for b in range(2):
        for c in range(6):
            expect = [key < limit[b, c] for key in range(9)] + [
                start[b, c] <= j <= c for j in range(6)
            ]
            assert mask[b, c].tolist() == [bool(e) for e in expect]


def test_copies_do_not_see_each_other():
    """Perturbing copy 1's keys must leave copy 0's outputs unchanged, and vice versa for the
    cache beyond copy 0's limit."""
    q, k, v, limit, start = make_case(1, 2, 1, 20, 2, 2, 16, seed=7)
    base = prefix_attention(q, k, v, limit, start, backend="triton")
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 20 + 2 :] += 5.0  # copy 1's own keys
    v2[:, :, int(limit[0, 0]) : 20] += 5.0  # cache beyond copy 0's limit
    out = prefix_attention(q, k2, v2, limit, start, backend="triton")
    torch.testing.assert_close(out[:, :2], base[:, :2])
    assert not torch.allclose(out[:, 2:], base[:, 2:])


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.update(query=a["query"][0]), "4-D"),
        (lambda a: a.update(key=a["key"].double()), "dtype"),
        (lambda a: a.update(limit=a["limit"].float()), "limit: expected an integer"),
        (lambda a: a.update(limit=a["limit"][:, :1]), "limit: expected"),
        (lambda a: a.update(copy_start=a["copy_start"] + 100), "copy_start"),
        (lambda a: a.update(limit=a["limit"] + 1000), "limit: expected values in"),
        (lambda a: a.update(key=a["key"][:, :, :2], value=a["value"][:, :, :2]), "copy tokens"),
        (lambda a: a.update(scale=-1.0), "scale"),
    ],
)
def test_prefix_attention_bad_inputs(mutate, match):
    q, k, v, limit, start = make_case(1, 2, 1, 5, 2, 2, 16)
    args = dict(query=q, key=k, value=v, limit=limit, copy_start=start, scale=0.5)
    mutate(args)
    with pytest.raises((ValueError, TypeError), match=match):
        prefix_attention(**args)


def test_heads_must_group():
    q, k, v, limit, start = make_case(1, 4, 2, 5, 1, 1, 16)
    with pytest.raises(ValueError, match="multiple"):
        prefix_attention(q[:, :3], k, v, limit, start)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_prefix_attention_cuda_real_sizes(dtype, atol):
    # Qwen2.5-1.5B heads (12 q / 2 kv, D = 128), an 8k cache, 21 copies of a 4-token answer.
    q, k, v, limit, start = make_case(2, 12, 2, 8448, 21, 4, 128, dtype=dtype, device="cuda")
    ref = prefix_attention_naive(q, k, v, limit, start)
    out = prefix_attention(q, k, v, limit, start)
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=0)
