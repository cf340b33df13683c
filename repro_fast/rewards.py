"""SPEC §4-6 on tensors: selection, scores, rewards, normalization and advantages. Shared by
every backend (they differ only in how they compute ``J`` and the token statistics); scores are
float64 whatever precision ``J`` came in."""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from repro_fast import ops
from repro_fast.backends.common import padded
from repro_fast.config import (NORMALIZE_MODES, RePROConfig, check_choice, check_int, check_real,
                               check_sequence)
from repro_fast.segments import Plan

EPS = 1e-6


def select_points(
    entropies: torch.Tensor, lengths: list[int], plans: list[Plan], k: int, kernels: str
) -> torch.Tensor:
    """SPEC §4: ``P = [0, top-k candidates by entropy (ascending), F]`` of some trajectories.

    ``entropies``: their response entropies back to back (``lengths[b]`` each). Returns their
    points back to back (``plans[b].num_points(k)`` each, sorted, distinct), int64 on the same
    device: one `ops.segment_select` launch and one gather, no host sync.
    """
    device, B = entropies.device, len(plans)
    n_max = max(max(lengths, default=0), 1)
    candidates = np.zeros((B, n_max), dtype=bool)
    for b, plan in enumerate(plans):
        candidates[b, plan.candidates] = True
    starts, _ = ops.segment_select(
        padded(entropies, lengths, n_max), torch.from_numpy(candidates).to(device), k, backend=kernels
    )
    width = starts.shape[1]
    source = torch.cat([torch.tensor([0] + [p.think_end for p in plans], device=device), starts.reshape(-1)])
    index = []
    for b, plan in enumerate(plans):
        chosen = 1 + B + b * width + np.arange(min(k, len(plan.candidates)))
        index += [0, *chosen.tolist()] + ([1 + b] if plan.think_end > 0 else [])
    return source[torch.tensor(index, dtype=torch.long, device=device)]


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
    # Kendall tau-a of every prefix at once, in O(m^2): tau_j = sum_{a<b<=j} sign(e_a - e_b) / (j(j+1)/2).
    signs = torch.triu(torch.sign(ema[:, None] - ema[None, :]), diagonal=1)  # [a, b], a < b
    j = torch.arange(1, m + 1, dtype=torch.float64, device=nll.device)
    tau = signs.sum(0).cumsum(0)[1:] / (j * (j + 1) / 2)
    # The authors' code: Kendall tau of (0..j) vs the EMA itself, negated, + 1/2 (SPEC §8).
    s_stab = (1.0 + tau) / 2.0 if config.stability_form == "paper" else tau + 0.5
    w = config.stability_weight
    score = (1.0 - w) * s_magn + w * s_stab
    rewards = torch.diff(score, prepend=score.new_zeros(1))  # r_1 = S_1, r_j = S_j - S_{j-1}
    return {"s_magn": s_magn, "s_stab": s_stab, "score": score, "rewards": rewards}


def check_group_ids(group_ids, n: int) -> None:
    """``None`` or ``n`` hashable ids."""
    if group_ids is None:
        return
    for b, g in enumerate(check_sequence(group_ids, "group_ids", n)):
        try:
            hash(g)
        except TypeError:
            raise TypeError(f"group_ids[{b}]: expected a hashable id, got {g!r}") from None


def scope_ids(normalize: str, n: int, group_ids: Sequence[Hashable] | None) -> list[int] | None:
    """Dense scope index per trajectory (SPEC §6), or ``None`` for no normalization."""
    if normalize == "none":
        return None
    if normalize == "batch":
        return [0] * n
    if group_ids is None:
        return list(range(n))  # every trajectory is its own group
    index: dict[Hashable, int] = {}
    return [index.setdefault(g, len(index)) for g in group_ids]


def process_advantages(
    rewards: Sequence, points: Sequence[Sequence[int]], width: int,
    group_ids: Sequence[Hashable] | None = None, normalize: str = "group", device=None,
) -> torch.Tensor:
    """SPEC §6 from raw rewards: normalize over each scope, place ``r'_j`` on token ``P_j - 1``, take
    the reward-to-go; float32 ``[N, width]`` on ``device`` (default CPU). ``rewards`` and ``points``
    may gather several `RePROResult`s: a trainer whose groups span processes calls this once."""
    check_choice(normalize, "normalize", NORMALIZE_MODES)
    width = check_int(width, "width", 0)
    n = len(check_sequence(rewards, "rewards"))
    check_sequence(points, "points", n)
    check_group_ids(group_ids, n)
    raw = [_as_float_vector(r, f"rewards[{b}]", check_finite=False) for b, r in enumerate(rewards)]
    if raw and not torch.isfinite(torch.cat(raw)).all():  # one check for the batch, then find the row
        b = next(b for b, r in enumerate(raw) if not torch.isfinite(r).all())
        raise ValueError(f"rewards[{b}]: contains NaN or inf")
    pts = [_as_points(p, f"points[{b}]") for b, p in enumerate(points)]
    for b, (r, p) in enumerate(zip(raw, pts)):
        if not p or p[0] != 0 or any(x >= y for x, y in zip(p, p[1:])) or p[-1] > width:
            raise ValueError(f"points[{b}]: expected 0 = P_0 < P_1 < ... <= width = {width}, got {p}")
        if r.numel() != len(p) - 1:
            raise ValueError(f"rewards[{b}]: expected {len(p) - 1} values (one per point after P_0), "
                             f"got {r.numel()}")
    placed = place(normalize_rewards(raw, normalize, group_ids), pts, width)
    to_go = placed.flip(-1).cumsum(-1).flip(-1)  # A_t = sum over s >= t
    return to_go.to(device=device or "cpu", dtype=torch.float32)


def normalize_rewards(
    rewards: list[torch.Tensor], normalize: str, group_ids: Sequence[Hashable] | None
) -> list[torch.Tensor]:
    """SPEC §6: ``r' = (r - mu) / (sigma + 1e-6)`` over all placed rewards of a scope
    (population std). One pass of scatter-adds over the pooled rewards: O(total rewards)."""
    scopes = scope_ids(normalize, len(rewards), group_ids)
    if scopes is None or not rewards:  # "none"
        return [r.clone() for r in rewards]
    counts = [r.numel() for r in rewards]
    pooled = torch.cat(rewards).to(torch.float64)
    scope_of = torch.repeat_interleave(torch.tensor(scopes, dtype=torch.long), torch.tensor(counts))
    n_scopes = max(scopes) + 1
    size = torch.zeros(n_scopes, dtype=torch.float64).index_add_(0, scope_of, torch.ones_like(pooled))
    size = size.clamp_min(1.0)  # a scope without rewards has nothing to normalize
    mean = torch.zeros(n_scopes, dtype=torch.float64).index_add_(0, scope_of, pooled) / size
    centered = pooled - mean[scope_of]  # two passes, as torch.var does: no cancellation
    var = torch.zeros(n_scopes, dtype=torch.float64).index_add_(0, scope_of, centered * centered) / size
    return list((centered / (var.sqrt()[scope_of] + EPS)).split(counts))


def place(values: list[torch.Tensor], points: list[list[int]], n_max: int) -> torch.Tensor:
    """Put value j of trajectory b on response token ``P_j - 1`` of a ``[N, n_max]`` tensor."""
    out = torch.zeros(len(values), n_max, dtype=torch.float64)
    counts = [v.numel() for v in values]
    if sum(counts):
        rows = np.repeat(np.arange(len(values)), counts)
        cols = np.concatenate([np.asarray(p[1:], dtype=np.int64) for p in points]) - 1
        out[torch.from_numpy(rows), torch.from_numpy(cols)] = torch.cat(values).to(torch.float64)
    return out


def _as_points(x, name: str) -> list[int]:
    """Scored prefix lengths as Python ints; floats, bools and strings are refused, never truncated."""
    if type(x) is list and all(type(v) is int for v in x):  # the common case, checked cheaply
        return x
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer prefix lengths, got a {x.dtype} tensor")
        x = x.detach().cpu().tolist()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer prefix lengths, got a {x.dtype} array")
        x = x.tolist()
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise TypeError(f"{name}: expected a list of integer prefix lengths, got {type(x).__name__}")
    for j, v in enumerate(x):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}[{j}]: expected an int prefix length, got {type(v).__name__} {v!r}")
    return [int(v) for v in x]


def _as_float_vector(x, name: str, check_finite: bool = True) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        plain = x.dtype == torch.float64 and x.device.type == "cpu" and not x.requires_grad
        t = x if plain else x.detach().to("cpu", torch.float64)  # per-row calls add up at N = 65536
    else:
        if isinstance(x, (str, bytes)) or not isinstance(x, (Sequence, np.ndarray)):
            raise TypeError(f"{name}: expected a sequence of numbers, got {type(x).__name__}")
        for i, v in enumerate(x):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name}[{i}]: expected a real number, got {v!r}")
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {tuple(t.shape)}")
    if check_finite and not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def grpo_advantages(
    outcome_rewards, group_ids: Sequence[Hashable] | None, process_advantages: torch.Tensor | None = None,
    response_mask: torch.Tensor | None = None, alpha: float = 0.1,
) -> torch.Tensor:
    """Per-token GRPO advantage with RePro's process term (SPEC §6): float32 ``[N, n_max]``.

    ``A = (R - mean_g R) / (std_g R + 1e-6)`` over each group of ``group_ids`` (unbiased std; 0 for
    a group of one, so every ``A`` is 0 when ``group_ids`` is None), then
    ``A_t = A + alpha * process_advantages[:, t]``, and 0 where ``response_mask`` is False.
    ``n_max`` and the device come from those two tensors (``[N, 1]`` on CPU when both are None).
    """
    rewards = _as_float_vector(outcome_rewards, "outcome_rewards")
    n = rewards.numel()
    check_group_ids(group_ids, n)
    alpha = check_real(alpha, "alpha")
    groups = torch.tensor(scope_ids("group", n, group_ids), dtype=torch.long)
    outcome = torch.zeros(n, dtype=torch.float64)
    for g in groups.unique():
        members = groups == g
        if members.sum() > 1:
            r = rewards[members]
            outcome[members] = (r - r.mean()) / (r.std(unbiased=True) + EPS)
    device, width = None, 1
    for name, t in (("process_advantages", process_advantages), ("response_mask", response_mask)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != n:
            raise ValueError(f"{name}: expected a [N={n}, n_max] tensor, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if device is not None and t.shape[1] != width:
            raise ValueError(f"{name}: n_max {t.shape[1]} does not match the other tensor's {width}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{name}: contains NaN or inf")
        device, width = t.device, t.shape[1]
    advantages = outcome[:, None].expand(n, width).clone()
    if process_advantages is not None:
        advantages = advantages + alpha * process_advantages.detach().to("cpu", torch.float64)
    if response_mask is not None:
        advantages = advantages * response_mask.detach().to("cpu", torch.bool)
    return advantages.to(device=device or "cpu", dtype=torch.float32)
