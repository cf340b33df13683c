"""Top-k segment starts by entropy (SPEC §4) for a whole batch, on the device: the package's one
implementation of SPEC §4's top-k, used by both scorer backends. Triton kernel on CUDA (one
launch for the batch), a stable sort in torch on CPU; reference in `naive.py`.
"""

from __future__ import annotations

import torch

from repro_fast.dispatch import resolve_kernels, triton_interpret

__all__ = ["segment_select", "segment_select_torch"]


def _validate(entropies, candidates, k):
    if not isinstance(entropies, torch.Tensor) or not entropies.is_floating_point() or entropies.dim() != 2:
        got = tuple(entropies.shape) if isinstance(entropies, torch.Tensor) else type(entropies).__name__
        raise TypeError(f"entropies: expected a 2-D float tensor [B, n], got {got}")
    if not isinstance(candidates, torch.Tensor) or candidates.dtype != torch.bool:
        got = candidates.dtype if isinstance(candidates, torch.Tensor) else type(candidates).__name__
        raise TypeError(f"candidates: expected a bool tensor [B, n], got {got}")
    if candidates.shape != entropies.shape:
        raise ValueError(f"candidates: expected the shape of entropies {tuple(entropies.shape)}, "
                         f"got {tuple(candidates.shape)}")
    if candidates.device != entropies.device:
        raise ValueError(f"candidates: expected the device of entropies ({entropies.device}), "
                         f"got {candidates.device}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")


def _ascending(picked: torch.Tensor) -> torch.Tensor:
    """Sort each row's picks ascending, the -1 padding last."""
    big = torch.iinfo(torch.int64).max
    ordered = torch.sort(torch.where(picked < 0, big, picked), dim=1).values
    return ordered.masked_fill_(ordered == big, -1)


def segment_select_torch(entropies, candidates, k):
    """Stable sort by descending entropy: equal entropies keep ascending index order."""
    k = min(k, entropies.shape[1])
    key = torch.where(candidates, entropies.float(), float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :k]
    counts = candidates.sum(1).clamp(max=k)
    valid = torch.arange(k, device=order.device)[None] < counts[:, None]
    return _ascending(torch.where(valid, order, -1)), counts.to(torch.int64)


def _segment_select_triton(entropies, candidates, k):
    from repro_fast.ops.triton_segment_select import _segment_select_kernel

    B, n = entropies.shape
    k = min(k, n)
    picked = torch.empty(B, k, dtype=torch.int64, device=entropies.device)
    counts = torch.empty(B, dtype=torch.int64, device=entropies.device)
    if B == 0 or k == 0:
        return picked, counts.zero_()
    entropies = entropies.contiguous()
    cand = candidates.contiguous().view(torch.uint8)
    block = 16 if triton_interpret() else 1024
    _segment_select_kernel[(B,)](
        entropies, cand, picked, counts, entropies.stride(0), cand.stride(0), picked.stride(0),
        n, k, BLOCK_N=block,
    )
    return _ascending(picked), counts


def segment_select(entropies, candidates, k, *, backend=None):
    """Per row of ``entropies [B, n]``, the ``k`` positions where ``candidates [B, n]`` (bool) is
    True with the largest entropy, ties to the smaller index (fewer than k candidates: all).

    Returns ``(starts [B, min(k, n)] int64, counts [B] int64)``: starts ascending, padded with -1
    (no row has more candidates than positions, so a huge ``k`` costs nothing). ``backend`` as
    for `fused_logprob_entropy`.
    """
    _validate(entropies, candidates, k)
    # The kernel makes k passes over the row: past a few dozen picks a sort is cheaper.
    if resolve_kernels(backend, entropies.device, "backend") == "triton" and min(k, entropies.shape[1]) <= 64:
        return _segment_select_triton(entropies, candidates, k)
    return segment_select_torch(entropies, candidates, k)
