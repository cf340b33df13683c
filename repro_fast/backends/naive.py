"""The naive backend: one forward per scored prefix, the way the paper's code does it.

For every point ``P_j`` it runs the real sequence ``[q, y[0..P_j), a]`` through the model, plus
one forward over ``[q, y]`` for the token statistics: ``k + 2`` forwards per rollout. It is the
correctness reference of the fast backend and the baseline of every speedup, so it is the
strongest honest form of that method: sequences sorted by length and packed into micro-batches
under a token budget (little padding, never all copies at once), and the LM head applied only at
the rows each quantity needs (the answer positions for ``J``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from repro_fast.backends.common import Item, ModelAdapter, TokenStats, micro_batches, right_padded


class NaiveBackend:
    name = "naive"

    def __init__(self, adapter: ModelAdapter, token_budget: int):
        self.adapter = adapter
        self.token_budget = token_budget

    def run(
        self,
        items: list[Item],
        select: Callable[[list[int], list[TokenStats]], list[list[int]]],
    ) -> tuple[list[TokenStats], list[list[int]], list[torch.Tensor]]:
        """Token statistics of every response, then ``J`` at every selected point.

        ``select(indices, stats)`` returns the points ``P`` of those trajectories. Returns the stats, the
        points and one fp32 tensor ``[m + 1]`` of ``J(P_j)`` per trajectory.
        """
        stats = self.token_stats(items)
        points = select(list(range(len(items))), stats)
        return stats, points, self.answer_logprobs(items, points)

    def token_stats(self, items: list[Item]) -> list[TokenStats]:
        """One forward over ``[q, y]`` per trajectory; the head on the n response positions."""
        device = self.adapter.device
        stats: list[TokenStats | None] = [None] * len(items)
        seqs = [np.concatenate([it.prompt, it.response[:-1]]) for it in items]
        for batch in micro_batches([len(s) for s in seqs], self.token_budget):
            hidden, _ = self.adapter.hidden(*right_padded([seqs[b] for b in batch], device))
            rows, targets = [], []
            for r, b in enumerate(batch):
                q, n = len(items[b].prompt), len(items[b].response)
                rows.append(hidden[r, q - 1 : q - 1 + n])  # position t predicts y[t - |q| + 1]
                targets.append(items[b].response)
            lp, ent = self.adapter.head_stats(
                torch.cat(rows), torch.from_numpy(np.concatenate(targets)).to(device)
            )
            offset = 0
            for b in batch:
                n = len(items[b].response)
                stats[b] = TokenStats(lp[offset : offset + n], ent[offset : offset + n])
                offset += n
        return stats  # type: ignore[return-value]

    def answer_logprobs(self, items: list[Item], points: list[list[int]]) -> list[torch.Tensor]:
        """``J(P_j)`` from one real sequence ``[q, y[0..P_j), a]`` per point."""
        device = self.adapter.device
        jobs = [(b, j, p) for b, pts in enumerate(points) for j, p in enumerate(pts)]
        # The last answer token is never an input: nothing is predicted from it.
        seqs = [
            np.concatenate([items[b].prompt, items[b].response[:p], items[b].answer[:-1]])
            for b, _, p in jobs
        ]
        means, order = [], []  # per micro-batch: device tensor of J values, and their jobs
        for batch in micro_batches([len(s) for s in seqs], self.token_budget):
            hidden, _ = self.adapter.hidden(*right_padded([seqs[i] for i in batch], device))
            rows, targets, owner = [], [], []
            for r, i in enumerate(batch):
                b, _, p = jobs[i]
                start = len(items[b].prompt) + p - 1  # predicts a_0
                size = len(items[b].answer)
                rows.append(hidden[r, start : start + size])
                targets.append(items[b].answer)
                owner.append(np.full(size, r))
            lp, _ = self.adapter.head_stats(
                torch.cat(rows), torch.from_numpy(np.concatenate(targets)).to(device)
            )
            sizes = torch.tensor([len(items[jobs[i][0]].answer) for i in batch], device=device)
            sums = torch.zeros(len(batch), dtype=lp.dtype, device=device)
            sums.index_add_(0, torch.from_numpy(np.concatenate(owner)).to(device), lp)
            means.append(sums / sizes)
            order.extend(batch)
        # One device-to-host copy for all sequences, not one per sequence.
        values = torch.cat(means).cpu() if means else torch.zeros(0)
        out = [torch.empty(len(pts), dtype=torch.float32) for pts in points]
        for i, value in zip(order, values.tolist()):
            b, j, _ = jobs[i]
            out[b][j] = value
        return out
