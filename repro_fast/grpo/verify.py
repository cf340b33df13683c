"""Outcome rewards. A verifier is TRL's reward-function callable ``(completions, **kwargs) -> list[float]``:
the trainer passes the decoded responses, ``answers=`` (ground truth per completion) and ``prompts=``.
The default, `boxed_verifier`, compares the last ``\\boxed{...}`` to the answer (see `answers_match`).
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
    """Content of the last ``\\boxed{...}`` (nested braces allowed); None if none or unclosed (truncated)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
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
    m = _FRACTION.match(s) or _LATEX_FRAC.match(s)
    if m:
        den = int(m.group(2))
        return None if den == 0 else Fraction(int(m.group(1)), den)
    if _NUMBER.match(s):
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):  # e.g. more digits than int() accepts
            return None
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
    boxed = [last_boxed(text) for text in completions]
    return [1.0 if b is not None and answers_match(b, truth) else 0.0 for b, truth in zip(boxed, answers)]


VERIFIERS: dict[str, Verifier] = {"boxed": boxed_verifier}


def get_verifier(name_or_fn) -> Verifier:
    """A callable as it is, or the registered verifier of that name."""
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in VERIFIERS:
        raise ValueError(f"verifier: unknown verifier {name_or_fn!r}; choose one of {sorted(VERIFIERS)} "
                         "or pass a callable")
    return VERIFIERS[name_or_fn]
