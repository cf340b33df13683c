"""Per-token log-probs of responses under a model, and the GRPO (PPO-clip) loss.

The loss is TRL's GRPO formula with token-level aggregation (TRL ``loss_type="dapo"``), with a
per-token advantage (RePro makes the advantage vary along the response)::

    ratio_t   = exp(logp_t - old_t)
    surrogate = min(ratio_t * A_t, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A_t)
    kl_t      = exp(ref_t - logp_t) - (ref_t - logp_t) - 1          (k3 estimator, >= 0)
    loss      = sum_{b,t in responses} (-surrogate + beta * kl_t) / num_tokens

``num_tokens`` is the number of response tokens of the whole optimizer batch (not of one
micro-batch), so gradient accumulation over micro-batches gives exactly the full-batch gradient.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from repro_fast.ops import fused_logprob_entropy


def _right_padded(prompts, responses, pad_id: int, device):
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def sequence_logprobs(
    model,
    prompts: list[list[int]],
    responses: list[list[int]],
    temperature: float = 1.0,
    pad_id: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``[N, n_max]`` fp32 ``log softmax(z / tau)[y_t]`` of every response token (0 on padding).

    One forward of the decoder over right-padded ``[q, y]`` (positions 0, 1, ...: the layout
    RePro scores, so the values equal ``RePROResult.token_logprobs`` up to float rounding), then
    the fused LM head on only the rows that predict response tokens. Differentiable.
    """
    device = next(model.parameters()).device
    n_max = max((len(r) for r in responses), default=0)
    out = torch.zeros(len(responses), n_max, dtype=torch.float32, device=device)
    if n_max == 0:
        return out
    ids, mask = _right_padded(prompts, responses, pad_id, device)
    positions = torch.arange(ids.shape[1], device=device)[None].expand_as(ids)
    head = model.get_output_embeddings()
    plain_head = isinstance(head, torch.nn.Linear) and head.bias is None
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    with ctx:
        if plain_head:
            hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions,
                                         use_cache=False).last_hidden_state
        else:
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    rows, cols, targets, where = [], [], [], []
    for b, (p, r) in enumerate(zip(prompts, responses)):
        n = len(r)
        if n:
            rows += [b] * n
            cols += range(len(p) - 1, len(p) - 1 + n)  # position that predicts y_t
            targets += list(r)
            where += [(b, t) for t in range(n)]
    rows_t = torch.tensor(rows, device=device)
    cols_t = torch.tensor(cols, device=device)
    tgt = torch.tensor(targets, device=device)
    if plain_head:
        h = hidden[rows_t, cols_t].to(head.weight.dtype)
        lp, _ = fused_logprob_entropy(h, head.weight, tgt, temperature)
    else:
        z = logits[rows_t, cols_t].float() / temperature
        lp = torch.log_softmax(z, -1).gather(1, tgt[:, None])[:, 0]
    b_idx = torch.tensor([w[0] for w in where], device=device)
    t_idx = torch.tensor([w[1] for w in where], device=device)
    out = out.index_put((b_idx, t_idx), lp.float())
    return out


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref): ``exp(ref - logp) - (ref - logp) - 1``."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    num_tokens: int | float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip GRPO loss with token-level aggregation (see the module docstring).

    Args:
        logp, old_logp, advantages: ``[B, T]`` (``old_logp`` and ``advantages`` are constants).
        mask: ``[B, T]`` bool, True on response tokens.
        eps_low, eps_high: clip range ``[1 - eps_low, 1 + eps_high]``.
        beta: weight of the k3 KL to ``ref_logp`` (needed when beta != 0).
        num_tokens: the divisor; default ``mask.sum()`` (use the optimizer batch's count under
            gradient accumulation).

    Returns:
        ``(loss, stats)``; stats are sums over this call's tokens (``*_sum``) and its count.
    """
    mask_f = mask.to(logp.dtype)
    if num_tokens is None:
        num_tokens = mask_f.sum().clamp_min(1.0)
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.detach()
    surr1 = ratio * adv
    surr2 = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -torch.min(surr1, surr2)
    kl = None
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("ref_logp: needed when beta != 0")
        kl = k3_kl(logp, ref_logp.detach())
        per_token = per_token + beta * kl
    loss = (per_token * mask_f).sum() / num_tokens
    with torch.no_grad():
        clipped = ((ratio < 1.0 - eps_low) & (adv < 0)) | ((ratio > 1.0 + eps_high) & (adv > 0))
        stats = {
            "tokens": float(mask_f.sum()),
            "clip_sum": float((clipped.float() * mask_f).sum()),
            "kl_sum": float((kl * mask_f).sum()) if kl is not None else 0.0,
            "ratio_sum": float((ratio * mask_f).sum()),
        }
    return loss, stats
