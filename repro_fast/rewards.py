"""SPEC §5-6 as pure tensor math: segment scores and rewards of one trajectory, normalization over
scopes, placement on tokens, reward-to-go. Shared by both backends (they differ only in how they
compute ``J`` and the token statistics); float64 whatever precision ``J`` came in. No argument
checks here: the callers (`repro_fast.scorer`, `repro_fast.advantages`) pass validated data."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from repro_fast.config import RePROConfig

EPS = 1e-6


def nll_ema(nll: torch.Tensor, decay: float) -> torch.Tensor:
    """SPEC §5 EMA: ``e_0 = NLL_0``, ``e_j = d e_{j-1} + (1 - d) NLL_j``."""
    ema = torch.empty_like(nll)
    ema[0] = nll[0]
    for j in range(1, nll.numel()):  # m <= k + 1: a Python loop is cheaper than a scan here
        ema[j] = decay * ema[j - 1] + (1.0 - decay) * nll[j]
    return ema


def kendall_tau_prefixes(ema: torch.Tensor) -> torch.Tensor:
    """SPEC §5 ``tau_j`` (j = 1..m), Kendall tau-a between ``(0..j)`` and ``(-e_0..-e_j)``, of every prefix.

    ``tau_j = sum_{a<b<=j} sign(e_a - e_b) / (j(j+1)/2)``, all at once in O(m^2)."""
    m = ema.numel() - 1
    signs = torch.triu(torch.sign(ema[:, None] - ema[None, :]), diagonal=1)  # [a, b], a < b
    j = torch.arange(1, m + 1, dtype=torch.float64, device=ema.device)
    return signs.sum(0).cumsum(0)[1:] / (j * (j + 1) / 2)


def segment_scores(nll: torch.Tensor, config: RePROConfig) -> dict[str, torch.Tensor]:
    """SPEC §5 for one trajectory: ``nll`` = [NLL_0, ..., NLL_m] -> magnitude, stability,
    score and reward per segment (m values each), all float64."""
    nll = nll.to(torch.float64)
    s_magn = 1.0 - torch.tanh(nll[1:] / (nll[0] + EPS))
    tau = kendall_tau_prefixes(nll_ema(nll, config.ema_decay))
    # The authors' code: Kendall tau of (0..j) vs the EMA itself, negated, + 1/2 (SPEC §8).
    s_stab = (1.0 + tau) / 2.0 if config.stability_form == "paper" else tau + 0.5
    w = config.stability_weight
    score = (1.0 - w) * s_magn + w * s_stab
    rewards = torch.diff(score, prepend=score.new_zeros(1))  # r_1 = S_1, r_j = S_j - S_{j-1}
    return {"s_magn": s_magn, "s_stab": s_stab, "score": score, "rewards": rewards}


def scope_ids(normalize: str, n: int, group_ids: Sequence[Hashable] | None) -> list[int] | None:
    """SPEC §6: dense scope index per trajectory, or ``None`` for no normalization."""
    if normalize == "none":
        return None
    if normalize == "batch":
        return [0] * n
    if group_ids is None:
        return list(range(n))  # every trajectory is its own group
    index: dict[Hashable, int] = {}
    return [index.setdefault(g, len(index)) for g in group_ids]


def normalize_rewards(
    rewards: list[torch.Tensor], normalize: str, group_ids: Sequence[Hashable] | None
) -> list[torch.Tensor]:
    """SPEC §6: ``r' = (r - mu) / (sigma + 1e-6)`` over all placed rewards of a scope
    (population std), one tensor per trajectory."""
    if not rewards:
        return []
    counts = [r.numel() for r in rewards]
    pooled = torch.cat(rewards).to(torch.float64)
    return list(normalize_pooled(pooled, counts, normalize, group_ids).split(counts))


def normalize_pooled(pooled: torch.Tensor, counts: list[int], normalize: str,
                     group_ids: Sequence[Hashable] | None) -> torch.Tensor:
    """`normalize_rewards` on the rewards of every trajectory back to back (``counts[b]`` each):
    one pass of scatter-adds, O(total rewards), float64."""
    scopes = scope_ids(normalize, len(counts), group_ids)
    if scopes is None or not counts:  # "none"
        return pooled.clone()
    scope_of = torch.repeat_interleave(torch.tensor(scopes, dtype=torch.long), torch.tensor(counts))
    n_scopes = max(scopes) + 1
    size = torch.zeros(n_scopes, dtype=torch.float64).index_add_(0, scope_of, torch.ones_like(pooled))
    size = size.clamp_min(1.0)  # a scope without rewards has nothing to normalize
    mean = torch.zeros(n_scopes, dtype=torch.float64).index_add_(0, scope_of, pooled) / size
    centered = pooled - mean[scope_of]  # two passes, as torch.var does: no cancellation
    var = torch.zeros(n_scopes, dtype=torch.float64).index_add_(0, scope_of, centered * centered) / size
    return centered / (var.sqrt()[scope_of] + EPS)


def place(values: list[torch.Tensor], points: list[list[int]], n_max: int) -> torch.Tensor:
    """SPEC §5 placement: value j of trajectory b on response token ``P_j - 1``, float64 ``[N, n_max]``."""
    out = torch.zeros(len(values), n_max, dtype=torch.float64)
    counts = [v.numel() for v in values]
    if sum(counts):
        rows = np.repeat(np.arange(len(values)), counts)
        cols = np.concatenate([np.asarray(p[1:], dtype=np.int64) for p in points]) - 1
        out[torch.from_numpy(rows), torch.from_numpy(cols)] = torch.cat(values).to(torch.float64)
    return out


def reward_to_go_at_points(values: torch.Tensor, counts: list[int], points: list[list[int]],
                           width: int) -> torch.Tensor:
    """SPEC §6 process advantage, float32 ``[N, width]``, from the normalized rewards of every
    trajectory back to back (``counts[b] = m_b``): ``A_t`` is constant on each chunk
    ``[P_{j-1}, P_j)`` (the sum of ``r'_j, ..., r'_m``) and 0 from ``P_m`` on. The suffix sums
    are taken in float64 over the m values of each row; then one `repeat_interleave` writes the
    whole output row by row (each row: its chunks, then a zero run to ``width``), instead of a
    cumsum over ``[N, width]``."""
    n = len(counts)
    if not values.numel():
        return torch.zeros(n, width, dtype=torch.float32)
    m = np.asarray(counts, dtype=np.int64)
    lengths = m + 1  # points per row
    flat_points = np.fromiter(itertools.chain.from_iterable(points), dtype=np.int64, count=int(lengths.sum()))
    # Suffix sums within each row: a reverse cumsum of the whole batch minus what follows the row.
    values = values.to(torch.float64)
    suffix = values.flip(0).cumsum(0).flip(0)
    after_row = torch.cat([suffix, suffix.new_zeros(1)])[torch.from_numpy(np.cumsum(m))]
    suffix = suffix - torch.repeat_interleave(after_row, torch.from_numpy(m))
    # Chunk lengths P_j - P_{j-1}: consecutive points of one row (pairs across rows dropped).
    steps = np.diff(flat_points)
    first_point = np.cumsum(lengths) - lengths
    steps = np.delete(steps, first_point[1:] - 1)
    last_point = flat_points[first_point + m]  # P_m of each row
    # Row b's runs sit at [first_run[b], first_run[b] + m_b]: its m chunks, then the zero run.
    row = np.repeat(np.arange(n), m)
    chunk_slots = np.arange(len(row)) + row
    zero_slots = np.cumsum(m) + np.arange(n)
    run_values = torch.zeros(len(row) + n, dtype=torch.float32)
    run_values[torch.from_numpy(chunk_slots)] = suffix.to(torch.float32)
    run_lengths = np.empty(len(row) + n, dtype=np.int64)
    run_lengths[chunk_slots] = steps
    run_lengths[zero_slots] = width - last_point
    return torch.repeat_interleave(run_values, torch.from_numpy(run_lengths)).view(n, width)
