"""SPEC §4 on the device: the scored points of a micro-batch from its response entropies and its
plans' candidates (entropy top-k, ties to the smaller index), in one `ops.segment_select` launch
and one gather, with no host sync."""

from __future__ import annotations

import numpy as np
import torch

from repro_fast import ops
from repro_fast.batching import padded
from repro_fast.segments import Plan


def select_points(
    entropies: torch.Tensor, lengths: list[int], plans: list[Plan], k: int, kernels: str
) -> torch.Tensor:
    """SPEC §4: ``P = [0, top-k candidates by entropy (ascending), F]`` of some trajectories.

    ``entropies``: their response entropies back to back (``lengths[b]`` each). Returns their
    points back to back (``plans[b].num_points(k)`` each, sorted, distinct), int64 on the same
    device: one `ops.segment_select` launch and one gather, no host sync.
    """
    device, B = entropies.device, len(plans)
    n_max = max(max(lengths, default=0), 1)
    candidates = np.zeros((B, n_max), dtype=bool)
    for b, plan in enumerate(plans):
        candidates[b, plan.candidates] = True
    starts, _ = ops.segment_select(
        padded(entropies, lengths, n_max), torch.from_numpy(candidates).to(device), k, backend=kernels
    )
    # One gather from [0, F_0, ..., F_{B-1}, starts (row-major)]: per trajectory 0, its selected
    # starts (ascending), then F unless the response is empty (F = 0 coincides with P_0).
    width = starts.shape[1]
    source = torch.cat([torch.tensor([0] + [p.think_end for p in plans], device=device), starts.reshape(-1)])
    index = []
    for b, plan in enumerate(plans):
        chosen = 1 + B + b * width + np.arange(min(k, len(plan.candidates)))
        index += [0, *chosen.tolist()] + ([1 + b] if plan.think_end > 0 else [])
    return source[torch.tensor(index, dtype=torch.long, device=device)]
