"""The built-in trainer's advantage estimators, each with RePro's process term as SPEC §6 adds it::

    A_t = A_outcome,t + alpha * A_process,t          (0 off the response mask)

``A_outcome`` is one of (names as verl's ``adv_estimator``):

- ``grpo``: ``(R - mean_g R) / (std_g R + 1e-6)`` within each prompt's group, the same for every
  token (Shao et al., arXiv 2402.03300; `repro_fast.advantages.grpo_advantages`).
- ``reinforce_plus_plus``: REINFORCE++ (Hu et al., arXiv 2501.03262): token rewards
  ``r_t = -beta * kl_t``, plus ``R`` on the last response token; the return-to-go
  ``G_t = sum_{s >= t} gamma^(s-t) r_s``; then ``(G_t - mean) / sqrt(var + 1e-8)`` with the mean and
  the (unbiased) variance over every response token of the batch: no groups, no critic. verl's
  ``compute_reinforce_plus_plus_outcome_advantage`` with ``masked_whiten`` is the same formula.
- ``rloo``: REINFORCE leave-one-out (Ahmadian et al., arXiv 2402.14740; Kool et al. 2019):
  ``R_i - mean_{j != i in g} R_j``, the same for every token; a group of one has no baseline and
  gets 0 (as TRL's RLOO trainer; verl refuses such a group).

Pure functions of float tensors and masks; computed in float64, returned as float32 ``[N, T]``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from repro_fast.advantages import check_float_vector, grpo_advantages
from repro_fast.config import check_choice, check_group_ids, check_real
from repro_fast.rewards import scope_ids

ESTIMATORS = ("grpo", "reinforce_plus_plus", "rloo")
WHITEN_EPS = 1e-8  # REINFORCE++'s batch normalization: verl's masked_whiten and OpenRLHF use 1e-8


def _check_token_tensor(t, name: str, shape: tuple[int, int] | None) -> torch.Tensor:
    """``t`` if it is a finite 2-D tensor (of ``shape`` when given); TypeError / ValueError naming it."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2 or (shape is not None and tuple(t.shape) != shape):
        want = f"[{shape[0]}, {shape[1]}]" if shape is not None else "[N, T]"
        raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def rloo_outcome_advantages(rewards, group_ids: Sequence[Hashable] | None) -> torch.Tensor:
    """Leave-one-out advantage per trajectory, float64 ``[N]``: ``R_i`` minus the mean of the other
    rewards of its group of ``group_ids``; 0 for a group of one (None: every trajectory alone)."""
    r = check_float_vector(rewards, "rewards")
    check_group_ids(group_ids, r.numel())
    groups = torch.tensor(scope_ids("group", r.numel(), group_ids), dtype=torch.long)
    num_groups = int(groups.max()) + 1 if r.numel() else 0
    sums = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, r)
    counts = torch.bincount(groups, minlength=sums.numel()).to(torch.float64)
    k = counts[groups]
    baseline = (sums[groups] - r) / (k - 1).clamp_min(1.0)
    return torch.where(k > 1, r - baseline, torch.zeros_like(r))


def reinforce_plus_plus_advantages(rewards, response_mask: torch.Tensor, kl: torch.Tensor | None = None,
                                   kl_coef: float = 0.0, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++ advantages, float64 ``[N, T]`` (module docstring): ``rewards`` the outcome ``R`` per
    trajectory, placed on its last response token; ``kl`` ``[N, T]`` the per-token KL estimate (needed
    when ``kl_coef != 0``); ``response_mask`` ``[N, T]`` True on response tokens (a prefix of each row).
    Normalized over every response token of the batch; 0 off the mask."""
    r = check_float_vector(rewards, "rewards")
    n = r.numel()
    mask = _check_token_tensor(response_mask, "response_mask", None).to("cpu", torch.bool)
    if mask.shape[0] != n:
        raise ValueError(f"response_mask: expected [N={n}, T] rows, got shape {tuple(mask.shape)}")
    kl_coef = check_real(kl_coef, "kl_coef")
    gamma = check_real(gamma, "gamma", 0.0, 1.0)
    lengths = mask.sum(1)
    if not torch.equal(mask, torch.arange(mask.shape[1]) < lengths[:, None]):
        b = next(b for b in range(n) if not mask[b, : lengths[b]].all())
        raise ValueError(f"response_mask[{b}]: expected the response's tokens first (True, then False only)")
    token_rewards = torch.zeros(mask.shape, dtype=torch.float64)
    if kl_coef != 0:
        if kl is None:
            raise ValueError("kl: needed when kl_coef != 0")
        kl = _check_token_tensor(kl, "kl", tuple(mask.shape))
        token_rewards -= kl_coef * kl.detach().to("cpu", torch.float64)
    has = lengths > 0
    token_rewards[has.nonzero().flatten(), lengths[has] - 1] += r[has]
    token_rewards *= mask
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros(n, dtype=torch.float64)
    for t in reversed(range(mask.shape[1])):
        running = token_rewards[:, t] + gamma * running
        returns[:, t] = running
    values = returns[mask]
    if values.numel() < 2:  # no variance to normalize by: centre only
        return (returns - values.mean() if values.numel() else returns) * mask
    return (returns - values.mean()) * torch.rsqrt(values.var(unbiased=True) + WHITEN_EPS) * mask


def advantages(estimator: str, outcome_rewards, group_ids: Sequence[Hashable] | None,
               response_mask: torch.Tensor, *, alpha: float, process_advantages: torch.Tensor | None = None,
               kl: torch.Tensor | None = None, kl_coef: float = 0.0) -> torch.Tensor:
    """``A_outcome,t + alpha * process_advantages[:, t]`` (0 off ``response_mask``) as float32 ``[N, T]``
    on ``response_mask``'s device, ``A_outcome`` by ``estimator`` (one of `ESTIMATORS`); ``kl`` and
    ``kl_coef``: REINFORCE++'s KL token reward (the others ignore them: their KL is a loss term)."""
    check_choice(estimator, "estimator", ESTIMATORS)
    n = check_float_vector(outcome_rewards, "outcome_rewards").numel()
    mask = _check_token_tensor(response_mask, "response_mask", None)
    if mask.shape[0] != n:
        raise ValueError(f"response_mask: expected [N={n}, T] (a row per reward), got {tuple(mask.shape)}")
    if estimator == "grpo":
        return grpo_advantages(outcome_rewards, group_ids, process_advantages=process_advantages,
                               response_mask=mask, alpha=alpha)
    alpha = check_real(alpha, "alpha")
    if estimator == "rloo":
        outcome = rloo_outcome_advantages(outcome_rewards, group_ids)[:, None] * mask.to("cpu", torch.bool)
    else:
        outcome = reinforce_plus_plus_advantages(outcome_rewards, mask, kl, kl_coef)
    if process_advantages is not None:
        process = _check_token_tensor(process_advantages, "process_advantages", tuple(mask.shape))
        outcome = outcome + alpha * process.detach().to("cpu", torch.float64) * mask.to("cpu", torch.bool)
    return outcome.to(device=mask.device, dtype=torch.float32)
