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
        select,
    ) -> tuple[list[TokenStats], list[list[int]], list[torch.Tensor]]:
        """Same results as `NaiveBackend.run`: stats, points and ``J`` at every point. ``select``
        is the scorer's selector; this backend uses its ``on_device`` form, which keeps the points
        on the device so that phase 2 needs no host round trip."""
        self.use_prefix_kernel = (
            _resolve_backend(None, self.adapter.device) == "triton"
            and supports_prefix_kernel(self.adapter.model)
        )
        context = prefix_attention_enabled(self.adapter.model) if self.use_prefix_kernel else _no_op()
        with context:
            return self._run(items, select)

    def _run(self, items, select):
        stats: list[TokenStats | None] = [None] * len(items)
        lengths = [len(it.prompt) + len(it.response) for it in items]
        self._check_sliding_window(max(lengths, default=0) + max((len(it.answer) for it in items), default=0))
        done = []  # (batch, points [B, k+2], counts [B], totals [B, k+2]), all on the device
        for batch in micro_batches(lengths, self.token_budget):
            done.append((batch, *self._run_micro_batch(items, batch, select, stats)))
        # The only host round trip of the whole call: points and answer log-probs of every
        # micro-batch at once, so the GPU never waits for Python between the two phases.
        points: list[list[int] | None] = [None] * len(items)
        answer_lp: list[torch.Tensor | None] = [None] * len(items)
        if done:
            all_points = torch.cat([d[1] for d in done]).cpu()
            all_counts = torch.cat([d[2] for d in done]).cpu().tolist()
            all_totals = torch.cat([d[3] for d in done]).cpu()
            row = 0
            for batch, *_ in done:
                for b in batch:
                    m1 = all_counts[row]
                    points[b] = all_points[row, :m1].tolist()
                    answer_lp[b] = all_totals[row, :m1] / len(items[b].answer)
                    row += 1
        return stats, points, answer_lp  # type: ignore[return-value]

    def _run_micro_batch(self, items, batch, select, stats):
        """Phases 1 and 2 of one micro-batch, with no host sync. Fills ``stats``; returns the
        points ``[B, k + 2]`` (-1 padded), their counts ``[B]`` and each copy's
        ``sum_i log p(a_i)`` ``[B, k + 2]``, all on the device."""
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
        points, counts = select.on_device(batch, [stats[b] for b in batch])
        slots = points.shape[1]  # k + 2
        valid = torch.arange(slots, device=device)[None] < counts[:, None]

        # First answer token of every copy: read off the phase-1 hidden states at |q| + P_j - 1.
        prompt_len = torch.tensor([len(items[b].prompt) for b in batch], device=device)
        row_start = torch.arange(len(batch), device=device) * width + prompt_len - 1
        first_index = (row_start[:, None] + points.clamp_min(0)).reshape(-1)
        first_answer = torch.tensor([int(items[b].answer[0]) for b in batch], device=device)
        first_lp, _ = adapter.head_stats(
            hidden.reshape(-1, hidden.shape[-1])[first_index],
            first_answer[:, None].expand(len(batch), slots).reshape(-1),
        )
        totals = first_lp.view(len(batch), slots)
        del hidden

        # Phase 2: the remaining answer tokens of every copy, in one extend step over the cache.
        if any(len(items[b].answer) > 1 for b in batch):
            totals = totals + self._extend(items, batch, points, counts, prompt_len, cache, width)
        return points, counts, torch.where(valid, totals, 0.0)

    def _extend(self, items, batch, points, counts, prompt_len, cache, width: int) -> torch.Tensor:
        """``sum_{i >= 1} log p(a_i)`` of every copy ``[B, k + 2]``, built on the device.

        Row r holds its copies back to back: copy token c is answer token i = c mod span of
        copy j = c div span (span = |a| - 1). Padding tokens (beyond the row's copies) see cache
        key 0 and themselves only, and are dropped from the sums."""
        adapter, device = self.adapter, self.adapter.device
        slots = points.shape[1]
        answers = [items[b].answer for b in batch]
        span_host = [len(a) - 1 for a in answers]
        c_max = slots * max(span_host)
        answer_pad = np.zeros((len(batch), max(len(a) for a in answers)), dtype=np.int64)
        for r, a in enumerate(answers):
            answer_pad[r, : len(a)] = a
        answer_pad = torch.from_numpy(answer_pad).to(device)
        span = torch.tensor(span_host, device=device)[:, None]
        c = torch.arange(c_max, device=device)[None].expand(len(batch), c_max)
        span_safe = span.clamp_min(1)
        j = (c // span_safe).clamp_max(slots - 1)
        i = c % span_safe
        valid = (span > 0) & (c < slots * span) & (c // span_safe < counts[:, None])
        prefix = prompt_len[:, None] + points.gather(1, j).clamp_min(0)  # |q| + P_j
        ids = torch.where(valid, answer_pad.gather(1, i), 0)
        positions = torch.where(valid, prefix + i, 0)
        limit = torch.where(valid, prefix, 1)  # cache keys [0, limit) visible
        copy_start = torch.where(valid, j * span_safe, c)  # padding: only itself
        mask = self._copy_mask(limit, copy_start, width)
        extra = {}
        if self.use_prefix_kernel:
            extra["repro_prefix"] = PrefixMeta(
                limit.to(torch.int32), copy_start.to(torch.int32), backend="triton"
            )
        hidden, _ = adapter.hidden(ids, mask, positions, cache=cache, use_cache=True, **extra)
        targets = answer_pad.gather(1, (i + 1).clamp_max(answer_pad.shape[1] - 1))
        lp, _ = adapter.head_stats(hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1))
        lp = torch.where(valid, lp.view(len(batch), c_max), 0.0)
        return torch.zeros(len(batch), slots, dtype=lp.dtype, device=device).scatter_add_(1, j, lp)

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
