"""What trainers call (SPEC §6-7): `process_advantages` across one or several `RePROResult`s
(normalization, placement, reward-to-go) and `grpo_advantages` (the outcome advantage plus
``alpha`` times the process term), with the checks of their arguments. The math is
`repro_fast.rewards`; `RePROScorer.score` computes its ``process_advantages`` with this same
`process_advantages`."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from repro_fast.config import (
    NORMALIZE_MODES,
    RePROConfig,
    check_choice,
    check_group_ids,
    check_int,
    check_real,
    check_sequence,
)
from repro_fast.rewards import EPS, normalize_pooled, reward_to_go_at_points, scope_ids

# The widest padded output a call may ask for: far beyond any real completion, and small enough
# that a typo (10**12) is refused before anything is allocated instead of failing inside torch.
# `RePROScorer.score` checks its ``width`` against the same bound.
MAX_WIDTH = 1 << 24


def process_advantages(
    rewards: Sequence, points: Sequence[Sequence[int]], width: int,
    group_ids: Sequence[Hashable] | None = None, normalize: str = "group", device=None,
) -> torch.Tensor:
    """SPEC §6 from raw rewards: normalize over each scope, place ``r'_j`` on token ``P_j - 1``, take
    the reward-to-go; float32 ``[N, width]`` on ``device`` (default CPU). ``rewards`` and ``points``
    may gather several `RePROResult`s: a trainer whose groups span processes calls this once."""
    check_choice(normalize, "normalize", NORMALIZE_MODES)
    width = check_int(width, "width", 0, MAX_WIDTH)
    n = len(check_sequence(rewards, "rewards"))
    check_sequence(points, "points", n)
    check_group_ids(group_ids, n)
    raw = [check_float_vector(r, f"rewards[{b}]", check_finite=False) for b, r in enumerate(rewards)]
    counts = [r.numel() for r in raw]
    pooled = torch.cat(raw) if raw else torch.zeros(0, dtype=torch.float64)
    if not torch.isfinite(pooled).all():  # one check for the batch, then find the row
        b = next(b for b, r in enumerate(raw) if not torch.isfinite(r).all())
        raise ValueError(f"rewards[{b}]: contains NaN or inf")
    pts = check_points_batch(points, counts, width)
    normalized = normalize_pooled(pooled, counts, normalize, group_ids)
    return reward_to_go_at_points(normalized, counts, pts, width).to(device or "cpu")


def check_points_batch(points: Sequence, counts: list[int], width: int) -> list[list[int]]:
    """Every trajectory's points as int lists, ``0 = P_0 < P_1 < ... <= width``, with one more point
    than rewards; checked in bulk (numpy) and then, only on failure, row by row for the message."""
    all_ints = (all(type(p) is list for p in points)
                and set(map(type, itertools.chain.from_iterable(points))) <= {int})
    pts = points if all_ints else [check_points(p, f"points[{b}]") for b, p in enumerate(points)]
    lengths = np.array([len(p) for p in pts], dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(pts), dtype=np.int64, count=int(lengths.sum()))
    firsts = np.cumsum(lengths) - lengths
    rising = np.diff(flat) > 0
    rising[(firsts[1:] - 1)[lengths[1:] > 0]] = True  # pairs across two rows are not compared
    ok = (lengths >= 1) & (lengths - 1 == np.array(counts, dtype=np.int64))
    if ok.all() and (flat[firsts] == 0).all() and rising.all() and (flat <= width).all():
        return pts
    for b, (r, p) in enumerate(zip(counts, pts)):  # the first bad row, named
        if not p or p[0] != 0 or any(x >= y for x, y in zip(p, p[1:])) or p[-1] > width:
            raise ValueError(f"points[{b}]: expected 0 = P_0 < P_1 < ... <= width = {width}, got {p}")
        if r != len(p) - 1:
            raise ValueError(f"rewards[{b}]: expected {len(p) - 1} values (one per point after P_0), got {r}")
    raise AssertionError("unreachable: the bulk check failed but no row did")


def grpo_advantages(
    outcome_rewards, group_ids: Sequence[Hashable] | None, process_advantages: torch.Tensor | None = None,
    response_mask: torch.Tensor | None = None, alpha: float = RePROConfig.alpha,
) -> torch.Tensor:
    """Per-token GRPO advantage with RePro's process term (SPEC §6): float32 ``[N, n_max]``.

    ``A = (R - mean_g R) / (std_g R + 1e-6)`` over each group of ``group_ids`` (unbiased std; 0 for
    a group of one, so every ``A`` is 0 when ``group_ids`` is None), then
    ``A_t = A + alpha * process_advantages[:, t]``, and 0 where ``response_mask`` is False.
    ``n_max`` and the device come from those two tensors (``[N, 1]`` on CPU when both are None).
    """
    rewards = check_float_vector(outcome_rewards, "outcome_rewards")
    n = rewards.numel()
    check_group_ids(group_ids, n)
    alpha = check_real(alpha, "alpha")
    outcome = outcome_advantages(rewards, group_ids)
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


def outcome_advantages(rewards: torch.Tensor, group_ids: Sequence[Hashable] | None) -> torch.Tensor:
    """SPEC §6 GRPO outcome advantage ``(R - mean_g R) / (std_g R + 1e-6)`` (unbiased std; 0 for a
    group of one)."""
    n = rewards.numel()
    groups = torch.tensor(scope_ids("group", n, group_ids), dtype=torch.long)
    outcome = torch.zeros(n, dtype=torch.float64)
    for g in groups.unique():
        members = groups == g
        if members.sum() > 1:
            r = rewards[members]
            outcome[members] = (r - r.mean()) / (r.std(unbiased=True) + EPS)
    return outcome


def check_points(x, name: str) -> list[int]:
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


def check_float_vector(x, name: str, check_finite: bool = True) -> torch.Tensor:
    """``x`` (a tensor, array or sequence of real numbers) as a 1-D float64 CPU tensor; finite unless told."""
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
