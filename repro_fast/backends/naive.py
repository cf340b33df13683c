"""The naive backend: one forward per scored prefix ``[q, y[0..P_j), a]`` plus one over ``[q, y]``
(``k + 2`` per rollout), the way the paper's code does it. As the fast backend's correctness
reference and the baseline of every speedup it is batched honestly: sorted by length into
micro-batches under a token budget, the LM head only on the rows each quantity needs."""

from __future__ import annotations

import numpy as np
import torch

from repro_fast.backends.base import Item
from repro_fast.batching import micro_batches, right_padded
from repro_fast.model import ModelAdapter, ResponsePass


class NaiveBackend:
    """`Backend` with one forward per scored prefix (module docstring)."""

    name = "naive"

    def __init__(self, adapter: ModelAdapter, token_budget: int):
        self.adapter = adapter
        self.token_budget = token_budget

    def groups(self, items: list[Item], counts: list[int]) -> list[list[int]]:
        """One group: the forwards are batched by length across the whole call."""
        return [list(range(len(items)))] if items else []

    def response_pass(self, items: list[Item], group: list[int]) -> ResponsePass:
        """The forward over ``[q, y]``, micro-batched; results in ``group`` order."""
        chosen = [items[b] for b in group]
        lps, ents = [None] * len(chosen), [None] * len(chosen)
        for mb in micro_batches([len(it.prompt) + len(it.response) for it in chosen], self.token_budget):
            out = self.adapter.response_pass([chosen[r].prompt for r in mb], [chosen[r].response for r in mb])
            sizes = [len(chosen[r].response) for r in mb]
            for r, lp, ent in zip(mb, out.logprobs.split(sizes), out.entropies.split(sizes)):
                lps[r], ents[r] = lp, ent
        return ResponsePass(torch.cat(lps), torch.cat(ents))

    def mean_answer_logprobs(self, items: list[Item], group: list[int], points: torch.Tensor,
                             counts: list[int], phase1: ResponsePass) -> torch.Tensor:
        """``J(P_j)`` (the mean log-prob of the answer after prefix ``P_j``) from one real sequence
        ``[q, y[0..P_j), a]`` per point."""
        device = self.adapter.device
        jobs = [(items[b], p) for b, p in zip(np.repeat(group, counts).tolist(), points.cpu().tolist())]
        # The last answer token is never an input: nothing is predicted from it.
        seqs = [np.concatenate([it.prompt, it.response[:p], it.answer[:-1]]) for it, p in jobs]
        out = torch.empty(len(jobs), dtype=torch.float64, device=device)
        for mb in micro_batches([len(s) for s in seqs], self.token_budget):
            hidden, _ = self.adapter.run_decoder(*right_padded([seqs[i] for i in mb], device))
            picked = [jobs[i] for i in mb]
            # Row r, position |q| + P - 1 predicts a_0.
            rows = [hidden[r, len(it.prompt) + p - 1 :][: len(it.answer)] for r, (it, p) in enumerate(picked)]
            targets = torch.from_numpy(np.concatenate([it.answer for it, _ in picked])).to(device)
            lp, _ = self.adapter.head_stats(torch.cat(rows), targets, with_entropy=False)
            sizes = [len(it.answer) for it, _ in picked]
            sums = torch.stack([part.sum() for part in lp.split(sizes)]).double()
            out[torch.tensor(mb, device=device)] = sums / torch.tensor(sizes, dtype=sums.dtype, device=device)
        return out
