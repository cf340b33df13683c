"""`repro_fast.advantages`: `process_advantages` (SPEC §6 normalization over group / batch / none,
placement on token P_j - 1, reward-to-go) against the float64 reference (tests/reference.py), across
several results as a trainer gathers them, and its argument checks; `grpo_advantages` (outcome
advantage plus alpha times the process term, 0 on padding) against hand-computed numbers, and its
argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as R
import torch

import repro_fast.advantages as advantages
from repro_fast import RePROConfig, RePROScorer, grpo_advantages, process_advantages
from repro_fast.advantages import MAX_WIDTH

Q = [15496, 995, 30]  # "Hello world?"
TEXTS = ["a.\n\nb.\n\nc?\nd</think>e", "", "x", "one.\n\ntwo.\n\nthree.\n\nfour.\n\nfive"]


def batch(tok):
    prompts = [Q, Q + [64], tok.encode("Question: what?"), Q]
    return prompts, [tok.encode(t) for t in TEXTS], ["12", "3", "7", "12"], ["g", "g", "h", "h"]


# ------------------------------------------------------------------------------------------
# process_advantages: normalization, placement, reward-to-go (SPEC §6)
# ------------------------------------------------------------------------------------------


def test_process_advantages_across_results_equals_one_call(tiny_llama, gpt2_tokenizer):
    """A trainer whose groups span processes: score halves apart, gather, normalize once."""
    tok = gpt2_tokenizer
    prompts, responses, answers, groups = batch(tok)
    scorer = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2, normalize="group"))
    whole = scorer.score(prompts, responses, answers, groups)
    first = scorer.score(prompts[::2], responses[::2], answers[::2], groups[::2])
    second = scorer.score(prompts[1::2], responses[1::2], answers[1::2], groups[1::2])
    order = [0, 2, 1, 3]
    gathered = process_advantages(
        first.rewards + second.rewards, first.points + second.points, whole.process_advantages.shape[1],
        [groups[b] for b in order],
    )
    torch.testing.assert_close(
        gathered[torch.tensor(np.argsort(order))], whole.process_advantages, atol=1e-6, rtol=0
    )


def test_process_advantages_many_groups_against_reference():
    """Random group sizes, empty reward lists, scopes of one: the vectorized normalization equals
    the float64 reference (tests/reference.py) in every mode."""
    rng = np.random.default_rng(0)
    n, width = 300, 40
    points = [[0, *sorted(rng.choice(np.arange(1, width + 1), rng.integers(0, 6), replace=False).tolist())]
              for _ in range(n)]
    rewards = [rng.normal(size=len(p) - 1).tolist() for p in points]
    groups = rng.integers(0, 60, n).tolist()
    for normalize, ids in (("group", groups), ("group", None), ("batch", groups), ("none", groups)):
        got = process_advantages(rewards, points, width, ids, normalize)
        norm = R.normalize_rewards(rewards, ids, normalize)
        expect = torch.tensor(
            [R.reward_to_go(width, p, r) for p, r in zip(points, norm)], dtype=torch.float64
        )
        torch.testing.assert_close(got.double(), expect, atol=1e-5, rtol=0)


def test_process_advantages_takes_integer_tensors_and_arrays():
    want = process_advantages([[1.0, 2.0]], [[0, 2, 4]], 5)
    for pts in (torch.tensor([0, 2, 4]), np.array([0, 2, 4], dtype=np.int32)):
        assert torch.equal(process_advantages([[1.0, 2.0]], [pts], 5), want)


def test_process_advantages_against_reference():
    rewards = [[0.5, -0.25], [], [1.0, 0.0, 2.0]]
    points = [[0, 2, 4], [0], [0, 1, 2, 5]]
    for normalize in ("group", "batch", "none"):
        got = process_advantages(rewards, points, 6, ["a", "a", "b"], normalize)
        norm = R.normalize_rewards(rewards, ["a", "a", "b"], normalize)
        for b in range(3):
            expect = R.reward_to_go(6, points[b], norm[b])
            torch.testing.assert_close(
                got[b].double(), torch.tensor(expect, dtype=torch.float64), atol=1e-6, rtol=0
            )


@pytest.mark.parametrize(
    "args, match",
    [
        (([[1.0]], [[0, 1]], 1, None, "row"), "normalize"),
        (([[1.0]], [[0, 3]], 2), "points\\[0\\]"),
        (([[1.0]], [[0, 2, 1]], 4), "points\\[0\\]"),
        (([[1.0, 2.0]], [[0, 1]], 4), "rewards\\[0\\]: expected 1"),
        (([[float("nan")]], [[0, 1]], 4), "rewards\\[0\\]: contains NaN"),
        (([[None]], [[0, 1]], 4), "rewards\\[0\\]\\[0\\]"),
        (([[1.0]], [[0, 1]], 4, "ab"), "group_ids"),
        (([[1.0]], [[0, 1]], -1), "width"),
        # Faults: non-integer points were truncated ([0, 2.9] -> [0, 2]) or parsed ("03", bools).
        (([[1.0, 2.0]], [[0, 2.9, 4.5]], 6), "points\\[0\\]\\[1\\]: expected an int"),
        (([[1.0, 2.0]], [torch.tensor([0.0, 2.0, 4.0])], 6), "points\\[0\\]: expected integer"),
        (([[1.0]], [[0, "03"]], 6), "points\\[0\\]\\[1\\]"),
        (([[1.0]], [[False, True]], 6), "points\\[0\\]\\[0\\]"),
        (([[1.0]], ["01"], 6), "points\\[0\\]"),
    ],
)
def test_process_advantages_bad_input(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        process_advantages(*args)


@pytest.mark.parametrize("width", [10**12, MAX_WIDTH + 1])
def test_process_advantages_refuses_an_absurd_width_before_allocating(width, monkeypatch):
    """issue 27 item 11: width=10**12 went on to torch (an 8 TB allocation) instead of a ValueError.
    The allocating step is replaced by a failure here, so the old code fails this test safely."""
    def allocates(*args, **kwargs):
        raise AssertionError(f"reached the [N, width] allocation with width = {width}")

    monkeypatch.setattr(advantages, "reward_to_go_at_points", allocates)
    with pytest.raises(ValueError, match=rf"^width: expected an int in \[0, {MAX_WIDTH}\], got {width}$"):
        process_advantages([[1.0]], [[0, 1]], width)


# ------------------------------------------------------------------------------------------
# grpo_advantages: the outcome advantage plus alpha times the process term (SPEC §6)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_tensor", [False, True])
def test_package_grpo_advantages_by_hand(as_tensor):
    s = math.sqrt(1 / 3) + 1e-6
    A = [1 / 3 / s, -2 / 3 / s, 1 / 3 / s, 0.0]
    outcome = [1.0, 0.0, 1.0, 0.5]
    if as_tensor:
        outcome = torch.tensor(outcome)
    groups = ["a", "a", "a", "b"]
    proc = torch.tensor(
        [[1.0, 2.0, 3.0], [0.5, 0.0, 0.0], [-1.0, -1.0, 0.0], [4.0, 0.0, 0.0]], dtype=torch.float32
    )
    mask = torch.tensor(
        [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool
    )
    out = grpo_advantages(outcome, groups, process_advantages=proc, response_mask=mask, alpha=0.5)
    assert tuple(out.shape) == (4, 3)
    expected = torch.zeros(4, 3, dtype=torch.float64)
    for b in range(4):
        for t in range(3):
            if mask[b, t]:
                expected[b, t] = A[b] + 0.5 * float(proc[b, t])
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


def test_package_grpo_advantages_default_alpha_and_no_process():
    # R = [0, 1] in one group: mean .5, unbiased std sqrt(.5) = 0.7071068 -> A = -/+ 0.5/0.7071078
    s = math.sqrt(0.5) + 1e-6
    proc = torch.tensor([[2.0, 1.0], [3.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    out = grpo_advantages([0.0, 1.0], [7, 7], process_advantages=proc, response_mask=mask)
    exp = torch.tensor([[-0.5 / s + 0.2, -0.5 / s + 0.1], [0.5 / s + 0.3, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.double(), exp, atol=1e-5, rtol=0)
    # no process advantage: the outcome advantage on every real token
    out = grpo_advantages([0.0, 1.0], [7, 7], response_mask=mask)
    exp = torch.tensor([[-0.5 / s, -0.5 / s], [0.5 / s, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.double(), exp, atol=1e-5, rtol=0)


def test_package_grpo_group_of_one_is_zero():
    proc = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    out = grpo_advantages([5.0, -3.0], ["x", "y"], process_advantages=proc, response_mask=mask, alpha=0.0)
    torch.testing.assert_close(out.double(), torch.zeros(2, 2, dtype=torch.float64), atol=1e-7, rtol=0)
    # equal rewards in a group: std 0 -> A = 0 / 1e-6 = 0
    out = grpo_advantages([2.0, 2.0], ["x", "x"], process_advantages=proc, response_mask=mask, alpha=1.0)
    torch.testing.assert_close(out.double(), proc.double(), atol=1e-6, rtol=0)


def test_grpo_advantages_hand_computed():
    # one group of 4: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3)
    a = grpo_advantages([1.0, 0.0, 0.0, 1.0], [7, 7, 7, 7], alpha=0.0)
    s = math.sqrt(1 / 3)
    assert torch.allclose(a[:, 0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (s + 1e-6), atol=1e-6)
    # with a process advantage and a mask: A + alpha * A_proc, 0 on padding
    proc = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    b = grpo_advantages([1.0, 0.0], ["q", "q"], process_advantages=proc, response_mask=mask, alpha=0.1)
    A = 0.5 / (math.sqrt(0.5) + 1e-6)
    expected = torch.tensor([[A + 0.1, A + 0.2, 0.0], [-A + 0.05, 0.0, 0.0]])
    assert torch.allclose(b, expected, atol=1e-6)
    # a group whose rewards are all equal gives no outcome advantage
    c = grpo_advantages([1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1], alpha=0.0)
    assert torch.equal(c, torch.zeros(4, 1))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(outcome_rewards=[1.0, None]), TypeError, "outcome_rewards\\[1\\]"),
        (dict(alpha=float("nan")), ValueError, "alpha"),
        (dict(alpha="0.1"), TypeError, "alpha"),
        (dict(group_ids="ab"), TypeError, "group_ids"),
        (dict(process_advantages=torch.tensor([[float("nan")], [0.0]])), ValueError, "process_advantages"),
    ],
)
def test_grpo_advantages_bad_input(kwargs, error, match):
    args = dict(outcome_rewards=[1.0, 0.0], group_ids=["a", "a"]) | kwargs
    with pytest.raises(error, match=match):
        grpo_advantages(**args)


def test_grpo_advantages_takes_numpy_scalars():
    a32 = grpo_advantages([1.0, 0.0], ["a", "a"], torch.ones(2, 1), alpha=np.float32(0.5))
    a64 = grpo_advantages([1.0, 0.0], ["a", "a"], torch.ones(2, 1), alpha=np.float64(0.5))
    torch.testing.assert_close(a32, a64)
