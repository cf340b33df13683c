"""Plain-torch references for the ops in this package (the `naive` twins).

They materialize the full `[M, V]` logits in a wide dtype (float64 by default) and use
`log_softmax` directly: slow and memory-hungry on purpose, so that they are obviously right.
Tests compare every fused path, outputs and gradients, against them.
"""

from __future__ import annotations

import torch

__all__ = ["logprob_entropy_naive", "logprob_naive", "segment_select_naive", "prefix_attention_naive"]


def logprob_entropy_naive(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for `fused_logprob_entropy`, differentiable through plain autograd.

    z = (hidden @ weight.T + bias) / temperature, computed in `compute_dtype`;
    p = softmax(z); logprobs[i] = log p[i, targets[i]]; entropy[i] = -sum_v p[i, v] log p[i, v].
    Returns tensors of `compute_dtype` (no checks beyond what torch itself does).
    """
    z = hidden.to(compute_dtype) @ weight.to(compute_dtype).T
    if bias is not None:
        z = z + bias.to(compute_dtype)
    logp = torch.log_softmax(z / temperature, dim=-1)
    logprobs = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    # xlogy-style guard: p = 0 contributes 0, not 0 * -inf (NaN stays NaN).
    p = logp.exp()
    entropy = -torch.where(p == 0, torch.zeros_like(p), p * logp).sum(-1)
    return logprobs, entropy


def logprob_naive(hidden, weight, targets, temperature=1.0, *, bias=None, compute_dtype=torch.float64):
    """Reference for `fused_logprob`: the log-prob half of `logprob_entropy_naive`."""
    z = hidden.to(compute_dtype) @ weight.to(compute_dtype).T
    if bias is not None:
        z = z + bias.to(compute_dtype)
    return torch.log_softmax(z / temperature, dim=-1).gather(-1, targets.long()[:, None])[:, 0]


def segment_select_naive(
    entropies: torch.Tensor, candidates: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for `segment_select` (SPEC §4), one Python loop per row.

    Per row b: among indices i with candidates[b, i], take the k with the largest
    entropies[b, i] (ties: smaller i first; fewer than k: all of them), return them sorted
    ascending in a `[B, min(k, n)]` int64 tensor padded with -1, plus the per-row count (int64
    `[B]`).
    """
    B, n = entropies.shape
    out = torch.full((B, min(k, n)), -1, dtype=torch.int64)
    counts = torch.zeros(B, dtype=torch.int64)
    ent = entropies.detach().cpu().double()
    cand = candidates.detach().cpu().bool()
    for b in range(B):
        idx = [i for i in range(ent.shape[1]) if cand[b, i]]
        idx.sort(key=lambda i: (-ent[b, i].item(), i))
        chosen = sorted(idx[:k])
        counts[b] = len(chosen)
        if chosen:
            out[b, : len(chosen)] = torch.tensor(chosen, dtype=torch.int64)
    return out.to(entropies.device), counts.to(entropies.device)


def prefix_attention_naive(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    limit: torch.Tensor,
    copy_start: torch.Tensor,
    scale: float | None = None,
    *,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Reference for `prefix_attention`: explicit scores, the mask written out element by
    element in Python loops (independent of the vectorized mask builder), softmax in
    `compute_dtype`. Returns ``[B, C, Hq, D]`` in `compute_dtype`."""
    B, Hq, C, D = query.shape
    Hkv = key.shape[1]
    L = key.shape[2] - C
    scale = D ** -0.5 if scale is None else scale
    allowed = torch.zeros(B, C, L + C, dtype=torch.bool)
    lim, start = limit.cpu().tolist(), copy_start.cpu().tolist()
    for b in range(B):
        for c in range(C):
            allowed[b, c, : lim[b][c]] = True
            allowed[b, c, L + start[b][c] : L + c + 1] = True
    q = query.to(compute_dtype)
    k = key.to(compute_dtype).repeat_interleave(Hq // Hkv, dim=1)
    v = value.to(compute_dtype).repeat_interleave(Hq // Hkv, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed[:, None].to(scores.device), float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2)
