"""`repro_fast.grpo.tasks`: the toy task (its SFT traces verify and re-encode exactly, its eval set is
fixed, its rollout metric counts re-checks), GSM8K variants from reasoning-gym (offline, seeded) and
task lookup."""

from __future__ import annotations

import random

import pytest

from repro_fast.grpo.tasks import TOY_MAX_VALUE, GSM8KVariantsTask, ToyTask, get_task
from repro_fast.grpo.verify import boxed_verifier


def small_variants(seed=0, size=12):
    task = GSM8KVariantsTask(seed=seed)
    task.pool_size = size
    return task


def test_variants_are_seeded_and_their_traces_verify():
    a, b = small_variants(seed=3), small_variants(seed=3)
    assert [p for p, _ in a.variants()] == [p for p, _ in b.variants()]
    assert [p for p, _ in small_variants(seed=4).variants()] != [p for p, _ in a.variants()]
    problems = [p for p, _ in a.variants()]
    traces = [cot for _, cot in a.variants()]
    # The reference chain of thought ends with the boxed ground truth: the verifier accepts it,
    # and rejects it against another problem's answer.
    assert boxed_verifier(traces, [p.answer for p in problems]) == [1.0] * len(problems)
    shifted = [problems[(i + 1) % len(problems)].answer for i in range(len(problems))]
    assert sum(boxed_verifier(traces, shifted)) < len(problems)
    for cot in traces:
        assert "\n\n" in cot  # one step per paragraph: RePro's segment boundaries


def test_variants_train_and_sft_sample_from_the_pool_eval_is_real_gsm8k():
    task = small_variants()
    pool = {p for p, _ in task.variants()}
    assert set(task.train_problems(random.Random(0), 20)) <= pool
    assert all(p in pool for p, _ in task.sft_examples(random.Random(1), 5))
    real = get_task("gsm8k").eval_problems(5)
    assert task.eval_problems(5) == real


def test_unknown_task_suggests_the_closest():
    with pytest.raises(ValueError, match="gsm8k_variants"):
        get_task("gsm8k_variant")


def test_toy_task_traces_verify_and_re_encode_exactly():
    task = ToyTask()
    model, tok = task.fresh(seed=0)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    examples = task.sft_examples(random.Random(0), 40)
    texts = [response for _, response in examples]
    assert boxed_verifier(texts, answers=[p.answer for p, _ in examples]) == [1.0] * 40
    for problem, response in examples:
        assert 0 <= int(problem.answer) <= TOY_MAX_VALUE
        assert tok.decode(tok.encode(response, add_special_tokens=False)) == response  # no unknown pieces
        assert response.count("</think>") == 1 and response.index("</think>") < response.index("\\boxed")
    rechecks = sum(t.count("Wait, let me check") for t in texts)
    assert 0 < rechecks and task.rollout_metrics(texts) == {"rechecks_per_rollout": rechecks / 40}
    assert [p.question for p in task.eval_problems(5)] == [p.question for p in task.eval_problems(5)]
    train = {p.question for p in task.train_problems(random.Random(1), 5)}
    assert train != {p.question for p in task.train_problems(random.Random(2), 5)}  # seeded by the caller
