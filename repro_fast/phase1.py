"""Where phase 1 comes from (SPEC §7): one pass over ``[q | y]`` that gives every response token's
log-prob and entropy at tau, the hidden states and the KV cache the extend step builds on.

Three sources, one product: each yields, per micro-batch, a `ResponsePass` (token statistics,
hidden states, cache, and the layout of its rows) that `RePROScorer` selects from and extends.

    OwnForward           the scorer's own forward (`score`, `score_padded`), micro-batched by its
                         backend; with the naive backend phase 2 ignores the cache
    RecordedForward      a trainer's own no-grad forward over its padded batch (old log-probs),
                         recorded by `record_forward` (`RePROScorer.capture_phase1`)
    RecordedGeneration   a trainer's ``model.generate()``, recorded by `record_generation`
                         (`RePROScorer.capture_generation`); one more cached step feeds the last
                         sampled column

A record is used only where it is shown to be the pass ``score()`` would run: the tokens, masks
and positions it was fed are the ones given; no dropout was in effect; its cache holds every
fed column as extendable attention keys; a sliding window covers every answer copy's real
sequence; the scorer's config is the one it was recorded under (and a sampled generation ran at
the scorer's temperature). Anything else raises `UnusableRecord`, which names the cause and the
fix; trainers catch it and run `OwnForward` instead. Sources never change what the caller handed
in: the cache a record holds is put back as recorded once the extend step is done.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from repro_fast.backends import Backend, Item
from repro_fast.config import RePROConfig
from repro_fast.model import (
    ModelAdapter,
    ResponsePass,
    cache_of,
    dropout_in_effect,
    kv_cache_refusal,
    sliding_window_refusal,
)


class UnusableRecord(ValueError):
    """A recorded pass (`capture_phase1`, `capture_generation`) cannot be shown to be the pass
    ``score()`` would run, so it is not scored; the message names the cause and the fix. Trainers
    catch this (and only this) and score the batch with the scorer's own forward."""


# ---------------------------------------------------------------------------------------------
# The records and their recorders
# ---------------------------------------------------------------------------------------------

@dataclass
class ForwardRecord:
    """What `record_forward` kept of one decoder call of a trainer's forward. Scoring reads it and
    leaves it as it was (its cache is restored after the extend step); drop it to free memory."""

    config: RePROConfig  # the scorer's config when the capture began
    input_ids: torch.Tensor | None = None  # [B, L] as fed (None: the call got inputs_embeds)
    attention_mask: torch.Tensor | None = None  # as passed to the decoder (None: no mask)
    position_ids: torch.Tensor | None = None  # as passed (None: the model numbered the columns 0, 1, ...)
    hidden: torch.Tensor | None = None  # [B, L, H], the decoder's last hidden states
    cache: object = None  # the KV cache of the call (switched on by the recorder; no value changes)
    dropout: str | None = None  # the module that had dropout in effect during the call, if any
    calls: int = 0  # decoder calls inside the capture: one micro-batch per capture


@dataclass
class GenerationRecord:
    """What `record_generation` kept of a trainer's ``model.generate(...)``: the decoder calls of
    one sequence of cached steps (a prefill, then one column per sampled token). Scoring reads it
    and leaves it as it was; drop it to free memory.

    Per call: the fed ``input_ids``, last hidden states and position ids; ``cache`` is the one KV
    cache every call extended; ``attention_mask`` is the last call's (``[B, columns fed]``);
    ``autocast``: ``(enabled, dtype)`` when the first call ran, so that the scorer's own steps over
    this cache run in the same precision."""

    config: RePROConfig  # the scorer's config when the capture began (tau of the statistics below)
    input_ids: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    position_ids: list = field(default_factory=list)
    attention_mask: torch.Tensor | None = None
    cache: object = None
    autocast: tuple[bool, torch.dtype] | None = None
    dropout: str | None = None  # the module that had dropout in effect while sampling, if any
    # (do_sample, temperature) of the generate() call, when it went through the model's own
    # `generate` attribute (None: not seen)
    sampling: tuple[bool, float | None] | None = None
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


# One open capture per model: a nested one would record the other's decoder calls as its own.
_OPEN_CAPTURES: set[int] = set()


@contextlib.contextmanager
def _one_capture(model, what: str):
    if id(model) in _OPEN_CAPTURES:
        raise ValueError(f"{what}: a capture of this model is already open; nested captures would record "
                         "each other's decoder calls (close the first one before opening another)")
    _OPEN_CAPTURES.add(id(model))
    try:
        yield
    finally:
        _OPEN_CAPTURES.discard(id(model))


@contextlib.contextmanager
def record_forward(adapter: ModelAdapter, config: RePROConfig):
    """Record the decoder call of a trainer's own forward of ``adapter.model``: what it was fed
    (ids, mask, positions), its hidden states and KV cache (the cache is switched on, which changes
    no value), and whether dropout was in effect."""
    model = adapter.model
    decoder, record = model.get_decoder(), ForwardRecord(config=config)

    def before(module, args, kwargs):
        kwargs["use_cache"] = True
        ids = kwargs.get("input_ids", args[0] if args else None)
        record.input_ids = None if ids is None else ids.detach()
        record.attention_mask = kwargs.get("attention_mask")
        record.position_ids = kwargs.get("position_ids")
        record.dropout = dropout_in_effect(model)
        return args, kwargs

    def after(module, args, kwargs, out):
        record.calls += 1
        record.hidden, record.cache = out.last_hidden_state, cache_of(out)

    with _one_capture(model, "capture_phase1"):
        handles = [decoder.register_forward_pre_hook(before, with_kwargs=True),
                   decoder.register_forward_hook(after, with_kwargs=True)]
        try:
            yield record
        finally:
            for handle in handles:
                handle.remove()


def _sampling_of(model, kwargs: dict) -> tuple[bool, float | None]:
    """``(do_sample, temperature)`` of a ``generate(**kwargs)`` call, as transformers resolves them:
    keyword arguments over the ``generation_config`` passed, over the model's own."""
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    do_sample = kwargs.get("do_sample", getattr(config, "do_sample", False))
    temperature = kwargs.get("temperature", getattr(config, "temperature", None))
    return bool(do_sample), None if temperature is None else float(temperature)


@contextlib.contextmanager
def record_generation(adapter: ModelAdapter, config: RePROConfig):
    """Record every decoder call of a trainer's ``model.generate(...)``: a prefill over the prompts,
    then one call per sampled column, each extending the KV cache of the one before; from the
    model's outer forward, the logits each column was sampled from (reduced at once to that
    column's entropy and, once the sampled token is fed, its log-prob); from ``generate``'s own
    arguments, whether and at what temperature it sampled. A call that starts a new cache (a
    second ``generate``) or changes the batch marks the record ``broken``."""
    model = adapter.model
    decoder, record = model.get_decoder(), GenerationRecord(config=config)
    temperature = config.temperature

    def before(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if record.pending is not None and ids is not None and ids.shape[1] == 1:
            record.logprobs.append(record.pending.gather(1, ids.reshape(-1, 1).long())[:, 0])
        record.pending = None
        cache = kwargs.get(adapter.cache_arg)
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
                record.dropout = dropout_in_effect(model)
        return args, kwargs

    def after(module, args, kwargs, out):
        record.calls += 1
        if record.broken is None:
            record.hidden.append(out.last_hidden_state.detach())
            record.cache = cache_of(out)

    def sampled_from(module, args, kwargs, out):
        logits = getattr(out, "logits", None)
        if record.broken is not None or logits is None or len(record.entropies) != record.calls - 1:
            return  # a model whose outer forward is not the one generate() calls: no stats
        logp = torch.log_softmax(logits[:, -1].detach().float() / temperature, dim=-1)
        record.entropies.append(-torch.where(logp.isneginf(), 0.0, logp.exp() * logp).sum(-1))
        record.pending = logp

    # generate()'s own arguments say how it sampled; hooks on the modules never see them.
    own_generate = model.__dict__.get("generate")
    bound_generate = getattr(model, "generate", None)

    def recording_generate(*args, **kwargs):
        record.sampling = _sampling_of(model, kwargs)
        return bound_generate(*args, **kwargs)

    with _one_capture(model, "capture_generation"):
        handles = [decoder.register_forward_pre_hook(before, with_kwargs=True),
                   decoder.register_forward_hook(after, with_kwargs=True),
                   model.register_forward_hook(sampled_from, with_kwargs=True)]
        if callable(bound_generate):
            model.generate = recording_generate
        try:
            yield record
        finally:
            for handle in handles:
                handle.remove()
            if callable(bound_generate):
                if own_generate is None:
                    del model.generate
                else:
                    model.generate = own_generate


# ---------------------------------------------------------------------------------------------
# What a record must show before it is used
# ---------------------------------------------------------------------------------------------

def check_left_padded(prompt_mask: torch.Tensor, caller: str) -> None:
    """A trainer's pass (its forward or its generation) sees the prompts flush against the completions."""
    if prompt_mask.shape[0] and not prompt_mask[:, -1].all():
        row = int((~prompt_mask[:, -1]).nonzero()[0])
        raise ValueError(f"prompt_mask: row {row} is not left-padded; {caller} needs the prompts "
                         "flush against the completions (use score_padded for other layouts)")


def _check_common(record, config: RePROConfig, adapter: ModelAdapter, what: str, fix_dropout: str) -> None:
    """Config, dropout: the parts of a record's check shared by both kinds."""
    if record.config != config:
        raise UnusableRecord(f"{what}: the scorer's config changed since the capture began (its token "
                             "statistics and hidden states were taken under the old one); capture again")
    if record.dropout is not None:
        raise UnusableRecord(f"{what}: dropout was in effect during the recorded pass ({record.dropout}), "
                             f"while score() scores in eval mode; {fix_dropout}")


def _check_window(adapter: ModelAdapter, items: list[Item], what: str) -> None:
    """Every answer copy's real sequence ``[q, y[0..f), a]`` must fit the sliding window: the extend
    step hands the model one explicit mask for all layers, so a window would not be applied."""
    longest = max((len(it.prompt) + len(it.response) + len(it.answer) for it in items), default=0)
    reason = sliding_window_refusal(adapter.model, longest)
    if reason is not None:
        raise UnusableRecord(f"{what}: {reason}. Score with backend='naive'")


def _check_positions(adapter: ModelAdapter, positions: torch.Tensor | None, real: torch.Tensor,
                     what: str) -> np.ndarray:
    """The position of each row's first real column, after checking the recorded positions: on its
    real columns every row counts up by one per column (a left-padded row is one contiguous run),
    and from 0 where the model looks positions up in a learned table (GPT-2's ``wpe``: a shifted
    row would read other embeddings than ``score()``'s). Rotary positions may start anywhere: the
    attention scores depend on their differences only. ``positions`` None: the model numbered the
    columns ``0, 1, ...``. ``real``: bool ``[B, L]``, True on real columns."""
    n, width = real.shape
    columns = torch.arange(width)
    if positions is None:
        positions = columns.expand(n, -1)
        given = "numbered the columns 0, 1, ... (no position_ids were passed)"
    else:
        positions = positions.detach().cpu().expand(n, -1)
        given = "got position_ids"
    real = real.cpu()
    first = real.float().argmax(1)  # first real column of each row (prompts have >= 1 real token)
    start = positions.gather(1, first[:, None])[:, 0]
    expected = start[:, None] + (columns[None] - first[:, None])
    bad = (real & (positions != expected)).any(1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise UnusableRecord(f"{what}: the recorded pass {given} that do not count up by one over row "
                             f"{row}'s real tokens; pass position_ids that count from each row's first "
                             "real token")
    if adapter.max_positions is not None and (start != 0).any():
        row = int((start != 0).nonzero()[0])
        raise UnusableRecord(f"{what}: the recorded pass {given}, so row {row}'s first real token sat "
                             f"at position {int(start[row])}; {type(adapter.model).__name__} looks positions "
                             "up in a learned table, so score() would read position 0. Pass position_ids "
                             "that count from each row's first real token (attention_mask.cumsum(-1) - 1)")
    return start.numpy()


def _check_cache(cache, columns: int, what: str) -> None:
    reason = kv_cache_refusal(cache, columns)
    if reason is not None:
        if "no KV cache" in reason or "empty KV cache" in reason:
            reason += (" (gradient checkpointing turns the cache off in train mode: run the recorded pass "
                       "in eval mode or without gradient checkpointing)")
        raise UnusableRecord(f"{what}: {reason}")


class _CacheRestore:
    """Put a record's KV cache back as recorded after the scorer extended it: every layer's state
    (transformers' dynamic layers replace their key/value tensors on update, never write into them,
    so the recorded tensors are intact and only the references need restoring)."""

    def __init__(self, cache):
        self.cache = cache
        self.saved = [(layer, dict(vars(layer))) for layer in getattr(cache, "layers", ())]
        self.cache_state = dict(vars(cache)) if hasattr(cache, "__dict__") else None

    def restore(self) -> None:
        """Every layer's and the cache's attributes as they were when this object was made."""
        for layer, state in self.saved:
            vars(layer).clear()
            vars(layer).update(state)
        if self.cache_state is not None:
            vars(self.cache).clear()
            vars(self.cache).update(self.cache_state)
            if isinstance(self.cache_state.get("layers"), list):
                self.cache.layers = [layer for layer, _ in self.saved]


# ---------------------------------------------------------------------------------------------
# The three sources
# ---------------------------------------------------------------------------------------------

class Phase1Source(Protocol):
    """What `RePROScorer._run` asks of a phase-1 source. Constructing one checks its inputs."""

    name: str  # "own_forward", "old_logps" or "generation"
    token_logprobs: torch.Tensor | None  # a trainer's own [N, Lc] log-probs to return as they are

    def precision(self):
        """The autocast context the stages run in."""
        ...

    def passes(self, items: list[Item], counts: list[int]):
        """``(group, ResponsePass)`` per micro-batch: the trajectories and their phase 1."""
        ...

    def release(self) -> None:
        """Put back anything of the caller's that the stages changed (a recorded cache)."""
        ...


class OwnForward:
    """Phase 1 by the scorer's own forward: the backend's micro-batches, one forward over each."""

    name = "own_forward"
    token_logprobs = None  # the result's token log-probs are the scorer's own

    def __init__(self, backend: Backend):
        self.backend = backend

    def precision(self):
        """The caller's autocast state, as it is."""
        return contextlib.nullcontext()

    def passes(self, items: list[Item], counts: list[int]):
        """``(group, ResponsePass)`` per micro-batch of the backend."""
        for group in self.backend.groups(items, counts):
            yield group, self.backend.response_pass(items, group)

    def release(self) -> None:
        """Nothing of the caller's to put back."""


class RecordedForward:
    """Phase 1 from a trainer's own forward (`ForwardRecord`) over left-padded prompts + right-padded
    completions: the trainer's token statistics, the record's hidden states and cache."""

    name = "old_logps"

    def __init__(self, record, adapter: ModelAdapter, config: RePROConfig, items: list[Item], prompt_ids,
                 masks, completion_ids, token_logprobs, token_entropies):
        """Check ``record`` against the tensors of `score_phase1` (``masks``: the bool prompt and
        completion masks); raises `UnusableRecord` where it is not the pass ``score()`` would run."""
        if not isinstance(record, ForwardRecord):
            raise TypeError(f"phase1: expected the record of capture_phase1(), got {type(record).__name__}")
        prompt_mask, completion_mask = masks
        check_left_padded(prompt_mask, "score_phase1")
        n, lq, lc = prompt_ids.shape[0], prompt_ids.shape[1], completion_ids.shape[1]
        for name, t in (("token_logprobs", token_logprobs), ("token_entropies", token_entropies)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"{name}: expected a float [N, Lc] = {[n, lc]} tensor, got "
                                f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
            if tuple(t.shape) != (n, lc):
                raise ValueError(f"{name}: expected a float [N, Lc] = {[n, lc]} tensor, got {tuple(t.shape)}")
        what = "phase1"
        if record.calls != 1:
            raise UnusableRecord(f"{what}: expected one decoder call inside capture_phase1(), recorded "
                                 f"{record.calls}; run one micro-batch per capture")
        _check_common(record, config, adapter, what,
                      "run the trainer's forward with the model in eval mode (TRL: disable_dropout=True)")
        if record.input_ids is None or tuple(record.input_ids.shape) != (n, lq + lc):
            seen = None if record.input_ids is None else tuple(record.input_ids.shape)
            raise UnusableRecord(f"{what}: its forward was fed input_ids of shape {seen}, expected "
                                 f"[prompt_ids | completion_ids] = {(n, lq + lc)}")
        real = torch.cat([prompt_mask, completion_mask], dim=1)
        fed = record.input_ids.cpu()
        given = torch.cat([prompt_ids, completion_ids], dim=1).detach().cpu()
        if not torch.equal(fed[real], given[real]):
            raise UnusableRecord(f"{what}: the tokens its forward was fed are not "
                                 "prompt_ids | completion_ids")
        mask = record.attention_mask
        if mask is None:
            if not real.all():
                raise UnusableRecord(f"{what}: its forward got no attention_mask, so its pad tokens were "
                                     "attended; pass the concatenated prompt and completion masks")
        elif mask.ndim != 2 or not torch.equal(mask.detach().cpu().bool(), real):
            raise UnusableRecord(f"{what}: its forward's attention_mask is not "
                                 f"[prompt_mask | completion_mask] (got shape {tuple(mask.shape)})")
        start = _check_positions(adapter, record.position_ids, real, what)
        _check_cache(record.cache, lq + lc, what)
        _check_window(adapter, items, what)
        self.record, self.adapter = record, adapter
        self.real_completion = completion_mask
        self.token_logprobs, self.token_entropies = token_logprobs, token_entropies
        self.lq, self.lc = lq, lc
        # y[0] sits at column lq, right after row b's last prompt token at position start + |q| - 1.
        self.position_base = start + prompt_mask.sum(1).numpy()

    def precision(self):
        """The caller's autocast state (the trainer scores under the autocast it ran its forward in)."""
        return contextlib.nullcontext()

    def passes(self, items: list[Item], counts: list[int]):
        """The whole batch as one micro-batch: the trainer's statistics, the record's rows."""
        real = self.real_completion.to(self.adapter.device)
        logprobs = self.token_logprobs.detach()[real].float()
        entropies = self.token_entropies.detach()[real].float()
        self._restore = _CacheRestore(self.record.cache)
        layout = _trainer_layout(logprobs, entropies, self.record.hidden, self.record.cache, items, self.lq,
                                 self.lc, self.position_base)
        yield list(range(len(items))), layout

    def release(self) -> None:
        """The record's cache as recorded."""
        if hasattr(self, "_restore"):
            self._restore.restore()


class RecordedGeneration:
    """Phase 1 from a trainer's ``model.generate()`` (`GenerationRecord`): the recorded calls plus
    one more cached step for the last sampled column (``generate`` never feeds it), statistics
    from the logits it sampled with (or the head on the recorded hidden states)."""

    name = "generation"
    token_logprobs = None  # from the sampling logits, in the scorer's own layout

    def __init__(self, record, adapter: ModelAdapter, config: RePROConfig, items: list[Item], prompt_ids,
                 masks, completion_ids):
        """Check ``record`` against the tensors of `score_generation`; raises `UnusableRecord` where
        it is not the pass ``score()`` would run."""
        if not isinstance(record, GenerationRecord):
            raise TypeError(f"generation: expected the record of capture_generation(), got "
                            f"{type(record).__name__}")
        prompt_mask, completion_mask = masks
        check_left_padded(prompt_mask, "score_generation")
        what = "generation"
        if record.broken is not None:
            raise UnusableRecord(f"{what}: not one generate() call of one batch: {record.broken}")
        if record.calls == 0:
            raise UnusableRecord(f"{what}: no decoder call was recorded; call model.generate(...) of the "
                                 "scorer's model inside capture_generation()")
        _check_common(record, config, adapter, what,
                      "generate with the model in eval mode (TRL: disable_dropout=True)")
        if record.sampling is not None:
            do_sample, temperature = record.sampling
            if do_sample and temperature is not None and temperature != config.temperature:
                raise UnusableRecord(f"{what}: generate() sampled at temperature {temperature} but the "
                                     f"scorer's config has temperature {config.temperature}; RePro's token "
                                     "log-probs and entropies are those of the sampling distribution")
        fed, hidden, positions = record.joined()
        n, lq, lc = prompt_ids.shape[0], prompt_ids.shape[1], completion_ids.shape[1]
        if fed.shape[0] != n:
            raise ValueError(f"generation: it sampled {fed.shape[0]} rows, expected {n} (one per prompt_ids "
                             "row; num_return_sequences must be 1: repeat the prompts instead)")
        sampled = fed.shape[1] - lq + 1  # completion columns generate produced; the last one never fed
        if not 1 <= sampled <= lc:
            raise ValueError(f"generation: its decoder was fed {fed.shape[1]} columns, expected prompt_ids' "
                             f"{lq} plus at most {lc - 1} sampled ones (completion_ids has {lc} columns)")
        _check_cache(record.cache, fed.shape[1], what)
        mask = record.attention_mask
        if mask is None:  # generate leaves out a mask of ones (no row padded)
            mask = torch.ones(fed.shape, dtype=torch.long, device=fed.device)
        if tuple(mask.shape) != tuple(fed.shape):
            raise UnusableRecord(f"{what}: its decoder calls got no [N, columns fed] = {list(fed.shape)} "
                                 f"attention mask (got {list(mask.shape)}); pass a 2-D attention_mask to "
                                 "generate()")
        fed_cpu, mask_cpu = fed.cpu(), mask.cpu().bool()
        if not torch.equal(fed_cpu[:, :lq][prompt_mask], prompt_ids.detach().cpu()[prompt_mask]):
            raise ValueError("prompt_ids: not the prompts generate() was given")
        if not torch.equal(mask_cpu[:, :lq], prompt_mask):
            raise ValueError("prompt_mask: not the attention mask generate() was given")
        if completion_mask[:, sampled:].any():
            raise ValueError(f"completion_mask: real tokens past column {sampled}, the last one generate() "
                             "sampled")
        fed_real = completion_mask[:, : sampled - 1]
        given = completion_ids.detach().cpu()[:, : sampled - 1]
        if not torch.equal(fed_cpu[:, lq:][fed_real], given[fed_real]):
            raise ValueError("completion_ids: not the tokens generate() sampled")
        if not mask_cpu[:, lq:][fed_real].all():
            raise UnusableRecord(f"{what}: a real completion token was hidden from attention while sampling")
        real = torch.cat([prompt_mask, fed_real], dim=1)
        start = _check_positions(adapter, positions, real, what)
        _check_window(adapter, items, what)
        self.record, self.adapter = record, adapter
        self.hidden, self.positions, self.mask = hidden, positions, mask
        self.real_completion = completion_mask[:, :sampled]
        self.last_ids = completion_ids[:, sampled - 1: sampled]
        self.lq, self.sampled = lq, sampled
        self.position_base = start + prompt_mask.sum(1).numpy()

    def precision(self):
        """The precision the generation ran in (its autocast state, recorded at its first call)."""
        enabled, dtype = self.record.autocast
        return torch.autocast(self.adapter.device.type, dtype=dtype, enabled=enabled)

    def passes(self, items: list[Item], counts: list[int]):
        """The whole batch as one micro-batch, after one more cached step: the key and value of the
        last sampled column (a prefix may end there) and the hidden state after it."""
        adapter, device, record = self.adapter, self.adapter.device, self.record
        self._restore = _CacheRestore(record.cache)
        mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        last_position = None if self.positions is None else self.positions[:, -1:] + 1
        last_ids = self.last_ids.to(device)
        last, _ = adapter.run_decoder(last_ids, mask, last_position, cache=record.cache, use_cache=True)
        hidden = torch.cat([self.hidden, last], dim=1)
        logprobs, entropies = self._sampled_stats(last_ids)
        if logprobs is None:  # generate's logits were not seen: the head on the hidden states
            logprobs, entropies = self._head_stats(hidden, items)
        layout = _trainer_layout(logprobs, entropies, hidden, record.cache, items, self.lq, self.sampled,
                                 self.position_base)
        yield list(range(len(items))), layout

    def _sampled_stats(self, last_ids: torch.Tensor):
        """Packed ``(log p(y_t), H_t)`` of the real completion tokens from the logits ``generate()``
        sampled them with (one set per sampled column), or ``(None, None)`` when not every column's
        logits were recorded (a wrapper whose outer forward generate() does not call)."""
        record, sampled = self.record, self.sampled
        if record.pending is None or (len(record.entropies), len(record.logprobs) + 1) != (sampled, sampled):
            return None, None
        last = record.pending.gather(1, last_ids.reshape(-1, 1).to(record.pending.device).long())[:, 0]
        logprobs = torch.stack([*record.logprobs, last], dim=1)
        entropies = torch.stack(record.entropies, dim=1)
        keep = self.real_completion.to(logprobs.device)
        return logprobs[keep], entropies[keep]

    def _head_stats(self, hidden: torch.Tensor, items: list[Item]):
        """Packed ``(log p(y_t), H_t)`` from the scorer's head on the hidden states: row b, column
        ``lq - 1 + t`` predicts ``y[t]``."""
        device = self.adapter.device
        starts = np.arange(len(items)) * hidden.shape[1] + self.lq - 1
        index = np.concatenate([s + np.arange(len(it.response)) for s, it in zip(starts, items)] or [[]])
        targets = np.concatenate([it.response for it in items] or [[]]).astype(np.int64)
        rows = hidden.flatten(0, 1)[torch.from_numpy(index.astype(np.int64)).to(device)]
        return self.adapter.head_stats(rows, torch.from_numpy(targets).to(device))

    def release(self) -> None:
        """The record's cache as recorded (without the extra step and the answer copies)."""
        if hasattr(self, "_restore"):
            self._restore.restore()


def _trainer_layout(logprobs, entropies, hidden, cache, items: list[Item], lq: int, lc: int,
                    position_base: np.ndarray) -> ResponsePass:
    """A trainer's pass as the `ResponsePass` the fast backend extends: left-padded prompts +
    right-padded completions, so ``y[0]`` sits at column ``lq`` and the pad columns
    ``[0, lq - |q|)`` are no key of any answer copy."""
    n = len(items)
    offset = np.full(n, lq)
    key_start = lq - np.array([len(it.prompt) for it in items], dtype=np.int64)
    return ResponsePass(logprobs, entropies, hidden, cache, lq + lc, offset=offset, key_start=key_start,
                        position_base=position_base)
