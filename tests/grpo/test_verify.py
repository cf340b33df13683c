"""`repro_fast.grpo.verify`, the default outcome verifier: last \\boxed{}, numbers compared numerically,
strings normalized."""

from __future__ import annotations

import pytest

from repro_fast.grpo.verify import answers_match, boxed_verifier, get_verifier, last_boxed, normalize_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{12}.", "12"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last one counts
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("no box here", None),
        ("\\boxed{12", None),  # truncated: unclosed
        ("</think>\\boxed{7}<eos>", "7"),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "pred, truth, ok",
    [
        ("18", "18", True),
        ("18.0", "18", True),
        ("18.5", "18", False),
        ("1,000", "1000", True),
        ("$1000$", "1000", True),
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("x = 4", "4", True),
        ("-3", "3", False),
        ("\\text{Paris}", "paris", True),
        ("Paris.", "paris", True),
        ("London", "paris", False),
        ("1e3", "1000", True),
    ],
)
def test_answers_match(pred, truth, ok):
    assert answers_match(pred, truth) is ok


def test_normalize_answer():
    assert normalize_answer("  \\text{Hello}  World. ") == "hello world"


def test_boxed_verifier_scores_and_errors():
    completions = ["a\n\n\\boxed{5}", "\\boxed{6}", "no answer", "\\boxed{5.00}"]
    assert boxed_verifier(completions, answers=["5", "5", "5", "5"]) == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="answers: expected 4"):
        boxed_verifier(completions, answers=["5"])


def test_get_verifier():
    assert get_verifier("boxed") is boxed_verifier
    fn = lambda completions, **kw: [0.5] * len(completions)  # noqa: E731
    assert get_verifier(fn) is fn
    with pytest.raises(ValueError, match="unknown verifier 'exact'"):
        get_verifier("exact")
