"""The fast backend: one pass over each chain of thought, its KV cache reused by every answer copy.

Exact, not an approximation: SPEC §2 defines ``J(f)`` on the real sequence ``[q, y[0..f), a]``,
and under causal attention the answer tokens of that sequence see exactly the keys of
``[q, y[0..f)]`` plus the earlier answer tokens. So:

Phase 1 (one forward over ``[q, y]``, cache kept). The head gives log-prob and entropy of every
response position; after selection it also gives each copy's first answer token ``a_0``, read at
position ``|q| + P_j - 1`` of the same hidden states (no extra pass).

Phase 2 (one extend step over that cache). All ``m + 1`` copies ``a[0..|a|-1)`` of a trajectory
go in together (the last answer token is never an input). Copy ``j`` sits at positions
``|q| + P_j + i`` and sees cache keys ``[0, |q| + P_j)`` plus itself, causally::

    keys ->      cache: q  y0 y1 y2 y3 | copy0 | copy1 | copy2
    copy0 (P=0)  x  .  .  .  .         | \\     |       |
    copy1 (P=2)  x  x  x  .  .         |       | \\     |
    copy2 (P=4)  x  x  x  x  x         |       |       | \\

On CPU the pattern goes to the model as a 4-D additive attention mask (transformers passes a
4-D mask through unchanged to every attention implementation). On CUDA (or with
``REPRO_FAST_BACKEND=triton``) phase 2 runs `repro_fast.ops.prefix_attention` instead, plugged in
through transformers' attention interface (`repro_fast.backends.attention`): it skips the cache
tiles beyond every copy's prefix and reads each KV tile once for all query heads of a group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from repro_fast.backends.attention import PrefixMeta, prefix_attention_enabled, supports_prefix_kernel
from repro_fast.backends.common import Item, ModelAdapter, TokenStats, micro_batches, right_padded
from repro_fast.ops.logprob_entropy import _resolve_backend


@contextlib.contextmanager
def _no_op():
    yield


class FastBackend:
    name = "fast"

    def __init__(self, adapter: ModelAdapter, token_budget: int):
        self.adapter = adapter
        self.token_budget = token_budget
        self._check_model_supported(adapter.model)

    @staticmethod
    def _check_model_supported(model) -> None:
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        if getattr(cfg, "is_encoder_decoder", False):
            raise TypeError(f"model: {type(model).__name__} is an encoder-decoder; the fast backend needs a decoder-only causal LM")

    def _check_sliding_window(self, longest: int) -> None:
        """Phase 2 hands the model one explicit mask for every layer, so a sliding-window layer
        would see keys beyond its window. Only an issue past the window length: refuse there."""
        model = self.adapter.model
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        window = getattr(cfg, "sliding_window", None)
        if window and getattr(cfg, "use_sliding_window", True) is not False and longest > window:
            raise ValueError(
                f"responses: a prompt + response of {longest} tokens exceeds {type(model).__name__}'s "
                f"sliding window ({window}); the fast backend does not apply sliding windows in its "
                "answer-copy step. Use backend='naive' for such inputs"
            )

    def run(
        self,
        items: list[Item],
        select: Callable[[list[int], list[TokenStats]], list[list[int]]],
    ) -> tuple[list[TokenStats], list[list[int]], list[torch.Tensor]]:
        """Same contract as `NaiveBackend.run`: stats, points and ``J`` at every point."""
        self.use_prefix_kernel = (
            _resolve_backend(None, self.adapter.device) == "triton"
            and supports_prefix_kernel(self.adapter.model)
        )
        context = prefix_attention_enabled(self.adapter.model) if self.use_prefix_kernel else _no_op()
        with context:
            return self._run(items, select)

    def _run(self, items, select):
        stats: list[TokenStats | None] = [None] * len(items)
        points: list[list[int] | None] = [None] * len(items)
        answer_lp: list[torch.Tensor | None] = [None] * len(items)
        lengths = [len(it.prompt) + len(it.response) for it in items]
        self._check_sliding_window(max(lengths, default=0) + max((len(it.answer) for it in items), default=0))
        pending = []  # (batch, device tensor of copy totals): fetched once, at the end
        for batch in micro_batches(lengths, self.token_budget):
            pending.append((batch, self._run_micro_batch(items, batch, select, stats, points)))
        # One device-to-host copy for all micro-batches, so the CPU can queue the next
        # micro-batch's phase 1 while the GPU still runs this one's phase 2.
        if pending:
            totals = torch.cat([t for _, t in pending]).cpu()
            offset = 0
            for batch, _ in pending:
                for b in batch:
                    m1 = len(points[b])
                    answer_lp[b] = totals[offset : offset + m1] / len(items[b].answer)
                    offset += m1
        return stats, points, answer_lp  # type: ignore[return-value]

    def _run_micro_batch(self, items, batch, select, stats, points) -> torch.Tensor:
        """Phases 1 and 2 of one micro-batch; returns ``sum_i log p(a_i)`` of every copy (on the
        device, in batch-copy order) and fills ``stats`` and ``points``."""
        adapter, device = self.adapter, self.adapter.device
        seqs = [np.concatenate([items[b].prompt, items[b].response]) for b in batch]
        ids, mask2d, pos = right_padded(seqs, device)
        hidden, cache = adapter.hidden(ids, mask2d, pos, use_cache=True)
        if cache is None:
            raise TypeError(
                f"model: {type(adapter.model).__name__} returned no KV cache from its decoder; "
                "the fast backend reuses that cache for the answer copies. Use backend='naive'"
            )
        width = ids.shape[1]

        # Phase 1 head: every response position of the batch in one call.
        rows, targets = [], []
        for r, b in enumerate(batch):
            q, n = len(items[b].prompt), len(items[b].response)
            rows.append(hidden[r, q - 1 : q - 1 + n])
            targets.append(items[b].response)
        lp, ent = adapter.head_stats(torch.cat(rows), torch.from_numpy(np.concatenate(targets)).to(device))
        offset = 0
        for b in batch:
            n = len(items[b].response)
            stats[b] = TokenStats(lp[offset : offset + n], ent[offset : offset + n])
            offset += n
        for b, p in zip(batch, select(batch, [stats[b] for b in batch])):
            points[b] = p

        # First answer token of every copy: read off the phase-1 hidden states.
        first_index = np.concatenate([
            r * width + len(items[b].prompt) - 1 + np.asarray(points[b]) for r, b in enumerate(batch)
        ])
        first_rows = hidden.reshape(-1, hidden.shape[-1])[torch.from_numpy(first_index).to(device)]
        first_targets = torch.tensor(
            [int(items[b].answer[0]) for b in batch for _ in points[b]], device=device
        )
        first_lp, _ = adapter.head_stats(first_rows, first_targets)
        del hidden

        # Phase 2: the remaining answer tokens of every copy, in one extend step over the cache.
        rest_sum = torch.zeros_like(first_lp)
        if any(len(items[b].answer) > 1 for b in batch):
            rest_sum = self._extend(items, batch, points, cache, width, first_lp.shape[0])
        return first_lp + rest_sum

    def _extend(self, items, batch, points, cache, width: int, num_copies: int) -> torch.Tensor:
        """Sum of ``log p(a_i)`` for ``i >= 1`` of every copy, in batch-copy order."""
        adapter, device = self.adapter, self.adapter.device
        per_row = [len(points[b]) * (len(items[b].answer) - 1) for b in batch]
        c_max = max(per_row)
        ids = np.zeros((len(batch), c_max), dtype=np.int64)
        positions = np.zeros((len(batch), c_max), dtype=np.int64)
        limit = np.ones((len(batch), c_max), dtype=np.int64)  # cache keys [0, limit) visible
        copy_start = np.arange(c_max)[None].repeat(len(batch), 0)  # padding rows: see only self
        targets, copy_of_token, valid = [], [], np.zeros((len(batch), c_max), dtype=bool)
        copy_index = 0
        for r, b in enumerate(batch):
            q, a = len(items[b].prompt), items[b].answer
            span = len(a) - 1
            for j, p in enumerate(points[b]):
                sl = slice(j * span, (j + 1) * span)
                ids[r, sl] = a[:-1]
                positions[r, sl] = q + p + np.arange(span)
                limit[r, sl] = q + p
                copy_start[r, sl] = j * span
                valid[r, sl] = True
                targets.append(a[1:])
                copy_of_token.append(np.full(span, copy_index + j))
            copy_index += len(points[b])
        ids_t = torch.from_numpy(ids).to(device)
        pos_t = torch.from_numpy(positions).to(device)
        mask = self._copy_mask(
            torch.from_numpy(limit).to(device), torch.from_numpy(copy_start).to(device), width
        )
        extra = {}
        if self.use_prefix_kernel:
            extra["repro_prefix"] = PrefixMeta(
                torch.from_numpy(limit).to(device, torch.int32),
                torch.from_numpy(copy_start).to(device, torch.int32),
                backend="triton",
            )
        hidden, _ = adapter.hidden(ids_t, mask, pos_t, cache=cache, use_cache=True, **extra)
        # Gather the real copy tokens by flat index (built on the host: no device sync).
        flat = torch.from_numpy(np.flatnonzero(valid)).to(device)
        lp, _ = adapter.head_stats(
            hidden.reshape(-1, hidden.shape[-1])[flat],
            torch.from_numpy(np.concatenate(targets)).to(device),
        )
        sums = torch.zeros(num_copies, dtype=lp.dtype, device=device)
        sums.index_add_(0, torch.from_numpy(np.concatenate(copy_of_token)).to(device), lp)
        return sums

    def _copy_mask(self, limit: torch.Tensor, copy_start: torch.Tensor, width: int) -> torch.Tensor:
        """Additive 4-D mask ``[B, 1, C, width + C]``: prefix-limited cache keys, then causal
        attention inside each copy."""
        batch, c_max = limit.shape
        keys = torch.arange(width + c_max, device=limit.device)
        query = torch.arange(c_max, device=limit.device)[None, :, None]  # [1, C, 1]
        in_cache = keys[None, None, :] < width
        own = keys[None, None, :] - width  # index among the copy tokens
        allowed = torch.where(
            in_cache,
            keys[None, None, :] < limit[:, :, None],
            (own >= copy_start[:, :, None]) & (own <= query),
        )
        dtype = self.adapter.head.weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=limit.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None]
