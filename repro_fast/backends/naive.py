"""The naive backend: one forward per scored prefix, the way the paper's code does it.

For every point ``P_j`` it runs the real sequence ``[q, y[0..P_j), a]`` through the model, plus
one forward over ``[q, y]`` for the token statistics: ``k + 2`` forwards per rollout. It is the
correctness reference of the fast backend and the baseline of every speedup, so it is the
strongest honest form of that method: sequences sorted by length and packed into micro-batches
under a token budget (little padding, never all copies at once), the LM head applied only at
the rows each quantity needs, and one host copy of the points per call.
"""

from __future__ import annotations

import numpy as np
import torch

from repro_fast.backends.common import Item, ModelAdapter, ResponsePass, micro_batches, right_padded


class NaiveBackend:
    name = "naive"

    def __init__(self, adapter: ModelAdapter, token_budget: int):
        self.adapter = adapter
        self.token_budget = token_budget

    def groups(self, items: list[Item], counts: list[int]) -> list[list[int]]:
        """One group: the forwards are batched by length across the whole call."""
        return [list(range(len(items)))] if items else []

    def token_stats(self, items: list[Item], group: list[int]) -> ResponsePass:
        """The forward over ``[q, y]``, micro-batched; results in ``group`` order."""
        lengths = [len(items[b].prompt) + len(items[b].response) for b in group]
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(group)  # type: ignore[list-item]
        for mb in micro_batches(lengths, self.token_budget):
            out = self.adapter.response_pass(
                [items[group[r]].prompt for r in mb], [items[group[r]].response for r in mb]
            )
            sizes = [len(items[group[r]].response) for r in mb]
            for r, lp, ent in zip(mb, out.logprobs.split(sizes), out.entropies.split(sizes)):
                pieces[r] = (lp, ent)
        return ResponsePass(torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces]))

    def answer_logprobs(
        self, items: list[Item], group: list[int], points: torch.Tensor, counts: list[int], phase1: ResponsePass
    ) -> torch.Tensor:
        """``J(P_j)`` from one real sequence ``[q, y[0..P_j), a]`` per point."""
        device = self.adapter.device
        owner = np.repeat(np.asarray(group), counts)
        jobs = list(zip(owner.tolist(), points.cpu().tolist()))
        # The last answer token is never an input: nothing is predicted from it.
        seqs = [np.concatenate([items[b].prompt, items[b].response[:p], items[b].answer[:-1]]) for b, p in jobs]
        out = torch.empty(len(jobs), dtype=torch.float64, device=device)
        for mb in micro_batches([len(s) for s in seqs], self.token_budget):
            hidden, _ = self.adapter.hidden(*right_padded([seqs[i] for i in mb], device))
            rows, targets, sizes = [], [], []
            for r, i in enumerate(mb):
                b, p = jobs[i]
                start = len(items[b].prompt) + p - 1  # predicts a_0
                sizes.append(len(items[b].answer))
                rows.append(hidden[r, start : start + sizes[-1]])
                targets.append(items[b].answer)
            lp, _ = self.adapter.head_stats(
                torch.cat(rows), torch.from_numpy(np.concatenate(targets)).to(device), with_entropy=False
            )
            sums = torch.stack([part.sum() for part in lp.split(sizes)])
            out[torch.tensor(mb, device=device)] = sums.double() / torch.tensor(sizes, dtype=torch.float64, device=device)
        return out
