"""The fast backend: one pass over each chain of thought, its KV cache reused by every answer copy.

Exact: under causal attention the answer tokens of SPEC §2's real sequence ``[q, y[0..f), a]`` see
exactly the keys of ``[q, y[0..f)]`` plus the earlier answer tokens. Phase 1 (`response_pass`) is one
forward over ``[q, y]``, cache kept; its hidden state at ``|q| + P_j - 1`` gives each copy's ``a_0``.

Phase 2 (`mean_answer_logprobs`: one extend step over that cache). Trajectory ``b`` brings its
``m_b + 1`` copies of ``a[0..|a|-1)`` (the last answer token is never an input), packed back to
back in its row: as many as it has points, not ``k + 2``. Copy ``j`` sits at positions
``|q| + P_j + i`` and sees cache keys ``[0, |q| + P_j)`` plus itself, causally::

    keys ->      cache: q  y0 y1 y2 y3 | copy0 | copy1 | copy2
    copy0 (P=0)  x  .  .  .  .         | \\     |       |
    copy1 (P=2)  x  x  x  .  .         |       | \\     |
    copy2 (P=4)  x  x  x  x  x         |       |       | \\

The copy counts come from the plans (`Plan.num_points`), so the layout is built on the host and
only the point values stay on the device: no host sync between the phases. Rows are padded to
the micro-batch's longest row only. On CPU the pattern goes to the model as a 4-D attention mask
(transformers passes a 4-D mask through unchanged); with Triton kernels (CUDA) phase 2 runs
`repro_fast.ops.prefix_attention` through transformers' attention interface
(`repro_fast.backends.attention`) and builds no mask at all.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from repro_fast.backends.attention import PrefixMeta, phase2_attention
from repro_fast.backends.base import Item
from repro_fast.batching import padding_aware_batches
from repro_fast.model import (
    ModelAdapter,
    ResponsePass,
    kv_cache_refusal,
    scoring_mode,
    sliding_window_refusal,
    text_config,
)
from repro_fast.ops import prefix_attention_mask


class FastBackend:
    """`Backend` with phase 1 + one extend step over its KV cache (module docstring)."""

    name = "fast"

    def __init__(self, adapter: ModelAdapter, token_budget: int, kernels: str):
        model, cfg = adapter.model, text_config(adapter.model)
        if getattr(cfg, "is_encoder_decoder", False):
            raise TypeError(f"model: {type(model).__name__} is an encoder-decoder; the fast backend "
                            "needs a decoder-only causal LM")
        self.adapter = adapter
        self.token_budget = token_budget
        # The prefix kernel does not apply attention logit soft-capping.
        self.prefix_kernel = kernels == "triton" and getattr(cfg, "attn_logit_softcapping", None) is None
        # What one more forward costs, in tokens of padding, when micro-batches are cut: a GPU
        # forward's fixed launch cost is worth thousands of tokens, a CPU one's a few hundred. Round
        # figures, not tuned: they only move where the cut trades padding against forwards.
        self.forward_overhead = 4096 if adapter.device.type == "cuda" else 256
        self._cache_refusal: tuple[str] | None = None  # the probe's answer, once asked

    def refusal(self, longest: int | None = None) -> str | None:
        """Why this backend cannot score the model exactly for real sequences ``[q, y, a]`` of up to
        ``longest`` tokens (None: any length), or None when it can. Phase 2 hands the model one
        explicit mask for every layer, so a sliding window would not be applied past its length;
        and the answer copies extend the KV cache, which a recurrent layer (hybrid models) cannot
        rewind to a prefix (probed once per model with a two-token forward)."""
        reason = sliding_window_refusal(self.adapter.model, longest)
        if reason is not None:
            return reason
        if self._cache_refusal is None:
            device = self.adapter.device
            ids = torch.zeros(1, 2, dtype=torch.long, device=device)
            with scoring_mode(self.adapter.model):
                positions = torch.arange(2, device=device)[None]
                _, cache = self.adapter.run_decoder(ids, torch.ones_like(ids), positions, use_cache=True)
            self._cache_refusal = (kv_cache_refusal(cache, 2) or "",)
        return self._cache_refusal[0] or None

    def groups(self, items: list[Item], counts: list[int]) -> list[list[int]]:
        """Micro-batches under the token budget (each keeps one KV cache alive), cut so that both
        phases together pad as little as possible; ``counts``: copies per trajectory."""
        lengths = [len(it.prompt) + len(it.response) for it in items]
        longest = max(lengths, default=0) + max((len(it.answer) for it in items), default=0)
        reason = self.refusal(longest) if items else None
        if reason is not None:
            raise ValueError(f"model: {reason}. Use backend='naive'")
        copies = [c * (len(it.answer) - 1) for c, it in zip(counts, items)]
        return padding_aware_batches(lengths, copies, self.token_budget, self.forward_overhead)

    def response_pass(self, items: list[Item], group: list[int]) -> ResponsePass:
        """Phase 1: the forward over ``[q, y]`` with its hidden states and cache kept."""
        prompts, responses = [items[b].prompt for b in group], [items[b].response for b in group]
        return self.adapter.response_pass(prompts, responses, keep=True)

    def mean_answer_logprobs(self, items: list[Item], group: list[int], points: torch.Tensor,
                             counts: list[int], phase1: ResponsePass) -> torch.Tensor:
        """``J(P_j)`` (the mean log-prob of the answer after prefix ``P_j``) of every point of the
        group, back to back like ``points``. ``phase1``'s hidden states are read, its cache is
        extended by the answer copies (a recorded cache is restored by its source afterwards)."""
        device = self.adapter.device
        answers = [items[b].answer for b in group]
        owner = np.repeat(np.arange(len(group)), counts)  # row of every point
        # First answer token of every copy: phase-1 hidden state at column offset + P_j - 1.
        row_start = torch.from_numpy(owner * phase1.width + phase1.offset[owner] - 1).to(device)
        first = torch.from_numpy(np.array([answers[r][0] for r in owner], dtype=np.int64)).to(device)
        hidden = phase1.hidden.flatten(0, 1)[row_start + points]
        # Phase 2 needs only the cache: drop this pass's reference to [B, L, H] before the extend
        # step (the pass is the source's own object; a record keeps its hidden states).
        phase1.hidden = None
        totals, _ = self.adapter.head_stats(hidden, first, with_entropy=False)
        if any(len(a) > 1 for a in answers):
            totals = totals + self._extend(answers, counts, points, phase1)
        return totals / torch.tensor([len(answers[r]) for r in owner], dtype=torch.float32, device=device)

    def _extend(self, answers, counts, points, phase1: ResponsePass) -> torch.Tensor:
        """Phase 2: ``sum_{i >= 1} log p(a_i)`` of every copy, one extend step over the cache.

        Row r holds its copies back to back: copy token c is answer token i = c mod s of copy
        j = c div s (s = |a| - 1), at position ``position_base + P_j + i``, seeing the cache
        columns ``[key_start, offset + P_j)``. Padding tokens see cache key 0 and themselves
        only, and are dropped from the sums."""
        adapter, device = self.adapter, self.adapter.device
        as_t = partial(torch.as_tensor, device=device)
        span = np.array([len(a) - 1 for a in answers])
        tokens = span * np.asarray(counts)
        c = np.arange(int(tokens.max()))[None, :]
        valid = c < tokens[:, None]
        s = np.maximum(span, 1)[:, None]
        j, i = np.where(valid, np.divmod(c, s), 0)  # copy j, answer token i: c = j * s + i
        first_point = np.cumsum(counts) - counts
        point_index = np.where(valid, first_point[:, None] + j, 0)  # into the packed points
        answer_pad = np.zeros((len(answers), max(len(a) for a in answers) + 1), dtype=np.int64)
        for r, a in enumerate(answers):
            answer_pad[r, : len(a)] = a
        rows = np.arange(len(answers))[:, None]
        ids = as_t(np.where(valid, answer_pad[rows, i], 0))
        copy_start = as_t(np.where(valid, j * s, c))  # padding: only itself
        valid_t = as_t(valid)
        chosen = points[as_t(point_index)]  # P_j of every copy token
        positions = torch.where(valid_t, as_t(phase1.position_base)[:, None] + chosen + as_t(i), 0)
        # Cache keys [., limit) are visible to a copy token.
        limit = torch.where(valid_t, as_t(phase1.offset)[:, None] + chosen, 1)
        # A left-padded trainer layout hides its pad columns [0, key_start) from every copy; the
        # prefix kernel has no lower bound, so that layout takes the mask.
        key_start = np.where(valid, phase1.key_start[:, None], 0)
        if self.prefix_kernel and not key_start.any():
            meta = PrefixMeta(limit.to(torch.int32), copy_start.to(torch.int32))
            # The kernel takes its pattern from `meta`; the mask argument is a placeholder that
            # transformers passes through unchanged (4-D), so no [B, C, L + C] mask is built.
            placeholder = torch.zeros(len(answers), 1, 1, 1, device=device, dtype=torch.bool)
            with phase2_attention(adapter.model):
                hidden, _ = adapter.run_decoder(ids, placeholder, positions, cache=phase1.cache,
                                                use_cache=True,
                                           repro_prefix=meta)
        else:
            allowed = prefix_attention_mask(limit, copy_start, phase1.width)
            columns = torch.arange(phase1.width, device=device)
            allowed[..., : phase1.width] &= columns >= as_t(key_start)[..., None]
            mask = self._mask(allowed[:, None])
            hidden, _ = adapter.run_decoder(ids, mask, positions, cache=phase1.cache, use_cache=True)
        # Index with host-built flat indices, not a boolean mask (which would sync a GPU).
        real = hidden.flatten(0, 1)[as_t(np.flatnonzero(valid))]
        lp, _ = adapter.head_stats(real, as_t(answer_pad[rows, i + 1][valid]), with_entropy=False)
        totals = torch.zeros(len(points), dtype=lp.dtype, device=device)
        return totals.index_add_(0, as_t(point_index[valid]), lp)

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """SDPA and flex take the boolean mask; eager attention adds the mask to its scores: additive."""
        impl = getattr(text_config(self.adapter.model), "_attn_implementation", None) or "eager"
        if impl != "eager":
            return allowed
        return torch.where(allowed, 0.0, torch.finfo(torch.float32).min).float()
