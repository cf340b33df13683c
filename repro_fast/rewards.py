"""SPEC §4-6 on tensors: selection, scores, rewards, normalization and advantages.

Shared by every backend, so backends can only differ in how they compute ``J`` and the
token statistics. Scores are computed in float64 from whatever precision ``J`` came in.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch

from repro_fast.config import RePROConfig

EPS = 1e-6


def select_points(entropies: np.ndarray, candidates: np.ndarray, k: int, think_end: int) -> list[int]:
    """SPEC §4: ``P = sorted(unique({0} ∪ top-k candidates by entropy ∪ {F}))``.

    Ties in entropy go to the smaller index: a stable sort of the (ascending) candidates by
    descending entropy keeps the smaller index first among equals.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) > k:
        order = np.argsort(-np.asarray(entropies, dtype=np.float64)[candidates], kind="stable")
        candidates = candidates[order[:k]]
    return sorted({0, think_end, *candidates.tolist()})


def kendall_tau_a_prefixes(values: torch.Tensor) -> torch.Tensor:
    """``tau_j`` for j = 1..m: Kendall tau-a between (0..j) and (-e_0..-e_j).

    ``tau_j = sum_{a<b<=j} sign(e_a - e_b) / (j(j+1)/2)``; all prefixes at once in O(m^2).
    """
    m = values.numel() - 1
    if m < 1:
        return values.new_zeros(0)
    signs = torch.sign(values[:, None] - values[None, :])  # [a, b] = sign(e_a - e_b)
    upper = torch.triu(signs, diagonal=1)  # keep a < b
    per_b = upper.sum(dim=0)  # column b: sum over a < b
    cumulative = per_b.cumsum(0)[1:]  # pairs with b <= j, for j = 1..m
    j = torch.arange(1, m + 1, dtype=values.dtype, device=values.device)
    return cumulative / (j * (j + 1) / 2)


def segment_scores(nll: torch.Tensor, config: RePROConfig) -> dict[str, torch.Tensor]:
    """SPEC §5 for one trajectory: ``nll`` = [NLL_0, ..., NLL_m] -> magnitude, stability,
    score and reward per segment (m values each), all float64."""
    nll = nll.to(torch.float64)
    m = nll.numel() - 1
    s_magn = 1.0 - torch.tanh(nll[1:] / (nll[0] + EPS))
    ema = torch.empty_like(nll)
    d = config.ema_decay
    ema[0] = nll[0]
    for j in range(1, m + 1):  # m <= k + 1: a Python loop is cheaper than a scan here
        ema[j] = d * ema[j - 1] + (1.0 - d) * nll[j]
    tau = kendall_tau_a_prefixes(ema)
    if config.stability_form == "paper":
        s_stab = (1.0 + tau) / 2.0
    else:  # the authors' code: -tau + 1/2
        s_stab = 0.5 - tau
    w = config.stability_weight
    score = (1.0 - w) * s_magn + w * s_stab
    rewards = score.clone()
    rewards[1:] = score[1:] - score[:-1]
    return {"s_magn": s_magn, "s_stab": s_stab, "score": score, "rewards": rewards}


def scope_ids(
    normalize: str, n: int, group_ids: Sequence[Hashable] | None
) -> list[int] | None:
    """Dense scope index per trajectory for normalization, or ``None`` for no normalization."""
    if normalize == "none":
        return None
    if normalize == "batch":
        return [0] * n
    return _dense_groups(group_ids, n)


def _dense_groups(group_ids: Sequence[Hashable] | None, n: int) -> list[int]:
    if group_ids is None:
        return list(range(n))  # every trajectory is its own group
    index: dict[Hashable, int] = {}
    return [index.setdefault(g, len(index)) for g in group_ids]


def normalize_rewards(
    rewards: list[torch.Tensor], normalize: str, group_ids: Sequence[Hashable] | None
) -> list[torch.Tensor]:
    """SPEC §6: ``r' = (r - mu) / (sigma + 1e-6)`` over all placed rewards of a scope
    (population std)."""
    scopes = scope_ids(normalize, len(rewards), group_ids)
    if scopes is None:
        return [r.clone() for r in rewards]
    out = [r.clone() for r in rewards]
    for scope in set(scopes):
        members = [b for b, s in enumerate(scopes) if s == scope and rewards[b].numel()]
        if not members:
            continue
        pooled = torch.cat([rewards[b] for b in members])
        mu = pooled.mean()
        sigma = pooled.var(unbiased=False).sqrt()
        for b in members:
            out[b] = (rewards[b] - mu) / (sigma + EPS)
    return out


def place(values: list[torch.Tensor], points: list[list[int]], n_max: int) -> torch.Tensor:
    """Put value j of trajectory b on response token ``P_j - 1`` of a ``[N, n_max]`` tensor."""
    out = torch.zeros(len(values), n_max, dtype=torch.float64)
    for b, (v, p) in enumerate(zip(values, points)):
        if v.numel():
            out[b, torch.tensor(p[1:], dtype=torch.long) - 1] = v.to(torch.float64)
    return out


def reward_to_go(token_values: torch.Tensor) -> torch.Tensor:
    """``A_t = sum_{s >= t} x_s`` along the last dimension."""
    return token_values.flip(-1).cumsum(-1).flip(-1)


def _as_float_vector(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu", torch.float64)
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a sequence of numbers") from None
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of N numbers, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def grpo_advantages(
    outcome_rewards,
    group_ids: Sequence[Hashable] | None,
    process_advantages: torch.Tensor | None = None,
    response_mask: torch.Tensor | None = None,
    alpha: float = 0.1,
) -> torch.Tensor:
    """Per-token GRPO advantage with RePro's process term (SPEC §6).

    ``A = (R - mean_g R) / (std_g R + 1e-6)`` with the unbiased std over the group (0 for a group
    of one), then ``A_t = A + alpha * process_advantages[:, t]``.

    Args:
        outcome_rewards: ``[N]`` outcome rewards ``R``.
        group_ids: ``N`` hashables (same id = same prompt), or ``None`` (every trajectory alone,
            so every outcome advantage is 0).
        process_advantages: ``[N, n_max]`` (``RePROResult.process_advantages``) or ``None``.
        response_mask: ``[N, n_max]`` bool; where given, padding positions are set to 0.
        alpha: weight of the process advantage.

    Returns:
        float32 ``[N, n_max]`` (``n_max`` from ``process_advantages`` or ``response_mask``;
        ``[N, 1]`` when neither is given), on the device of ``process_advantages`` /
        ``response_mask``.
    """
    rewards = _as_float_vector(outcome_rewards, "outcome_rewards")
    n = rewards.numel()
    if group_ids is not None and len(group_ids) != n:
        raise ValueError(f"group_ids: expected {n} ids (one per outcome reward), got {len(group_ids)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha):
        raise TypeError(f"alpha: expected a finite number, got {alpha!r}")
    groups = torch.tensor(_dense_groups(group_ids, n), dtype=torch.long)
    outcome = torch.zeros(n, dtype=torch.float64)
    for g in groups.unique():
        members = groups == g
        if members.sum() < 2:
            continue
        r = rewards[members]
        outcome[members] = (r - r.mean()) / (r.std(unbiased=True) + EPS)

    device = None
    width = 1
    for name, t in (("process_advantages", process_advantages), ("response_mask", response_mask)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != n:
            raise ValueError(f"{name}: expected a [N={n}, n_max] tensor, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if device is not None and t.shape[1] != width:
            raise ValueError(f"{name}: n_max {t.shape[1]} does not match the other tensor's {width}")
        device, width = t.device, t.shape[1]
    advantages = outcome[:, None].expand(n, width).clone()
    if process_advantages is not None:
        advantages = advantages + alpha * process_advantages.detach().to("cpu", torch.float64)
    if response_mask is not None:
        advantages = advantages * response_mask.detach().to("cpu", torch.bool)
    return advantages.to(device=device or "cpu", dtype=torch.float32)
