"""SPEC §7's trainer-facing API (`score_padded`, `width`, `process_advantages`, autocast) and the
faults a hostile user found: each test reproduces one and checks the fix."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import reference as R
from repro_fast import RePROConfig, RePROScorer, grpo_advantages, process_advantages

Q = [15496, 995, 30]  # "Hello world?"
TEXTS = ["a.\n\nb.\n\nc?\nd</think>e", "", "x", "one.\n\ntwo.\n\nthree.\n\nfour.\n\nfive"]


def batch(tok):
    prompts = [Q, Q + [64], tok.encode("Question: what?"), Q]
    return prompts, [tok.encode(t) for t in TEXTS], ["12", "3", "7", "12"], ["g", "g", "h", "h"]


# ---------------------------------------------------------------------------- score_padded / width


def test_score_padded_equals_score(tiny_llama, gpt2_tokenizer):
    tok = gpt2_tokenizer
    prompts, responses, answers, groups = batch(tok)
    scorer = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2))
    ref = scorer.score(prompts, responses, answers, groups)
    Lq, Lc = max(map(len, prompts)) + 2, max(map(len, responses)) + 3
    p_ids = torch.full((4, Lq), 7)
    p_mask = torch.zeros(4, Lq, dtype=torch.long)
    c_ids = torch.full((4, Lc), 9)
    c_mask = torch.zeros(4, Lc, dtype=torch.long)
    for b, (q, y) in enumerate(zip(prompts, responses)):
        if b % 2:  # right-padded prompt
            p_ids[b, : len(q)] = torch.tensor(q)
            p_mask[b, : len(q)] = 1
        else:  # left-padded, as TRL does
            p_ids[b, Lq - len(q):] = torch.tensor(q)
            p_mask[b, Lq - len(q):] = 1
        c_ids[b, : len(y)] = torch.tensor(y, dtype=torch.long)
        c_mask[b, : len(y)] = 1
    got = scorer.score_padded(p_ids, p_mask, c_ids, c_mask, answers, groups)
    assert got.points == ref.points
    for name in ("token_logprobs", "token_entropies", "process_advantages", "token_rewards", "reward_mask", "response_mask"):
        t = getattr(got, name)
        assert tuple(t.shape) == (4, Lc), name
        n = ref.token_logprobs.shape[1]
        torch.testing.assert_close(t[:, :n], getattr(ref, name), atol=1e-6, rtol=0)
        assert not t[:, n:].any(), f"{name}: padding past n_max is not 0"
    torch.testing.assert_close(got.response_mask, c_mask.bool())
    wide = scorer.score(prompts, responses, answers, groups, width=Lc)
    torch.testing.assert_close(wide.process_advantages, got.process_advantages)


@pytest.mark.parametrize(
    "mutate, match",
    [
        # the dtype is named, not the shape (the old message said "got (2, 3)")
        (lambda p, pm, c, cm: (p, pm.float(), c, cm), "prompt_mask: .* got dtype torch.float32"),
        (lambda p, pm, c, cm: (p, pm[:, 1:], c, cm), "prompt_mask: expected the shape"),
        (lambda p, pm, c, cm: (p, pm, c, cm * 2), "completion_mask: expected 0/1"),
        (lambda p, pm, c, cm: (p, pm, c, torch.tensor([[0, 1, 1]] * 2)), "completion_mask: row 0"),
        (lambda p, pm, c, cm: (p, torch.tensor([[1, 0, 1]] * 2), c, cm), "prompt_mask: row 0"),
        (lambda p, pm, c, cm: (p[0], pm, c, cm), "prompt_ids"),
    ],
)
def test_score_padded_bad_input(tiny_llama, gpt2_tokenizer, mutate, match):
    scorer = RePROScorer(tiny_llama, gpt2_tokenizer)
    p, pm = torch.tensor([Q, Q]), torch.ones(2, 3, dtype=torch.long)
    c, cm = torch.tensor([[64, 65, 66]] * 2), torch.tensor([[1, 1, 0]] * 2)
    with pytest.raises((ValueError, TypeError), match=match):
        scorer.score_padded(*mutate(p, pm, c, cm), ["1", "2"])


def test_width_must_cover_the_longest_response(tiny_llama, gpt2_tokenizer):
    scorer = RePROScorer(tiny_llama, gpt2_tokenizer)
    with pytest.raises(ValueError, match="width"):
        scorer.score([Q], [[64, 65, 66]], ["1"], width=2)


@pytest.mark.parametrize("width", [10**12, 10**30])
def test_absurd_width_is_refused_before_the_forward(tiny_llama, gpt2_tokenizer, monkeypatch, width):
    """Fault: these failed inside torch after the forward pass (allocating ``[N, width]``)."""
    scorer = RePROScorer(tiny_llama, gpt2_tokenizer)
    monkeypatch.setattr(scorer.backend, "token_stats", lambda *a: pytest.fail("the forward ran"))
    with pytest.raises(ValueError, match="width"):
        scorer.score([Q], [[64, 65, 66]], ["1"], width=width)


# ---------------------------------------------------------------------------- process_advantages


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
    torch.testing.assert_close(gathered[torch.tensor(np.argsort(order))], whole.process_advantages, atol=1e-6, rtol=0)


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
        expect = torch.tensor([R.reward_to_go(width, p, r) for p, r in zip(points, norm)], dtype=torch.float64)
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
            torch.testing.assert_close(got[b].double(), torch.tensor(expect, dtype=torch.float64), atol=1e-6, rtol=0)


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


# ---------------------------------------------------------------------------- autocast (bf16)


def test_scoring_inside_autocast_matches_the_trainers_own_forward(tiny_llama, gpt2_tokenizer):
    """accelerate / TRL with bf16=True wrap the forward in autocast: the scorer must work there,
    and its token log-probs must be the trainer's own under the same autocast within the bound
    documented in the README (Precision)."""
    tok = gpt2_tokenizer
    prompts, responses, answers, groups = batch(tok)
    scorer = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = scorer.score(prompts, responses, answers, groups)
        naive = RePROScorer(tiny_llama, tok, RePROConfig(num_segments=2), backend="naive").score(
            prompts, responses, answers, groups)
        for b, (q, y) in enumerate(zip(prompts, responses)):
            if not y:
                continue
            logits = tiny_llama(torch.tensor([q + y])).logits[0, len(q) - 1 : len(q) - 1 + len(y)]
            own = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(y)[:, None])[:, 0]
            err = (res.token_logprobs[b, : len(y)] - own).abs()
            assert float(err.max()) <= 0.05 + 0.01 * float(own.detach().abs().max()), float(err.max())
    assert res.points == naive.points
    for b in range(4):
        torch.testing.assert_close(res.nll[b], naive.nll[b], atol=1e-3 + 1e-3 * float(naive.nll[b].abs().max()), rtol=0)


# ---------------------------------------------------------------------------- faults, one by one


def test_frozen_submodule_keeps_its_eval_mode(tiny_llama, gpt2_tokenizer):
    model = copy.deepcopy(tiny_llama).train()
    model.model.layers[0].eval()  # a frozen block
    RePROScorer(model, gpt2_tokenizer).score([Q], [[64, 65]], ["1"])
    assert model.training and not model.model.layers[0].training
    assert all(m.training for m in model.model.layers[1].modules())


def test_resized_embeddings_are_seen(tiny_llama, gpt2_tokenizer):
    model = copy.deepcopy(tiny_llama)
    scorer = RePROScorer(model, gpt2_tokenizer)
    before = scorer.score([Q], [[64, 65]], ["1"]).nll[0]
    model.resize_token_embeddings(50257 + 64)
    with torch.no_grad():
        model.get_output_embeddings().weight[-64:] = 5.0  # new rows change every softmax
    after = scorer.score([Q], [[64, 65]], ["1"]).nll[0]
    fresh = RePROScorer(model, gpt2_tokenizer).score([Q], [[64, 65]], ["1"]).nll[0]
    torch.testing.assert_close(after, fresh)
    assert not torch.allclose(after, before)


def test_config_assignment_applies_every_field(tiny_llama, gpt2_tokenizer):
    tok = gpt2_tokenizer
    y = tok.encode("a.\n\nb.\n\nc</think>d")
    scorer = RePROScorer(tiny_llama, tok)
    scorer.score([Q], [y], ["1"])  # fills the answer cache
    cfg = RePROConfig(temperature=0.5, think_end=None, answer_template="= {answer}", num_segments=1)
    scorer.config = cfg
    got = scorer.score([Q], [y], ["1"])
    fresh = RePROScorer(tiny_llama, tok, cfg).score([Q], [y], ["1"])
    assert got.points == fresh.points and got.points[0][-1] == len(y)  # think_end=None applied
    torch.testing.assert_close(got.nll[0], fresh.nll[0])
    torch.testing.assert_close(got.token_logprobs, fresh.token_logprobs)
    with pytest.raises(Exception, match="cannot assign"):
        scorer.config.temperature = 2.0  # frozen: change settings through replace()
    with pytest.raises(TypeError, match="config"):
        scorer.config = {"temperature": 2.0}


@pytest.mark.parametrize(
    "response, match",
    [
        ([64, 2**63], "token id 9223372036854775808 at position 1"),
        (np.array([64, 2**64 - 1], dtype=np.uint64), "token id 18446744073709551615 at position 1"),
        ([64, -1], "token id -1 at position 1"),
    ],
)
def test_out_of_range_ids_are_named(tiny_llama, gpt2_tokenizer, response, match):
    with pytest.raises(ValueError, match=match):
        RePROScorer(tiny_llama, gpt2_tokenizer).score([Q], [response], ["1"])


def test_unhashable_group_id_inside_a_tuple(tiny_llama, gpt2_tokenizer):
    with pytest.raises(TypeError, match="group_ids\\[0\\]"):
        RePROScorer(tiny_llama, gpt2_tokenizer).score([Q], [[64]], ["1"], group_ids=[(1, [2])])


def test_answer_with_a_lone_surrogate(tiny_llama, gpt2_tokenizer):
    with pytest.raises(ValueError, match="answers\\[0\\]"):
        RePROScorer(tiny_llama, gpt2_tokenizer).score([Q], [[64]], ["4\ud800"])


def test_tokenizer_that_gained_tokens(gpt2_tokenizer_dir, tiny_models):
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir)
    model = copy.deepcopy(tiny_models["llama"])
    scorer = RePROScorer(model, tok, planner="python")
    scorer.score([Q], [[64]], ["1"])
    tok.add_tokens(["<step>"])
    model.resize_token_embeddings(len(tok))
    step = tok.convert_tokens_to_ids("<step>")
    y = [64, 13, 628, step, 65]  # 'a' '.' '\n\n' '<step>' 'b'
    got = scorer.score([Q], [y], ["1"])
    assert got.points == RePROScorer(model, tok, planner="python").score([Q], [y], ["1"]).points
    assert 3 in got.points[0]  # the added token starts a segment after "\n\n"


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("boundary_suffixes", None, ValueError),
        ("boundary_suffixes", "\n\n", ValueError),
        ("temperature", 1e-300, ValueError),
        ("temperature", 10**400, ValueError),
        ("temperature", float("nan"), ValueError),
        ("num_segments", 10**12, ValueError),
        ("num_segments", 0, ValueError),
    ],
)
def test_config_errors_name_the_field(field, value, error):
    with pytest.raises(error, match=f"RePROConfig.{field}"):
        RePROConfig(**{field: value})


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


def test_ids_past_the_tokenizer_but_inside_the_embedding_are_scored(gpt2_tokenizer, tiny_models):
    """Qwen pads its embedding past len(tokenizer); a policy can sample those ids."""
    model = copy.deepcopy(tiny_models["llama"])
    model.resize_token_embeddings(50257 + 15)
    y = [64, 13, 628, 50260, 65, 628, 66]  # an unnamed id after '\n\n': its text is empty (blank)
    for backend in ("naive", "fast"):
        res = RePROScorer(model, gpt2_tokenizer, backend=backend).score([Q], [y], ["1"])
        assert res.points == [[0, 4, 6, 7]], backend  # the start skips the blank id, as for '\n'
    with pytest.raises(ValueError, match="token id 50272"):
        RePROScorer(model, gpt2_tokenizer).score([Q], [[50272]], ["1"])


def test_verl_integration_without_verl_names_what_to_install(monkeypatch):
    """Fault: importing it without verl said only "No module named 'tensordict'"."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "tensordict", None)  # as if not installed, in any venv
    monkeypatch.delitem(sys.modules, "repro_fast.integrations.verl", raising=False)
    with pytest.raises(ImportError, match="pip install 'verl==0.9.1'"):
        importlib.import_module("repro_fast.integrations.verl")
