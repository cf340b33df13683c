"""`repro_fast.grpo.loss`: the GRPO loss on hand-computed cases, TRL's documented formula recomputed
independently in float64 numpy, the k3 KL, gradient accumulation, and `sequence_logprobs` equal to
RePro's token log-probs (the PPO old log-probs). (`grpo_advantages`: tests/test_advantages.py.)"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from repro_fast import RePROConfig, RePROScorer
from repro_fast.grpo.loss import grpo_loss, k3_kl, sequence_logprobs


def trl_grpo_loss_numpy(logp, old, adv, mask, eps_low, eps_high, beta, ref):
    """TRL GRPOTrainer._compute_loss (loss_type="dapo": token-level mean over all response
    tokens of the batch), written from its documentation, in float64."""
    logp, old, adv, ref = (np.asarray(x, np.float64) for x in (logp, old, adv, ref))
    mask = np.asarray(mask, np.float64)
    coef_1 = np.exp(logp - old)
    coef_2 = np.clip(coef_1, 1 - eps_low, 1 + eps_high)
    per_token = -np.minimum(coef_1 * adv, coef_2 * adv)
    per_token_kl = np.exp(ref - logp) - (ref - logp) - 1
    per_token = per_token + beta * per_token_kl
    return (per_token * mask).sum() / mask.sum()


def test_loss_hand_computed():
    # two tokens, advantage +1 and -1; ratios e^0.5 (clipped high) and e^-0.5 (clipped low)
    logp = torch.tensor([[0.5, -0.5]], requires_grad=True)
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, stats = grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.3)
    # token 0: -min(e^.5 * 1, 1.3 * 1) = -1.3; token 1: -min(e^-.5 * -1, 0.8 * -1) = 0.8
    assert loss.item() == pytest.approx((-1.3 + 0.8) / 2, abs=1e-6)
    assert stats["clip_sum"] == 2.0
    loss.backward()
    # both tokens are clipped -> no gradient flows through them
    assert torch.equal(logp.grad, torch.zeros(1, 2))


def test_loss_unclipped_gradient_and_mask():
    logp = torch.tensor([[0.1, 0.0, 7.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    adv = torch.tensor([[2.0, -1.0, 100.0]])
    mask = torch.tensor([[True, True, False]])  # third token is padding: ignored
    loss, _ = grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    expected = (-(math.exp(0.1) * 2.0) + 1.0) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert logp.grad[0, 0].item() == pytest.approx(-math.exp(0.1) * 2.0 / 2, abs=1e-6)
    assert logp.grad[0, 1].item() == pytest.approx(1.0 / 2, abs=1e-6)
    assert logp.grad[0, 2].item() == 0.0


def test_k3_kl_hand_values():
    logp = torch.tensor([0.0, -1.0, -2.0])
    ref = torch.tensor([0.0, -2.0, -1.0])
    kl = k3_kl(logp, ref)
    assert kl[0].item() == 0.0
    assert kl[1].item() == pytest.approx(math.exp(-1) + 1 - 1, abs=1e-6)
    assert kl[2].item() == pytest.approx(math.exp(1) - 1 - 1, abs=1e-6)
    assert (kl >= 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_matches_trl_formula(seed, beta):
    g = torch.Generator().manual_seed(seed)
    B, T = 5, 9
    logp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3)
    old = logp + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    x = logp.clone().requires_grad_(True)
    loss, _ = grpo_loss(x, old, adv, mask, eps_low=0.2, eps_high=0.28, beta=beta, ref_logp=ref)
    expected = trl_grpo_loss_numpy(logp, old, adv, mask, 0.2, 0.28, beta, ref)
    assert loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # gradient vs central finite differences of the numpy formula
    loss.backward()
    eps = 1e-6
    for b, t in [(0, 0), (1, 3), (B - 1, int(lengths[-1]) - 1)]:
        up, down = logp.numpy().copy(), logp.numpy().copy()
        up[b, t] += eps
        down[b, t] -= eps
        fd = (trl_grpo_loss_numpy(up, old, adv, mask, 0.2, 0.28, beta, ref)
              - trl_grpo_loss_numpy(down, old, adv, mask, 0.2, 0.28, beta, ref)) / (2 * eps)
        assert x.grad[b, t].item() == pytest.approx(fd, abs=1e-6)


def test_gradient_accumulation_equals_full_batch():
    g = torch.Generator().manual_seed(3)
    B, T = 6, 7
    base = -torch.rand(B, T, generator=g, dtype=torch.float64)
    old = base + 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.arange(T)[None] < torch.tensor([7, 2, 5, 1, 6, 3])[:, None]
    full_x = base.clone().requires_grad_(True)
    full, _ = grpo_loss(full_x, old, adv, mask)
    full.backward()
    acc_x = base.clone().requires_grad_(True)
    total = 0.0
    n_tokens = int(mask.sum())
    for rows in ([0, 1], [2, 3, 4], [5]):
        part, _ = grpo_loss(acc_x[rows], old[rows], adv[rows], mask[rows], num_tokens=n_tokens)
        part.backward()
        total += part.item()
    assert total == pytest.approx(full.item(), abs=1e-12)
    assert torch.allclose(acc_x.grad, full_x.grad, atol=1e-14)


def test_sequence_logprobs_equal_repro_token_logprobs():
    """The loop uses RePROScorer.token_logprobs as the PPO old log-probs: they must equal the
    log-probs the loss computes for the same tokens (ratio = 1 before the first update)."""
    from repro_fast.grpo.tasks import ToyTask

    task = ToyTask()
    model, tok = task.fresh(seed=1)
    model.eval()
    rng = random.Random(0)
    prompts, responses, answers = [], [], []
    for problem, text in task.sft_examples(rng, 4):
        prompts.append(task.encode_prompt(tok, problem))
        responses.append(tok.encode(text, add_special_tokens=False)[: 5 + 7 * len(responses)])
        answers.append(problem.answer)
    temperature = 0.7
    res = RePROScorer(model, tok, RePROConfig(temperature=temperature), backend="fast").score(
        prompts, responses, answers
    )
    with torch.no_grad():
        ours = sequence_logprobs(model, prompts, responses, temperature)
    assert ours.shape == res.token_logprobs.shape
    assert torch.allclose(ours, res.token_logprobs, atol=1e-5)
    assert (ours[~res.response_mask] == 0).all()
