"""Outcome rewards. A verifier is a plain callable ``(completions, **kwargs) -> list[float]``
(TRL's reward-function convention): ``completions`` are the decoded response texts, and the
trainer passes ``answers=[ground truth per completion]`` and ``prompts=[prompt text]``.

The default, `boxed_verifier`, reads the last ``\\boxed{...}`` of a completion and gives 1.0
when it equals the ground truth (numbers compared numerically, other strings after
normalization), else 0.0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from fractions import Fraction

Verifier = Callable[..., list[float]]

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^\\[dt]?frac\{([-+]?\d+)\}\{(\d+)\}$")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed), or None.

    An unclosed last ``\\boxed{`` (a truncated response) gives None.
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def normalize_answer(text: str) -> str:
    """Strip ``$``, spaces, ``\\text{}``/``\\mathrm{}`` wrappers, thousands separators, a trailing
    period and a leading ``x =``; lowercase."""
    s = text.strip()
    s = re.sub(r"\\(text|mathrm|textbf)\{([^{}]*)\}", r"\2", s)
    s = s.replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\%", "%")
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)
    s = s.strip().rstrip(".").strip()
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return re.sub(r"\s+", " ", s).lower()


def as_number(text: str) -> Fraction | None:
    """The exact value of a plain, fractional or ``\\frac`` number; None if it is not one."""
    s = normalize_answer(text).rstrip("%")
    for pattern in (_FRACTION, _LATEX_FRAC):
        m = pattern.match(s)
        if m:
            den = int(m.group(2))
            return None if den == 0 else Fraction(int(m.group(1)), den)
    if _NUMBER.match(s):
        try:
            value = Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
        return value
    return None


def answers_match(predicted: str, truth: str, rel_tol: float = 1e-6) -> bool:
    """Numbers numerically (``"18.0" == "18"``, ``"1/2" == "0.5"``), else normalized strings."""
    a, b = as_number(predicted), as_number(truth)
    if a is not None and b is not None:
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-9)
    return normalize_answer(predicted) == normalize_answer(truth)


def boxed_verifier(completions: Sequence[str], answers: Sequence[str], **kwargs) -> list[float]:
    """1.0 where the last ``\\boxed{}`` of a completion matches its answer, else 0.0."""
    if len(completions) != len(answers):
        raise ValueError(f"answers: expected {len(completions)} (one per completion), got {len(answers)}")
    out = []
    for text, truth in zip(completions, answers):
        boxed = last_boxed(text)
        out.append(1.0 if boxed is not None and answers_match(boxed, truth) else 0.0)
    return out


VERIFIERS: dict[str, Verifier] = {"boxed": boxed_verifier}


def get_verifier(name_or_fn) -> Verifier:
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in VERIFIERS:
        raise ValueError(f"verifier: unknown verifier {name_or_fn!r}; choose one of {sorted(VERIFIERS)} or pass a callable")
    return VERIFIERS[name_or_fn]
