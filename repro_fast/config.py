"""`RePROConfig`: every knob of RePro scoring (SPEC §1-8), validated on construction, and the
argument checkers shared by the public entry points (errors name the argument)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

NORMALIZE_MODES = ("group", "batch", "none")
BOUNDARY_MODES = ("text", "token_id")
THINK_END_MODES = ("text", "token_id")
STABILITY_FORMS = ("paper", "authors_code")
# No chain of thought has more segment starts than this; scoring cost follows the real points
# (at most one per candidate), so a larger k could only be a mistake.
MAX_SEGMENTS = 1 << 16
# Logits divided by a smaller tau overflow; a larger one makes every softmax uniform.
TEMPERATURE_RANGE = (1e-4, 1e4)


# The checkers below are the argument checks of the scoring core: each returns the value (converted
# where it says so) or raises TypeError / ValueError "name: expected X, got Y", naming the argument.


def check_type(value, name: str, types: type | tuple[type, ...], expected: str):
    """``value`` if it is an instance of ``types``; TypeError naming ``name`` and ``expected`` otherwise."""
    if not isinstance(value, types):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")
    return value


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; naming ``name`` otherwise: TypeError when it is not
    even a str, ValueError when it is another one."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def check_int(value, name: str, low: int, high: float = math.inf) -> int:
    """``value`` as an int in ``[low, high]``; TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return int(_in_range(value, name, "an int", low, high))


def check_real(value, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in ``[low, high]``; TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return _in_range(number, name, "a number", low, high)


def _in_range(value, name: str, kind: str, low, high):
    if not low <= value <= high:
        bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected {kind} {bounds}, got {value!r}")
    return value


def check_sequence(value, name: str, n: int | None = None) -> Sequence:
    """A list with one entry per trajectory (``n`` of them when given); a str, tensor or array is refused."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a list with one entry per trajectory, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise ValueError(f"{name}: expected {n} entries (one per trajectory), got {len(value)}")
    return value


def check_group_ids(group_ids, n: int) -> None:
    """``None`` or ``n`` hashable ids (SPEC §6 groups)."""
    if group_ids is None:
        return
    for b, g in enumerate(check_sequence(group_ids, "group_ids", n)):
        try:
            hash(g)
        except TypeError:
            raise TypeError(f"group_ids[{b}]: expected a hashable id, got {g!r}") from None


@dataclass(frozen=True)
class RePROConfig:
    """Settings of RePro scoring; defaults are the paper's (SPEC §7).

    The fields after ``boundary_suffixes`` reproduce the authors' code (SPEC §8) or tune the
    execution; none changes the default math. Frozen: change a setting with `replace` and assign
    the new config (``scorer.config = cfg.replace(...)``).
    """

    num_segments: int = 20  # k: how many high-entropy segment starts are scored
    stability_weight: float = 0.1  # w in S = (1 - w) S_magn + w S_stab
    # Weight of the process advantage in A + alpha * A_process (SPEC §6). score() never reads it:
    # the trainers do (RePROGRPOTrainer, the verl integration, `repro-fast train`), and a loop of
    # your own passes it as grpo_advantages(..., alpha=config.alpha).
    alpha: float = 0.1
    ema_decay: float = 0.99  # d of the NLL moving average used by the stability score
    temperature: float = 1.0  # tau: logits are divided by it before every softmax
    normalize: str = "group"  # scope of reward normalization: "group", "batch" or "none"
    answer_template: str = "\\boxed{{{answer}}}"  # rendered around the ground truth
    think_end: str | None = "</think>"  # end-of-thinking marker in the response text; None: none
    boundary_suffixes: tuple[str, ...] = ("\n\n", ".\n", "?\n")  # a segment starts after these
    # --- opt-in reproduction of the authors' code (SPEC §8); off by default ---
    answer_add_special_tokens: bool = False  # encode the answer with special tokens (BOS)
    # "text" (SPEC §3) or "token_id": a segment starts after the first id of an encoded suffix.
    boundary_mode: str = "text"
    # "text" (SPEC §1) or "token_id": the first id of the encoded think_end, F = E + 1.
    think_end_mode: str = "text"
    # "paper": S_stab = (1 + tau) / 2; "authors_code": their mono = tau + 1/2, in [-0.5, 1.5].
    stability_form: str = "paper"
    # --- execution ---
    token_budget: int = 16384  # most tokens (padding included) one micro-batch forward may hold

    def __post_init__(self) -> None:
        def fail(name: str, expected: str, error: type[Exception] = ValueError) -> None:
            raise error(f"RePROConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        check_int(self.num_segments, "RePROConfig.num_segments", 1, MAX_SEGMENTS)
        check_int(self.token_budget, "RePROConfig.token_budget", 1)
        check_real(self.stability_weight, "RePROConfig.stability_weight", 0.0, 1.0)
        check_real(self.ema_decay, "RePROConfig.ema_decay", 0.0, 1.0)
        check_real(self.alpha, "RePROConfig.alpha")
        check_real(self.temperature, "RePROConfig.temperature", *TEMPERATURE_RANGE)
        check_choice(self.normalize, "RePROConfig.normalize", NORMALIZE_MODES)
        check_choice(self.boundary_mode, "RePROConfig.boundary_mode", BOUNDARY_MODES)
        check_choice(self.think_end_mode, "RePROConfig.think_end_mode", THINK_END_MODES)
        check_choice(self.stability_form, "RePROConfig.stability_form", STABILITY_FORMS)
        if not isinstance(self.answer_template, str):
            fail("answer_template", "a str containing '{answer}'", TypeError)
        if "{answer}" not in self.answer_template:
            fail("answer_template", "a str containing '{answer}'")
        try:
            self.answer_template.format(answer="0")
        except (IndexError, KeyError, ValueError) as exc:
            raise ValueError(f"RePROConfig.answer_template: not a valid format string ({exc}); "
                             "write literal braces as '{{' and '}}'") from None
        if self.think_end is not None and not isinstance(self.think_end, str):
            fail("think_end", "a non-empty str or None", TypeError)
        if self.think_end == "":
            fail("think_end", "a non-empty str or None")
        suffixes = self.boundary_suffixes
        if not isinstance(suffixes, (tuple, list)) or not all(isinstance(s, str) for s in suffixes):
            fail("boundary_suffixes", "a tuple of non-empty str", TypeError)
        if not all(suffixes):
            fail("boundary_suffixes", "a tuple of non-empty str")
        object.__setattr__(self, "boundary_suffixes", tuple(suffixes))
        if not isinstance(self.answer_add_special_tokens, bool):
            fail("answer_add_special_tokens", "a bool", TypeError)

    @classmethod
    def authors_code(cls, **overrides) -> RePROConfig:
        """The configuration that reproduces the authors' verl code (SPEC §8), not the paper: answer
        encoded with special tokens, token-id boundaries and think end, their ``tau + 1/2`` stability
        term, and ``w = 0`` (their code computes that term, then drops it)."""
        fields = dict(answer_add_special_tokens=True, boundary_mode="token_id", think_end_mode="token_id",
                      stability_form="authors_code", stability_weight=0.0)
        return cls(**(fields | overrides))

    def replace(self, **changes) -> RePROConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
