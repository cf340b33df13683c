"""What a backend is: the `Backend` protocol both backends implement, and the `Item` they score.

A backend turns validated trajectories into the two things that depend on how the model is run:
the token statistics (phase 1) and ``J`` at every scored point (phase 2). Everything else
(planning, selection, rewards) is shared and lives outside `repro_fast.backends`. Backends take
plans and points as data and return tensors; they never call back into the scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from repro_fast.model import ModelAdapter, ResponsePass


@dataclass
class Item:
    """One validated trajectory as the backends see it."""

    prompt: np.ndarray  # int64 [|q|], |q| >= 1
    response: np.ndarray  # int64 [n]
    answer: np.ndarray  # int64 [|a|], |a| >= 1


class Backend(Protocol):
    """How `RePROScorer` runs the model: built from the config (``adapter`` carries its temperature,
    ``token_budget`` its `RePROConfig.token_budget`), then, per `score` call::

        for group in backend.groups(items, counts):
            phase1 = backend.response_pass(items, group)
            points = select_points(phase1.entropies, ...)            # SPEC §4, shared
            values = backend.mean_answer_logprobs(items, group, points, counts_of_group, phase1)
    """

    name: str  # "naive" or "fast"
    adapter: ModelAdapter  # the model as decoder + LM head, at the config's temperature
    token_budget: int  # most tokens (padding included) one micro-batch forward may hold

    def groups(self, items: list[Item], counts: list[int]) -> list[list[int]]:
        """The call's micro-batches: lists of indices into ``items``, each trajectory in exactly one.
        ``counts[b]``: how many points trajectory ``b`` has (``Plan.num_points``), known before any
        forward pass."""
        ...

    def response_pass(self, items: list[Item], group: list[int]) -> ResponsePass:
        """Phase 1 of one micro-batch: log-prob and entropy of every response token at temperature
        tau, back to back in ``group`` order (the fast backend also keeps hidden states and cache)."""
        ...

    def mean_answer_logprobs(self, items: list[Item], group: list[int], points: torch.Tensor,
                             counts: list[int], phase1: ResponsePass) -> torch.Tensor:
        """``J(P_j)`` (SPEC §2) of every point of the micro-batch, back to back like ``points``
        (``counts[r]`` for its r-th trajectory), on the model's device. ``phase1``: what
        `response_pass` returned for this group, or a trainer's recorded pass (`repro_fast.phase1`)."""
        ...
