"""Per-token log-probs of responses, and the GRPO (PPO-clip) loss: TRL's formula with token-level
aggregation (``loss_type="dapo"``) and a per-token advantage (RePro varies it along the response)::

    ratio_t   = exp(logp_t - old_t)
    surrogate = min(ratio_t * A_t, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A_t)
    kl_t      = exp(ref_t - logp_t) - (ref_t - logp_t) - 1          (k3 estimator, >= 0)
    loss      = sum_{b,t in responses} (-surrogate + beta * kl_t) / num_tokens

``num_tokens`` counts the whole optimizer batch (not one micro-batch), so gradient accumulation
gives exactly the full-batch gradient.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from repro_fast.batching import padded
from repro_fast.dispatch import resolve_kernels
from repro_fast.model import ModelAdapter


def sequence_logprobs(model, prompts: list[list[int]], responses: list[list[int]], temperature: float = 1.0,
                      autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``[N, n_max]`` fp32 ``log softmax(z / tau)[y_t]`` of every response token (0 on padding),
    differentiable. The scorer's own `ModelAdapter.response_pass` (unpadded, so no pad id), so the
    values equal ``RePROResult.token_logprobs`` and the PPO ratio is 1 before the first update."""
    head = model.get_output_embeddings()
    adapter = ModelAdapter(model, temperature, resolve_kernels(None, head.weight.device))
    prompts = [np.asarray(p, dtype=np.int64) for p in prompts]
    responses = [np.asarray(r, dtype=np.int64) for r in responses]
    lengths = [len(r) for r in responses]
    if not responses or max(lengths) == 0:
        return torch.zeros(len(responses), max(lengths, default=0), device=adapter.device)
    ctx = nullcontext() if autocast_dtype is None else torch.autocast(adapter.device.type, autocast_dtype)
    with ctx:
        lp = adapter.response_pass(prompts, responses, with_entropy=False).logprobs
    return padded(lp.float(), lengths, max(lengths))


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref): ``exp(ref - logp) - (ref - logp) - 1``."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              eps_low: float = 0.2, eps_high: float = 0.28, beta: float = 0.0,
              ref_logp: torch.Tensor | None = None,
              num_tokens: int | float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip GRPO loss (module docstring) over ``[B, T]`` tensors, ``mask`` True on response tokens;
    ``old_logp``, ``advantages`` and ``ref_logp`` (needed when beta != 0) are constants. ``num_tokens``
    defaults to ``mask.sum()``. Returns ``(loss, stats)``: sums over this call's tokens and their count."""
    mask_f = mask.to(logp.dtype)
    if num_tokens is None:
        num_tokens = mask_f.sum().clamp_min(1.0)
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.detach()
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv)
    kl = None
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("ref_logp: needed when beta != 0")
        kl = k3_kl(logp, ref_logp.detach())
        per_token = per_token + beta * kl
    loss = (per_token * mask_f).sum() / num_tokens
    with torch.no_grad():
        clipped = ((ratio < 1.0 - eps_low) & (adv < 0)) | ((ratio > 1.0 + eps_high) & (adv > 0))
        stats = {"tokens": float(mask_f.sum()), "clip_sum": float((clipped.float() * mask_f).sum()),
                 "kl_sum": float((kl * mask_f).sum()) if kl is not None else 0.0,
                 "ratio_sum": float((ratio * mask_f).sum())}
    return loss, stats
