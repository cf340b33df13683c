"""Plain-torch references (the `naive` twins) of the ops in this package: slow, memory-hungry
and in float64 by default on purpose, so that they are obviously right. Tests compare every
fused path, outputs and gradients, against them.
"""

from __future__ import annotations

import torch

__all__ = ["logprob_entropy_naive", "logprob_naive", "segment_select_naive", "prefix_attention_naive"]


def logprob_entropy_naive(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, *,
    bias: torch.Tensor | None = None, compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for `fused_logprob_entropy` from the full [M, V] logits, in `compute_dtype`
    (differentiable through plain autograd; no checks beyond what torch itself does)."""
    z = hidden.to(compute_dtype) @ weight.to(compute_dtype).T
    if bias is not None:
        z = z + bias.to(compute_dtype)
    logp = torch.log_softmax(z / temperature, dim=-1)
    logprobs = logp.gather(-1, targets.long()[:, None])[:, 0]
    # xlogy-style guard: p = 0 contributes 0, not 0 * -inf (NaN stays NaN).
    p = logp.exp()
    entropy = -torch.where(p == 0, torch.zeros_like(p), p * logp).sum(-1)
    return logprobs, entropy


def logprob_naive(hidden, weight, targets, temperature=1.0, *, bias=None, compute_dtype=torch.float64):
    """Reference for `fused_logprob`: the log-prob half of `logprob_entropy_naive`."""
    return logprob_entropy_naive(
        hidden, weight, targets, temperature, bias=bias, compute_dtype=compute_dtype
    )[0]


def segment_select_naive(
    entropies: torch.Tensor, candidates: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for `segment_select` (SPEC §4), one Python loop per row."""
    B, n = entropies.shape
    out = torch.full((B, min(k, n)), -1, dtype=torch.int64)
    counts = torch.zeros(B, dtype=torch.int64)
    ent = entropies.detach().cpu().double()
    cand = candidates.detach().cpu().bool()
    for b in range(B):
        idx = [i for i in range(n) if cand[b, i]]
        idx.sort(key=lambda i: (-ent[b, i].item(), i))
        chosen = sorted(idx[:k])
        counts[b] = len(chosen)
        out[b, : len(chosen)] = torch.tensor(chosen, dtype=torch.int64)
    return out.to(entropies.device), counts.to(entropies.device)


def prefix_attention_naive(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, limit: torch.Tensor,
    copy_start: torch.Tensor, scale: float | None = None, *, compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Reference for `prefix_attention` in `compute_dtype`, its mask written out in Python loops."""
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
