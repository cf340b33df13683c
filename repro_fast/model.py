"""The model as the scorer sees it: a Hugging Face causal LM split into ``decoder(ids) -> hidden``
and ``LM head(hidden) -> (log-prob, entropy)``, the head applied only to the rows each quantity
needs (never full-vocabulary logits everywhere); the one forward over ``[q, y]`` that gives every
response token's log-prob and entropy (phase 1, and the trainer's `sequence_logprobs`); the
record of a trainer's own forward (`ModelAdapter.capture`) or generation
(`ModelAdapter.capture_generation`); `scoring_mode`."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from repro_fast import ops
from repro_fast.batching import right_padded


def text_config(model):
    """The decoder's config (multimodal models keep it under ``get_text_config()``)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _cache_of(out):
    """The KV cache of a decoder output, read under the field name this release declares (asking a
    new release's output for ``past_key_values`` logs a deprecation warning on every command)."""
    field = "cache" if "cache" in getattr(out, "__dataclass_fields__", {}) else "past_key_values"
    return getattr(out, field, None)


@dataclass
class ResponsePass:
    """The forward over ``[q, y]``: stats of every response token back to back (entropies None
    when not asked for); ``hidden`` ``[B, L, H]`` and ``cache`` only when kept.

    The layout of the kept rows (phase 2 builds its copies on it), per row ``r``: ``offset[r]``
    is the column of ``y[0]``, the real keys are the columns ``[key_start[r], offset[r] + n_r)``,
    and ``y[0]`` sits at position ``position_base[r]``. The scorer's own pass is right-padded
    (``key_start = 0``, ``offset = position_base = |q|``); a trainer's pass (`capture`) is
    left-padded prompts + right-padded completions."""

    logprobs: torch.Tensor
    entropies: torch.Tensor | None
    hidden: torch.Tensor | None = None
    cache: object = None
    width: int = 0
    offset: np.ndarray | None = None
    key_start: np.ndarray | None = None
    position_base: np.ndarray | None = None


@dataclass
class CapturedForward:
    """What `ModelAdapter.capture` recorded of one decoder call of a trainer's own forward."""

    hidden: torch.Tensor | None = None  # [B, L, H], the decoder's last hidden states
    cache: object = None
    position_ids: torch.Tensor | None = None  # as the trainer passed them (None: 0, 1, ... per column)
    calls: int = 0


@dataclass
class CapturedGeneration:
    """What `ModelAdapter.capture_generation` recorded of a trainer's ``model.generate(...)``: the
    decoder calls of one sequence of cached steps (prefill, then one column per sampled token).

    Each call's fed ``input_ids``, last hidden states and position ids are kept per call (joined
    by `joined`); ``cache`` is the one KV cache every call extended; ``attention_mask`` is the
    last call's (``[B, columns fed]``); ``autocast``: ``(enabled, dtype)`` when the first call ran,
    so that the scorer's own steps over this cache run in the same precision."""

    input_ids: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    position_ids: list = field(default_factory=list)
    attention_mask: torch.Tensor | None = None
    cache: object = None
    autocast: tuple[bool, torch.dtype] | None = None
    calls: int = 0
    broken: str | None = None  # why the calls are not one sequence of cached steps
    # From the logits generate() computed to sample (its model output, soft-cap and scale
    # included), at temperature tau: per sampled column t, H_t (known when its call returns) and
    # log p(y_t) (gathered when y_t is fed next, or by the scorer for the last column).
    entropies: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    pending: torch.Tensor | None = None  # [B, V] log-probs of the last call, until y_t is known

    @property
    def columns_fed(self) -> int:
        """Columns the decoder was fed, all calls together (prompt width + sampled - 1)."""
        return sum(ids.shape[1] for ids in self.input_ids)

    def joined(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Fed tokens ``[B, L]``, hidden states ``[B, L, H]`` and position ids (None when the model
        numbered the columns itself) of all calls, column after column."""
        positions = None if any(p is None for p in self.position_ids) else torch.cat(
            [p.expand(self.input_ids[i].shape[0], -1) for i, p in enumerate(self.position_ids)], dim=1)
        return torch.cat(self.input_ids, dim=1), torch.cat(self.hidden, dim=1), positions


class ModelAdapter:
    """A Hugging Face causal LM seen as ``decoder(ids) -> hidden`` and ``head(hidden) -> stats``.
    Both are looked up on every call, never cached, so that after ``resize_token_embeddings`` or
    under a wrapper that swaps parameters (FSDP) the adapter sees the model as it is now."""

    def __init__(self, model, temperature: float, kernels: str = "torch"):
        self.model = model
        self.temperature = temperature
        self.kernels = kernels
        text_cfg = text_config(model)
        self.softcap = getattr(text_cfg, "final_logit_softcapping", None)
        self.logit_scale = getattr(text_cfg, "logit_scale", None)
        self._verified_head = None
        # transformers >= 5.2x names the KV cache argument `cache`, earlier releases `past_key_values`.
        params = inspect.signature(model.get_decoder().forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def head(self) -> torch.nn.Module:
        """The LM head, looked up now (it may have been replaced since the last call)."""
        return self.model.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        """Where the LM head\'s weight lives: the device of every scorer output."""
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

    def head_stats(self, hidden: torch.Tensor, targets: torch.Tensor,
                   with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """fp32 ``(log p(target), entropy or None)`` at temperature tau for rows ``[R, H]``. Under
        `torch.autocast` the head multiplies in the autocast dtype (as the trainer's own forward
        does) but accumulates and normalizes in fp32, never over rounded logits."""
        head, device_type = self.head, hidden.device.type
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else head.weight.dtype
        with torch.autocast(device_type, enabled=False):
            if isinstance(head, torch.nn.Linear) and self.softcap is None and self.logit_scale is None:
                args = (hidden.to(dtype), head.weight.to(dtype), targets, self.temperature)
                kwargs = {"bias": None if head.bias is None else head.bias.to(dtype), "backend": self.kernels}
                if with_entropy:
                    return ops.fused_logprob_entropy(*args, **kwargs)
                return ops.fused_logprob(*args, **kwargs), None
            # Other heads (soft-capping, logit scale, PEFT-wrapped or custom modules): chunked
            # torch over the real head, run as the trainer's own forward runs it (under its
            # autocast when one is on: casting the rows alone would feed bf16 to an fp32 head).
            lps, ents = [], []
            step = max(1, (1 << 24) // max(head.weight.shape[0], 1))
            for rows, rows_targets in zip(hidden.split(step), targets.split(step)):
                with torch.autocast(device_type, dtype=dtype, enabled=autocast):
                    logits = self.logits(rows if autocast else rows.to(dtype))
                logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)
                lps.append(logp.gather(1, rows_targets[:, None].long())[:, 0])
                if with_entropy:
                    p = logp.exp()
                    ents.append(-torch.where(p == 0, 0.0, p * logp).sum(-1))
            return torch.cat(lps), torch.cat(ents) if with_entropy else None

    @contextlib.contextmanager
    def capture(self):
        """Record the decoder's hidden states and KV cache during a trainer's own forward of the
        model (which may have asked for no cache: the cache is turned on, which changes no value)."""
        decoder, record = self.model.get_decoder(), CapturedForward()

        def before(module, args, kwargs):
            kwargs["use_cache"] = True
            record.position_ids = kwargs.get("position_ids")
            return args, kwargs

        def after(module, args, kwargs, out):
            record.calls += 1
            record.hidden, record.cache = out.last_hidden_state, _cache_of(out)

        handles = [decoder.register_forward_pre_hook(before, with_kwargs=True),
                   decoder.register_forward_hook(after, with_kwargs=True)]
        try:
            yield record
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def capture_generation(self):
        """Record every decoder call of a trainer's ``model.generate(...)``: a prefill over the
        prompts, then one call per sampled column, each extending the KV cache of the one before;
        and, from the model's outer forward, the logits each column was sampled from (reduced at
        once to that column's entropy and, once the sampled token is fed, its log-prob). A call
        that starts a new cache (a second ``generate``) or changes the batch marks the record
        ``broken``: it is then no phase 1 of one batch."""
        decoder, record = self.model.get_decoder(), CapturedGeneration()

        def before(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if record.pending is not None and ids is not None and ids.shape[1] == 1:
                record.logprobs.append(record.pending.gather(1, ids.reshape(-1, 1).long())[:, 0])
            record.pending = None
            cache = kwargs.get(self._cache_arg)
            if ids is None:
                record.broken = "a decoder call without input_ids (inputs_embeds)"
            elif record.calls and (cache is not record.cache or ids.shape[0] != record.input_ids[0].shape[0]):
                record.broken = "more than one generation (or a changed batch) inside one capture"
            if record.broken is None:
                record.input_ids.append(ids.detach())
                record.position_ids.append(kwargs.get("position_ids"))
                record.attention_mask = kwargs.get("attention_mask")
                if record.calls == 0:
                    device_type = ids.device.type
                    record.autocast = (torch.is_autocast_enabled(device_type),
                                       torch.get_autocast_dtype(device_type))
            return args, kwargs

        def after(module, args, kwargs, out):
            record.calls += 1
            if record.broken is None:
                record.hidden.append(out.last_hidden_state.detach())
                record.cache = _cache_of(out)
                if record.cache is None:
                    record.broken = "the decoder returned no KV cache"

        def sampled_from(module, args, kwargs, out):
            logits = getattr(out, "logits", None)
            if record.broken is not None or logits is None or len(record.entropies) != record.calls - 1:
                return  # a model whose outer forward is not the one generate() calls: no stats
            logp = torch.log_softmax(logits[:, -1].detach().float() / self.temperature, dim=-1)
            record.entropies.append(-torch.where(logp.isneginf(), 0.0, logp.exp() * logp).sum(-1))
            record.pending = logp

        handles = [decoder.register_forward_pre_hook(before, with_kwargs=True),
                   decoder.register_forward_hook(after, with_kwargs=True),
                   self.model.register_forward_hook(sampled_from, with_kwargs=True)]
        try:
            yield record
        finally:
            for handle in handles:
                handle.remove()

    def hidden(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False, **kwargs):
        """Final hidden states ``[B, L, H]`` and the KV cache (when ``use_cache``); extra keyword
        arguments go down to the attention functions."""
        if cache is not None:
            kwargs[self._cache_arg] = cache
        out = self.model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=use_cache, return_dict=True, **kwargs,
        )
        return out.last_hidden_state, _cache_of(out)

    def verify(self, sample_ids: list[int]) -> None:
        """Check that decoder + head reproduce the model's own logits (again after the head
        changed), in the model's own precision (autocast off)."""
        head = self.head
        key = (id(head), tuple(head.weight.shape), head.weight.dtype)
        if self._verified_head == key:
            return
        ids, mask, pos = right_padded([np.asarray(sample_ids, dtype=np.int64)], self.device)
        with torch.autocast(self.device.type, enabled=False):
            # The class's own forward: accelerate wraps the instance's `forward` in an autocast
            # of its own, which would turn bf16 back on inside this block.
            full = type(self.model).forward(self.model, input_ids=ids, use_cache=False).logits[0].float()
            hidden, _ = self.hidden(ids, mask, pos)
            ours = self.logits(hidden[0]).float()
        if not torch.isfinite(full).all():
            raise ValueError("model: produced NaN or inf logits on the first prompt's tokens; "
                             "check the model's weights and dtype")
        scale = full.abs().max().clamp_min(1.0)
        if not torch.allclose(ours, full, atol=1e-3 * float(scale), rtol=1e-3):
            raise TypeError(f"model: {type(self.model).__name__}'s forward does not equal its decoder "
                            "(get_decoder()) followed by its output embeddings (get_output_embeddings()); "
                            "repro_fast cannot split this model into decoder + LM head")
        self._verified_head = key

    def response_pass(self, prompts, responses, *, with_entropy: bool = True,
                      keep: bool = False) -> ResponsePass:
        """One forward over right-padded ``[q, y]`` (positions ``0, 1, ...``, as SPEC §2's real
        sequence), then the head on the rows that predict response tokens only. ``keep``: also
        keep the hidden states and the KV cache (the whole ``[q, y]`` is fed then; otherwise
        the last response token, which predicts nothing, is left out)."""
        device = self.device
        seqs = [np.concatenate([q, y if keep else y[:-1]]) for q, y in zip(prompts, responses)]
        ids, mask, pos = right_padded(seqs, device)
        hidden, cache = self.hidden(ids, mask, pos, use_cache=keep)
        if keep and cache is None:
            raise TypeError(f"model: {type(self.model).__name__} returned no KV cache from its decoder; "
                            "the fast backend reuses that cache for the answer copies. Use backend='naive'")
        width = ids.shape[1]
        # Row r, position |q| - 1 + t predicts y[t].
        starts = [r * width + len(q) - 1 for r, q in enumerate(prompts)]
        index = np.concatenate([s + np.arange(len(y)) for s, y in zip(starts, responses)])
        index = torch.from_numpy(index).to(device)
        targets = torch.from_numpy(np.concatenate(responses)).to(device)
        lp, ent = self.head_stats(hidden.reshape(-1, hidden.shape[-1])[index], targets, with_entropy)
        offset = np.array([len(q) for q in prompts])
        return ResponsePass(lp, ent, hidden if keep else None, cache, width, offset=offset,
                            key_start=np.zeros_like(offset), position_base=offset)


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
