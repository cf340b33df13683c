"""`repro_fast.grpo.estimators` against float64 references written from the papers (plain Python loops,
no code shared with the module), on random inputs with groups of 1, 2 and 8, each with RePro's
``alpha * A_process`` added (SPEC §6). verl's own estimators on the same inputs: tests/integrations/
test_verl.py (they need .venv-verl). TRL's RLOO advantage is written inline in its trainer's
``_generate_and_score_completions``, not a function one can call, so verl is the peer here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repro_fast.grpo.estimators import (
    ESTIMATORS,
    advantages,
    reinforce_plus_plus_advantages,
    rloo_outcome_advantages,
)

GROUP_SIZES = [1, 2, 8]


def random_batch(group_size: int, seed: int = 0, groups: int = 3, width: int = 12):
    """Rewards in {0, 1} plus noise, group ids, prefix masks of random lengths (one of length 1 when
    possible), per-token KL estimates and process advantages."""
    g = torch.Generator().manual_seed(seed * 100 + group_size)
    n = groups * group_size
    rewards = (torch.rand(n, generator=g) < 0.5).double() + 0.1 * torch.rand(n, generator=g).double()
    group_ids = [f"p{b // group_size}" for b in range(n)]
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    lengths[0] = 1
    mask = torch.arange(width) < lengths[:, None]
    kl = torch.randn(n, width, generator=g, dtype=torch.float64).abs() * 0.05
    process = torch.randn(n, width, generator=g, dtype=torch.float64) * mask
    return rewards, group_ids, mask, kl, process


# --- float64 references, from the papers ---------------------------------------------------------


def rloo_reference(rewards, group_ids) -> list[float]:
    """Ahmadian et al. 2024, eq. (RLOO): A_i = R_i - 1/(k-1) sum_{j != i} R_j over the k samples of a
    prompt; a prompt with one sample has no baseline: 0."""
    r = [float(x) for x in rewards]
    out = []
    for i, gi in enumerate(group_ids):
        others = [r[j] for j, gj in enumerate(group_ids) if gj == gi and j != i]
        out.append(r[i] - sum(others) / len(others) if others else 0.0)
    return out


def grpo_reference(rewards, group_ids) -> list[float]:
    """Shao et al. 2024: (R_i - mean) / (std + 1e-6) within the group (unbiased std, SPEC §6); 0 alone."""
    r = [float(x) for x in rewards]
    out = []
    for i, gi in enumerate(group_ids):
        members = [r[j] for j, gj in enumerate(group_ids) if gj == gi]
        alone = len(members) == 1
        out.append(0.0 if alone else (r[i] - np.mean(members)) / (np.std(members, ddof=1) + 1e-6))
    return out


def reinforce_pp_reference(rewards, mask, kl, kl_coef, gamma=1.0) -> np.ndarray:
    """Hu et al. 2025 (REINFORCE++), sections 3.1-3.2: r_t = -beta KL_t plus R at the end of the response;
    G_t = sum_{s >= t} gamma^(s-t) r_s; advantages normalized by the mean and std of every token of the
    batch (unbiased variance, + 1e-8 inside the root as OpenRLHF and verl)."""
    n, width = mask.shape
    returns = np.zeros((n, width))
    values = []
    for b in range(n):
        length = int(mask[b].sum())
        r = [-kl_coef * float(kl[b, t]) for t in range(length)]
        r[-1] += float(rewards[b])
        for t in range(length):
            returns[b, t] = sum(gamma ** (s - t) * r[s] for s in range(t, length))
            values.append(returns[b, t])
    mean, var = np.mean(values), np.var(values, ddof=1)
    return np.where(mask.numpy(), (returns - mean) / np.sqrt(var + 1e-8), 0.0)


def reference(estimator, rewards, group_ids, mask, kl, kl_coef) -> np.ndarray:
    if estimator == "reinforce_plus_plus":
        return reinforce_pp_reference(rewards, mask, kl, kl_coef)
    per_traj = (rloo_reference if estimator == "rloo" else grpo_reference)(rewards, group_ids)
    return np.where(mask.numpy(), np.array(per_traj)[:, None], 0.0)


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_rloo_equals_its_reference(group_size):
    rewards, group_ids, *_ = random_batch(group_size)
    ours = rloo_outcome_advantages(rewards, group_ids)
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), rloo_reference(rewards, group_ids), rtol=0, atol=1e-12)
    if group_size == 1:
        assert (ours == 0).all()


@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_plus_plus_equals_its_reference(group_size, kl_coef, gamma):
    rewards, _, mask, kl, _ = random_batch(group_size)
    ours = reinforce_plus_plus_advantages(rewards, mask, kl, kl_coef, gamma)
    np.testing.assert_allclose(ours.numpy(), reinforce_pp_reference(rewards, mask, kl, kl_coef, gamma),
                               rtol=0, atol=1e-10)
    # normalized over the whole batch: zero mean, unit (unbiased) variance over the response tokens
    assert abs(float(ours[mask].mean())) < 1e-10 and float(ours[mask].var()) == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.4])
def test_each_estimator_plus_alpha_times_process(estimator, group_size, alpha):
    rewards, group_ids, mask, kl, process = random_batch(group_size, seed=1)
    kl_coef = 0.2 if estimator == "reinforce_plus_plus" else 0.0
    ours = advantages(estimator, rewards.tolist(), group_ids, mask, process_advantages=process.float(),
                      alpha=alpha, kl=kl.float(), kl_coef=kl_coef)
    assert ours.dtype == torch.float32 and ours.shape == mask.shape
    expected = reference(estimator, rewards, group_ids, mask, kl.float().double(), kl_coef) \
        + alpha * np.where(mask.numpy(), process.float().double().numpy(), 0.0)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert (ours[~mask] == 0).all()


def test_a_process_term_off_the_mask_is_ignored():
    rewards, group_ids, mask, _, process = random_batch(8)
    noisy = process + 7.0 * ~mask  # garbage on padding
    a = advantages("rloo", rewards, group_ids, mask, process_advantages=noisy, alpha=0.5)
    b = advantages("rloo", rewards, group_ids, mask, process_advantages=process, alpha=0.5)
    assert torch.equal(a, b)


@pytest.mark.parametrize("call, error, message", [
    (lambda r, g, m, k: advantages("ppo", r, g, m, alpha=0.1), ValueError, "estimator: expected one of"),
    (lambda r, g, m, k: advantages("rloo", r, g, m.tolist(), alpha=0.1), TypeError,
     "response_mask: expected a torch.Tensor"),
    (lambda r, g, m, k: advantages("rloo", r, g, m[:-1], alpha=0.1), ValueError, "response_mask: expected"),
    (lambda r, g, m, k: advantages("rloo", r, g, m, alpha=0.1, process_advantages=k[:, :3]), ValueError,
     "process_advantages: expected a"),
    (lambda r, g, m, k: advantages("reinforce_plus_plus", r, g, m, alpha=0.1, kl_coef=0.1), ValueError,
     "kl: needed when kl_coef != 0"),
    (lambda r, g, m, k: advantages("rloo", r, g, m, alpha="0.1"), TypeError, "alpha: expected a real number"),
    (lambda r, g, m, k: rloo_outcome_advantages([1.0, math.nan], None), ValueError, "rewards: contains NaN"),
    (lambda r, g, m, k: reinforce_plus_plus_advantages(r, m.flip(1)), ValueError,
     r"response_mask\[\d+\]: expected the response's tokens first"),
    (lambda r, g, m, k: reinforce_plus_plus_advantages(r, m, gamma=1.5), ValueError,
     "gamma: expected a number"),
])
def test_bad_arguments_are_named(call, error, message):
    rewards, group_ids, mask, kl, _ = random_batch(2)
    with pytest.raises(error, match=message):
        call(rewards, group_ids, mask, kl)
