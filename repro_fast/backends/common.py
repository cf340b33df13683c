"""What both backends (and the trainer's loss) share: the model as decoder + LM head, and the
one forward over ``[q, y]`` that gives every response token's log-prob (and entropy).

Every path runs the model's *decoder* (the stack that ends with the final norm) and applies the
LM head only to the rows it needs: that is what lets the naive backend compute ``J`` without
full-vocabulary logits at every position, and the fast backend feed the fused head kernel.
The split is checked against the model's own forward (`ModelAdapter.verify`) whenever the head
changes, so a model whose head does something we do not reproduce fails loudly.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import numpy as np
import torch

from repro_fast import ops
from repro_fast.backends.attention import text_config


@dataclass
class Item:
    """One validated trajectory as the backends see it."""

    prompt: np.ndarray  # int64 [|q|], |q| >= 1
    response: np.ndarray  # int64 [n]
    answer: np.ndarray  # int64 [|a|], |a| >= 1


@dataclass
class ResponsePass:
    """The forward over right-padded ``[q, y]`` of some trajectories.

    ``logprobs`` / ``entropies``: fp32, every response token of the batch back to back
    (trajectory order), entropies None when not asked for; ``hidden`` ``[B, L, H]`` and
    ``cache`` are kept only when asked for (the fast backend's phase 2 reads them).
    """

    logprobs: torch.Tensor
    entropies: torch.Tensor | None
    hidden: torch.Tensor | None = None
    cache: object = None
    width: int = 0


class ModelAdapter:
    """A Hugging Face causal LM seen as ``decoder(ids) -> hidden`` and ``head(hidden) -> stats``.

    Decoder and head are looked up on every call, never cached: after
    ``resize_token_embeddings`` or under a wrapper that swaps parameters (FSDP), the adapter
    sees the model as it is now.
    """

    def __init__(self, model, temperature: float, kernels: str = "torch"):
        self.model = model
        self.temperature = temperature
        self.kernels = kernels
        text_cfg = text_config(model)
        self.softcap = getattr(text_cfg, "final_logit_softcapping", None)
        self.logit_scale = getattr(text_cfg, "logit_scale", None)
        self._verified_head = None
        # transformers >= 5.2x names the KV cache argument `cache`, earlier releases
        # `past_key_values`.
        params = inspect.signature(model.get_decoder().forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def max_positions(self) -> int | None:
        """Rows of a learned position-embedding table (GPT-2's ``wpe``), which no input may
        outgrow; None for rotary models, whose positions are computed, not looked up."""
        for name, module in self.model.get_decoder().named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, torch.nn.Embedding) and (leaf == "wpe" or "position" in leaf):
                return module.num_embeddings
        return None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full logits of some rows, exactly as the model's forward computes them."""
        logits = self.head(hidden)
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def head_stats(
        self, hidden: torch.Tensor, targets: torch.Tensor, with_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """fp32 ``(log p(target), entropy or None)`` at temperature tau for rows ``[R, H]``.

        Under `torch.autocast` the head multiplies in the autocast dtype (as the trainer's own
        forward does) but accumulates and normalizes in fp32, never over rounded logits."""
        head = self.head
        dtype = head.weight.dtype
        if torch.is_autocast_enabled(hidden.device.type):
            dtype = torch.get_autocast_dtype(hidden.device.type)
        with torch.autocast(hidden.device.type, enabled=False):
            plain = isinstance(head, torch.nn.Linear) and self.softcap is None and self.logit_scale is None
            if plain:
                h, w = hidden.to(dtype), head.weight.to(dtype)
                b = head.bias.to(dtype) if head.bias is not None else None
                if with_entropy:
                    return ops.fused_logprob_entropy(h, w, targets, self.temperature, bias=b, backend=self.kernels)
                return ops.fused_logprob(h, w, targets, self.temperature, bias=b, backend=self.kernels), None
            # Other heads (soft-capping, logit scale, custom modules): chunked torch over the
            # real head, with the same rounding of its input.
            lps, ents = [], []
            step = max(1, (1 << 24) // max(head.weight.shape[0], 1))
            for s in range(0, hidden.shape[0], step):
                z = self.logits(hidden[s : s + step].to(dtype)).float() / self.temperature
                logp = torch.log_softmax(z, dim=-1)
                lps.append(logp.gather(1, targets[s : s + step, None].long())[:, 0])
                if with_entropy:
                    p = logp.exp()
                    ents.append(-torch.where(p == 0, 0.0, p * logp).sum(-1))
            empty = hidden.new_zeros(0, dtype=torch.float32)
            lp = torch.cat(lps) if lps else empty
            return lp, (torch.cat(ents) if ents else empty) if with_entropy else None

    def hidden(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False, **kwargs):
        """Final hidden states ``[B, L, H]`` and the KV cache (when ``use_cache``); extra keyword
        arguments travel down to the attention functions."""
        if cache is not None:
            kwargs[self._cache_arg] = cache
        out = self.model.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        cache_out = getattr(out, "cache", None)
        if cache_out is None:
            cache_out = getattr(out, "past_key_values", None)
        return out.last_hidden_state, cache_out

    def verify(self, sample_ids: list[int]) -> None:
        """Check that decoder + head reproduce the model's own logits (again after the head
        changed), in the model's own precision (autocast off)."""
        head = self.head
        key = (id(head), tuple(head.weight.shape), head.weight.dtype)
        if self._verified_head == key:
            return
        ids = torch.tensor([sample_ids], device=self.device)
        with torch.autocast(self.device.type, enabled=False):
            # The class's own forward: accelerate wraps the instance's `forward` in an autocast
            # of its own, which would turn bf16 back on inside this block.
            full = type(self.model).forward(self.model, input_ids=ids, use_cache=False).logits[0].float()
            pos = torch.arange(ids.shape[1], device=self.device)[None]
            hidden, _ = self.hidden(ids, torch.ones_like(ids), pos)
            ours = self.logits(hidden[0]).float()
        if not torch.isfinite(full).all():
            raise ValueError(
                "model: produced NaN or inf logits on the first prompt's tokens; "
                "check the model's weights and dtype"
            )
        scale = full.abs().max().clamp_min(1.0)
        if not torch.allclose(ours, full, atol=1e-3 * float(scale), rtol=1e-3):
            raise TypeError(
                f"model: {type(self.model).__name__}'s forward does not equal its decoder "
                "(get_decoder()) followed by its output embeddings (get_output_embeddings()); "
                "repro_fast cannot split this model into decoder + LM head"
            )
        self._verified_head = key

    def response_pass(
        self, prompts, responses, *, with_entropy: bool = True, keep: bool = False
    ) -> ResponsePass:
        """One forward over right-padded ``[q, y]`` (positions ``0, 1, ...``, as SPEC §2's real
        sequence), then the head on the rows that predict response tokens only. ``keep``: also
        keep the hidden states and the KV cache (the whole ``[q, y]`` is fed then; otherwise
        the last response token, which predicts nothing, is left out)."""
        device = self.device
        seqs = [np.concatenate([q, y if keep else y[:-1]]) for q, y in zip(prompts, responses)]
        ids, mask, pos = right_padded(seqs, device)
        hidden, cache = self.hidden(ids, mask, pos, use_cache=keep)
        if keep and cache is None:
            raise TypeError(
                f"model: {type(self.model).__name__} returned no KV cache from its decoder; "
                "the fast backend reuses that cache for the answer copies. Use backend='naive'"
            )
        rows, cols = [], []
        for r, (q, y) in enumerate(zip(prompts, responses)):
            rows.append(np.full(len(y), r))
            cols.append(np.arange(len(q) - 1, len(q) - 1 + len(y)))  # position t predicts y[t - |q| + 1]
        index = torch.from_numpy(np.concatenate(rows) * ids.shape[1] + np.concatenate(cols)).to(device)
        targets = torch.from_numpy(np.concatenate(responses)).to(device)
        lp, ent = self.head_stats(hidden.reshape(-1, hidden.shape[-1])[index], targets, with_entropy)
        return ResponsePass(lp, ent, hidden if keep else None, cache, ids.shape[1])


def padded(packed: torch.Tensor, lengths: list[int], width: int) -> torch.Tensor:
    """Values stored back to back (``lengths[b]`` each) -> ``[N, width]``, 0 elsewhere
    (differentiable)."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([np.arange(n) for n in lengths]) if lengths else np.zeros(0, dtype=np.int64)
    out = packed.new_zeros(len(lengths), width)
    index = (torch.from_numpy(rows).to(packed.device), torch.from_numpy(cols).to(packed.device))
    return out.index_put(index, packed)


def micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Group sequence indices into micro-batches whose padded size ``B * max_len`` stays within
    ``token_budget`` (a longer sequence gets a batch of its own). Sorting by length first keeps
    padding small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_aware_batches(lengths: list[int], extra: list[int], token_budget: int, overhead: int) -> list[list[int]]:
    """Micro-batches for a two-step pass (phase 1 over ``lengths``, then ``extra`` tokens per
    sequence in phase 2), each padded to its longest member in both steps.

    Sequences sorted by length (longest first) are cut into runs that minimize the padded
    tokens ``sum_g B_g * (max length_g + max extra_g)`` plus ``overhead`` tokens per forward
    (the fixed cost of a launch), with ``B_g * max length_g <= token_budget`` (exact dynamic
    program over the cut points, O(n * window))."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], -extra[i]))
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        widest = 0
        for start in range(end - 1, max(-1, end - 1 - 512), -1):
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
        runs.append([order[i] for i in range(cut[end], end)])
        end = cut[end]
    return runs[::-1]


def right_padded(seqs: list[np.ndarray], device, pad_id: int = 0):
    """``input_ids``, 2-D ``attention_mask`` and ``position_ids`` of right-padded sequences."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    input_ids = torch.from_numpy(ids).to(device)
    attention_mask = torch.from_numpy(mask).to(device)
    position_ids = torch.arange(width, device=device)[None].expand(len(seqs), width)
    return input_ids, attention_mask, position_ids


@contextlib.contextmanager
def scoring_mode(model):
    """No dropout, no autograd; every submodule's train/eval flag restored afterwards (a frozen
    block stays in eval mode inside a training model)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training
