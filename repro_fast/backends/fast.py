"""The fast backend: one pass over each chain of thought, its KV cache reused by every answer copy.

Exact, not an approximation: SPEC §2 defines ``J(f)`` on the real sequence ``[q, y[0..f), a]``,
and under causal attention the answer tokens of that sequence see exactly the keys of
``[q, y[0..f)]`` plus the earlier answer tokens. So, per micro-batch:

Phase 1 (`token_stats`: one forward over ``[q, y]``, cache kept) gives log-prob and entropy of
every response position; after selection the same hidden states give each copy's first answer
token ``a_0``, read at position ``|q| + P_j - 1`` (no extra pass).

Phase 2 (`answer_logprobs`: one extend step over that cache). Trajectory ``b`` brings its
``m_b + 1`` copies of ``a[0..|a|-1)`` (the last answer token is never an input), packed back to
back in its row: as many as it has points, not ``k + 2``. Copy ``j`` sits at positions
``|q| + P_j + i`` and sees cache keys ``[0, |q| + P_j)`` plus itself, causally::

    keys ->      cache: q  y0 y1 y2 y3 | copy0 | copy1 | copy2
    copy0 (P=0)  x  .  .  .  .         | \\     |       |
    copy1 (P=2)  x  x  x  .  .         |       | \\     |
    copy2 (P=4)  x  x  x  x  x         |       |       | \\

The copy counts come from the plan (`Plan.num_points`), so the layout is built on the host
before phase 1 runs and only the point values stay on the device: no host sync between the
phases. Rows are padded to the micro-batch's longest row only.

On CPU the pattern goes to the model as a 4-D attention mask (transformers passes a 4-D mask
through unchanged). With Triton kernels (CUDA), phase 2 runs `repro_fast.ops.prefix_attention`
instead, through transformers' attention interface (`repro_fast.backends.attention`), and no
mask is built at all.
"""

from __future__ import annotations

import numpy as np
import torch

from repro_fast.backends.attention import PrefixMeta, phase2_attention, supports_prefix_kernel, text_config
from repro_fast.backends.common import Item, ModelAdapter, ResponsePass, padding_aware_batches
from repro_fast.ops import prefix_attention_mask


class FastBackend:
    name = "fast"

    def __init__(self, adapter: ModelAdapter, token_budget: int, kernels: str):
        model = adapter.model
        if getattr(text_config(model), "is_encoder_decoder", False):
            raise TypeError(
                f"model: {type(model).__name__} is an encoder-decoder; the fast backend needs a "
                "decoder-only causal LM"
            )
        self.adapter = adapter
        self.token_budget = token_budget
        self.prefix_kernel = kernels == "triton" and supports_prefix_kernel(model)

    def groups(self, items: list[Item], counts: list[int]) -> list[list[int]]:
        """Micro-batches under the token budget, each keeping one KV cache alive, cut so that
        phase 1 and phase 2 together pad as little as possible (``counts``: copies per
        trajectory, from the plans)."""
        lengths = [len(it.prompt) + len(it.response) for it in items]
        self._check_sliding_window(max(lengths, default=0) + max((len(it.answer) for it in items), default=0))
        copies = [c * (len(it.answer) - 1) for c, it in zip(counts, items)]
        # A forward's fixed cost in tokens: small on a CPU, thousands on a GPU.
        overhead = 4096 if self.adapter.device.type == "cuda" else 256
        return padding_aware_batches(lengths, copies, self.token_budget, overhead)

    def _check_sliding_window(self, longest: int) -> None:
        """Phase 2 hands the model one explicit mask for every layer, so a sliding-window layer
        would see keys beyond its window. Only an issue past the window length: refuse there."""
        cfg = text_config(self.adapter.model)
        window = getattr(cfg, "sliding_window", None)
        if window and getattr(cfg, "use_sliding_window", True) is not False and longest > window:
            raise ValueError(
                f"responses: a prompt + response of {longest} tokens exceeds "
                f"{type(self.adapter.model).__name__}'s sliding window ({window}); the fast backend "
                "does not apply sliding windows in its answer-copy step. Use backend='naive'"
            )

    def token_stats(self, items: list[Item], group: list[int]) -> ResponsePass:
        """Phase 1: the forward over ``[q, y]`` with its hidden states and cache kept."""
        return self.adapter.response_pass(
            [items[b].prompt for b in group], [items[b].response for b in group], keep=True
        )

    def answer_logprobs(
        self, items: list[Item], group: list[int], points: torch.Tensor, counts: list[int], phase1: ResponsePass
    ) -> torch.Tensor:
        """``J(P_j)`` of every point of the group, back to back like ``points``."""
        adapter, device = self.adapter, self.adapter.device
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        prompt_len = np.array([len(items[b].prompt) for b in group])
        answers = [items[b].answer for b in group]
        owner = np.repeat(np.arange(len(group)), counts)  # row of every point
        # First answer token of every copy: phase-1 hidden state at |q| + P_j - 1.
        row_start = torch.from_numpy(owner * phase1.width + prompt_len[owner] - 1).to(device)
        first = torch.from_numpy(np.array([answers[r][0] for r in owner], dtype=np.int64)).to(device)
        hidden = phase1.hidden.reshape(-1, phase1.hidden.shape[-1])
        totals, _ = adapter.head_stats(hidden[row_start + points], first, with_entropy=False)
        del hidden
        phase1.hidden = None  # phase 2 needs only the cache: free [B, L, H] before the extend step
        if any(len(a) > 1 for a in answers):
            totals = totals + self._extend(answers, prompt_len, starts, counts, points, phase1)
        sizes = np.array([len(answers[r]) for r in owner], dtype=np.float32)
        return totals / torch.from_numpy(sizes).to(device)

    def _extend(self, answers, prompt_len, starts, counts, points, phase1: ResponsePass) -> torch.Tensor:
        """Phase 2: ``sum_{i >= 1} log p(a_i)`` of every copy, one extend step over the cache.

        Row r holds its copies back to back: copy token c is answer token i = c mod s of copy
        j = c div s (s = |a| - 1). Padding tokens see cache key 0 and themselves only, and are
        dropped from the sums."""
        adapter, device = self.adapter, self.adapter.device
        B = len(answers)
        span = np.array([len(a) - 1 for a in answers])
        tokens = span * np.asarray(counts)
        C = int(tokens.max())
        c = np.arange(C)[None, :]
        valid = c < tokens[:, None]
        s = np.maximum(span, 1)[:, None]
        j = np.where(valid, c // s, 0)
        i = np.where(valid, c % s, 0)
        point_index = np.where(valid, starts[:-1, None] + j, 0)  # into the packed points
        answer_pad = np.zeros((B, max(len(a) for a in answers) + 1), dtype=np.int64)
        for r, a in enumerate(answers):
            answer_pad[r, : len(a)] = a
        rows = np.arange(B)[:, None]
        ids = np.where(valid, answer_pad[rows, i], 0)
        targets = np.where(valid, answer_pad[rows, i + 1], 0)
        copy_start = np.where(valid, j * s, c)  # padding: only itself
        as_t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731
        valid_t = as_t(valid)
        prefix = as_t(prompt_len)[:, None] + points[as_t(point_index)]  # |q| + P_j
        positions = torch.where(valid_t, prefix + as_t(i), 0)
        limit = torch.where(valid_t, prefix, 1)  # cache keys [0, limit) visible
        copy_start = as_t(copy_start)
        if self.prefix_kernel:
            meta = PrefixMeta(limit.to(torch.int32), copy_start.to(torch.int32))
            # The kernel takes its pattern from `meta`; the mask argument is a placeholder that
            # transformers passes through unchanged (4-D), so no [B, C, L + C] mask is built.
            with phase2_attention(adapter.model):
                hidden, _ = adapter.hidden(
                    as_t(ids), torch.zeros(B, 1, 1, 1, device=device, dtype=torch.bool), positions,
                    cache=phase1.cache, use_cache=True, repro_prefix=meta,
                )
        else:
            allowed = prefix_attention_mask(limit, copy_start, phase1.width)[:, None]
            hidden, _ = adapter.hidden(as_t(ids), self._mask(allowed), positions, cache=phase1.cache, use_cache=True)
        # Index with host-built flat indices, not a boolean mask (which would sync a GPU).
        real = as_t(np.flatnonzero(valid))
        lp, _ = adapter.head_stats(hidden.reshape(-1, hidden.shape[-1])[real], as_t(targets[valid]), with_entropy=False)
        return torch.zeros(len(points), dtype=lp.dtype, device=device).index_add_(0, as_t(point_index[valid]), lp)

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """SDPA and flex take the boolean mask as it is; eager attention adds the mask to its
        scores, so it gets the additive form."""
        impl = getattr(text_config(self.adapter.model), "_attn_implementation", None) or "eager"
        if impl != "eager":
            return allowed
        mask = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
        return mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
