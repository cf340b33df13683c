"""How sequences are laid out in batches: micro-batches under the token budget, the padding DP of
the fast backend, right-padded model inputs, and values stored back to back -> ``[N, width]``.
Pure numpy / torch: no model, no config."""

from __future__ import annotations

import numpy as np
import torch

# The longest run of sequences one micro-batch may take, in the cut-point search: keeps the dynamic
# program O(n * MAX_RUN) on huge calls; a batch of 512 rollouts already amortizes a forward.
MAX_RUN = 512


def micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Sequence indices, longest first, in micro-batches of padded size ``B * max_len`` within
    ``token_budget`` (a longer sequence gets a batch of its own)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def padding_aware_batches(lengths: list[int], extra: list[int], token_budget: int,
                          overhead: int) -> list[list[int]]:
    """Micro-batches for a two-step pass (``lengths`` tokens in phase 1, then ``extra`` in phase 2),
    each padded to its longest member in both steps: sequences sorted longest first, cut into runs
    that minimize ``sum_g B_g * (max length_g + max extra_g)`` plus ``overhead`` tokens per forward,
    with ``B_g * max length_g <= token_budget`` (a dynamic program over the cut points)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], -extra[i]))
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        widest = 0
        for start in range(end - 1, max(-1, end - 1 - MAX_RUN), -1):
            widest = max(widest, extra[order[start]])
            longest = lengths[order[start]]  # sorted: the first of the run is the longest
            size = end - start
            if size > 1 and size * longest > token_budget:
                break
            cost = best[start] + size * (longest + widest) + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs, end = [], n
    while end > 0:
        runs.append(order[cut[end] : end])
        end = cut[end]
    return runs[::-1]


def right_padded(seqs: list[np.ndarray], device):
    """``input_ids``, 2-D ``attention_mask`` and ``position_ids`` of right-padded sequences."""
    lengths = np.array([len(s) for s in seqs])
    mask = np.arange(lengths.max())[None] < lengths[:, None]
    ids = np.zeros(mask.shape, dtype=np.int64)
    ids[mask] = np.concatenate(seqs)
    position_ids = torch.arange(mask.shape[1], device=device)[None].expand(*mask.shape)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask.astype(np.int64)).to(device), position_ids


def padded(packed: torch.Tensor, lengths: list[int], width: int) -> torch.Tensor:
    """Values stored back to back (``lengths[b]`` each) -> ``[N, width]``, 0 elsewhere (differentiable)."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([np.arange(n) for n in lengths]) if lengths else np.zeros(0, dtype=np.int64)
    index = (torch.from_numpy(rows).to(packed.device), torch.from_numpy(cols).to(packed.device))
    return packed.new_zeros(len(lengths), width).index_put(index, packed)
