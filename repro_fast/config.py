"""`RePROConfig`: every knob of RePro scoring (SPEC §1-8), validated on construction."""

from __future__ import annotations

import dataclasses
import math
import numbers
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


@dataclass(frozen=True)
class RePROConfig:
    """Settings of RePro scoring. Defaults are the paper's (SPEC §7).

    The fields after ``boundary_suffixes`` reproduce the authors' code (SPEC §8)
    and tune the execution; none of them changes the default math. Frozen: change a setting
    with `replace` and assign the new config (``scorer.config = cfg.replace(...)``).

    Attributes:
        num_segments: ``k``, how many high-entropy segment starts are scored.
        stability_weight: ``w`` in ``S = (1 - w) S_magn + w S_stab``.
        alpha: weight of the process advantage in ``A + alpha * A_process``.
        ema_decay: ``d`` of the NLL moving average used by the stability score.
        temperature: ``tau``; logits are divided by it before every softmax.
        normalize: scope of reward normalization: ``"group"``, ``"batch"`` or ``"none"``.
        answer_template: format string with ``{answer}``, rendered around the ground truth.
        think_end: end-of-thinking marker searched in the response text; ``None`` disables it.
        boundary_suffixes: a segment starts after text that ends with one of these.
        answer_add_special_tokens: authors' code: encode the answer with special tokens (BOS).
        boundary_mode: ``"text"`` (SPEC §3) or ``"token_id"`` (authors' code: a segment
            starts after a token whose id is the first id of an encoded suffix).
        think_end_mode: ``"text"`` (SPEC §1) or ``"token_id"`` (authors' code: the first
            token id of the encoded ``think_end``, ``F = E + 1``).
        stability_form: ``"paper"``: ``S_stab = (1 + tau) / 2``; ``"authors_code"``: their
            ``mono = tau + 1/2`` in [-0.5, 1.5] (SPEC §8).
        token_budget: most tokens (padding included) one micro-batch forward may hold.
    """

    num_segments: int = 20
    stability_weight: float = 0.1
    alpha: float = 0.1
    ema_decay: float = 0.99
    temperature: float = 1.0
    normalize: str = "group"
    answer_template: str = "\\boxed{{{answer}}}"
    think_end: str | None = "</think>"
    boundary_suffixes: tuple[str, ...] = ("\n\n", ".\n", "?\n")
    # --- opt-in reproduction of the authors' code (SPEC §8); off by default ---
    answer_add_special_tokens: bool = False
    boundary_mode: str = "text"
    think_end_mode: str = "text"
    stability_form: str = "paper"
    # --- execution ---
    token_budget: int = 16384

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(
                f"RePROConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
            )

        def check_real(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"RePROConfig.{name}: expected a real number, got {type(value).__name__}"
                )
            try:
                value = float(value)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                fail(name, "a finite number")
            return value

        for name in ("num_segments", "token_budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"RePROConfig.{name}: expected an int, got {type(value).__name__}"
                )
        if not 1 <= self.num_segments <= MAX_SEGMENTS:
            fail("num_segments", f"an int in [1, {MAX_SEGMENTS}] (more than any chain of thought has segment starts)")
        if self.token_budget < 1:
            fail("token_budget", "an int >= 1")
        for name in ("stability_weight", "ema_decay"):
            if not 0.0 <= check_real(name) <= 1.0:
                fail(name, "a number in [0, 1]")
        check_real("alpha")
        lo, hi = TEMPERATURE_RANGE
        if not lo <= check_real("temperature") <= hi:
            fail("temperature", f"a number in [{lo:g}, {hi:g}] (logits / tau must stay finite and informative)")
        if self.normalize not in NORMALIZE_MODES:
            fail("normalize", f"one of {NORMALIZE_MODES}")
        if self.boundary_mode not in BOUNDARY_MODES:
            fail("boundary_mode", f"one of {BOUNDARY_MODES}")
        if self.think_end_mode not in THINK_END_MODES:
            fail("think_end_mode", f"one of {THINK_END_MODES}")
        if self.stability_form not in STABILITY_FORMS:
            fail("stability_form", f"one of {STABILITY_FORMS}")
        if not isinstance(self.answer_template, str) or "{answer}" not in self.answer_template:
            fail("answer_template", "a str containing '{answer}'")
        try:
            self.answer_template.format(answer="0")
        except (IndexError, KeyError, ValueError) as exc:
            raise ValueError(
                f"RePROConfig.answer_template: not a valid format string ({exc}); "
                "write literal braces as '{{' and '}}'"
            ) from None
        if self.think_end is not None and (not isinstance(self.think_end, str) or not self.think_end):
            fail("think_end", "a non-empty str or None")
        if isinstance(self.boundary_suffixes, str) or not isinstance(self.boundary_suffixes, (tuple, list)):
            fail("boundary_suffixes", "a tuple of non-empty str")
        object.__setattr__(self, "boundary_suffixes", tuple(self.boundary_suffixes))
        if not all(isinstance(s, str) and s for s in self.boundary_suffixes):
            fail("boundary_suffixes", "a tuple of non-empty str")
        if not isinstance(self.answer_add_special_tokens, bool):
            fail("answer_add_special_tokens", "a bool")

    @classmethod
    def authors_code(cls, **overrides) -> "RePROConfig":
        """The configuration that reproduces the authors' verl code (SPEC §8), not the paper.

        Answer encoded with special tokens, token-id boundaries and think end (first id of the
        marker), their ``tau + 1/2`` stability term, and ``w = 0`` (their code computes that
        term, then drops it; its commented-out ``S_magn + 0.1 mono`` is not reproduced).
        """
        fields = dict(
            answer_add_special_tokens=True,
            boundary_mode="token_id",
            think_end_mode="token_id",
            stability_form="authors_code",
            stability_weight=0.0,
        )
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **changes) -> "RePROConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
