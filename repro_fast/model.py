"""The model as the scorer sees it: a Hugging Face causal LM split into ``decoder(ids) -> hidden``
and ``LM head(hidden) -> (log-prob, entropy)``, the head applied only to the rows each quantity
needs (never full-vocabulary logits everywhere); the one forward over ``[q, y]`` that gives every
response token's log-prob and entropy (the scorer's own phase 1, and the trainer's
`sequence_logprobs`); `scoring_mode`; and what the fast backend needs to know of a model before it
extends a KV cache: which modules would make a pass differ from an eval-mode one
(`dropout_in_effect`), its sliding window (`sliding_window`) and whether a cache can take the
answer copies (`kv_cache_refusal`)."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import numpy as np
import torch

from repro_fast import ops
from repro_fast.batching import right_padded


def text_config(model):
    """The decoder's config (multimodal models keep it under ``get_text_config()``)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def cache_of(out):
    """The KV cache of a decoder output, read under the field name this release declares (asking a
    new release's output for ``past_key_values`` logs a deprecation warning on every command)."""
    field = "cache" if "cache" in getattr(out, "__dataclass_fields__", {}) else "past_key_values"
    return getattr(out, field, None)


# The chunked head's logits per chunk, at most: 2^24 fp32 values (64 MiB), whatever the vocabulary.
HEAD_CHUNK_ELEMENTS = 1 << 24


def dropout_in_effect(model) -> str | None:
    """The first module of ``model`` that would make a forward differ from an eval-mode one, named
    (``"transformer.h.0.attn.attn_dropout (Dropout, p=0.1)"``), or None. A module counts when it is
    in train mode and is a dropout layer with ``p > 0`` or holds a positive float setting named
    like one (``attention_dropout``, ``hidden_dropout``, ``router_jitter_noise``: attention
    functions read those floats only in train mode)."""
    for name, module in model.named_modules():
        if not module.training:
            continue
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            if module.p > 0:
                return f"{name or type(model).__name__} ({type(module).__name__}, p={module.p})"
            continue
        for attr, value in vars(module).items():
            if (("dropout" in attr or "jitter" in attr) and isinstance(value, float)
                    and not isinstance(value, bool) and value > 0):
                return f"{name or type(model).__name__}.{attr} = {value}"
    return None


def sliding_window(model) -> int | None:
    """The attention window of the model's sliding-window layers (keys further back than it are
    not seen), or None when no layer slides."""
    cfg = text_config(model)
    window = getattr(cfg, "sliding_window", None)
    if not window or getattr(cfg, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None and not any("sliding" in str(t) for t in layer_types):
        return None
    return int(window)


def sliding_window_refusal(model, longest: int | None) -> str | None:
    """Why real sequences ``[q, y, a]`` of up to ``longest`` tokens (None: any length) cannot be
    scored by extending a cache (None when they can): the extend step hands the model one explicit
    mask for every layer, so a sliding window would not be applied past its length."""
    window = sliding_window(model)
    if window is None or (longest is not None and longest <= window):
        return None
    size = ("sequences of any length" if longest is None
            else f"a prompt + response + answer of {longest} tokens")
    return (f"{type(model).__name__}'s sliding window ({window}) is shorter than {size}; the answer copies "
            "of the extend step would see keys beyond it")


def kv_cache_refusal(cache, columns: int) -> str | None:
    """Why the answer copies cannot extend ``cache`` as the keys and values of exactly ``columns``
    fed columns (None when they can): every layer must be a growable attention KV layer holding
    all of them. A recurrent or linear-attention layer (hybrid models) keeps one state for the whole
    sequence, which no copy can rewind to its prefix; a sliding-window layer past its window has
    dropped its oldest columns; a static layer is preallocated longer than what was fed."""
    if cache is None:
        return "the decoder returned no KV cache"
    layers = getattr(cache, "layers", None)
    if layers is None:
        return f"the KV cache ({type(cache).__name__}) has no per-layer key/value tensors"
    for i, layer in enumerate(layers):
        kind = type(layer).__name__
        if kind == "DummyLayer":  # a layer without attention (MLP / MoE only): nothing cached
            continue
        if getattr(layer, "max_cache_len", None) is not None:
            return (f"layer {i} of the KV cache is a {kind}: a static cache is preallocated and cannot be "
                    "extended by the answer copies; use the default dynamic cache")
        if any("linear" in c.__name__.lower() or "mamba" in c.__name__.lower() for c in type(layer).__mro__):
            return (f"layer {i} of the KV cache is a {kind}: a recurrent (linear-attention / state-space) "
                    "layer keeps one state for the whole sequence, which the answer copies cannot rewind "
                    "to their prefix")
        keys = getattr(layer, "keys", None)
        if not isinstance(keys, torch.Tensor) or keys.numel() == 0:
            return f"the decoder returned an empty KV cache (layer {i}, a {kind}, holds no keys)"
        if keys.shape[-2] != columns:
            return (f"layer {i} of the KV cache ({kind}) holds {keys.shape[-2]} columns of the {columns} "
                    "fed: a sliding-window layer drops the columns beyond its window")
    return None


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
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

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
            step = max(1, HEAD_CHUNK_ELEMENTS // max(head.weight.shape[0], 1))
            for rows, rows_targets in zip(hidden.split(step), targets.split(step)):
                with torch.autocast(device_type, dtype=dtype, enabled=autocast):
                    logits = self.logits(rows if autocast else rows.to(dtype))
                logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)
                lps.append(logp.gather(1, rows_targets[:, None].long())[:, 0])
                if with_entropy:
                    p = logp.exp()
                    ents.append(-torch.where(p == 0, 0.0, p * logp).sum(-1))
            return torch.cat(lps), torch.cat(ents) if with_entropy else None

    def run_decoder(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False, **kwargs):
        """One decoder call: final hidden states ``[B, L, H]`` and the KV cache (when
        ``use_cache``); extra keyword arguments go down to the attention functions."""
        if cache is not None:
            kwargs[self.cache_arg] = cache
        out = self.model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=use_cache, return_dict=True, **kwargs,
        )
        return out.last_hidden_state, cache_of(out)

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
            hidden, _ = self.run_decoder(ids, mask, pos)
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
        hidden, cache = self.run_decoder(ids, mask, pos, use_cache=keep)
        if keep and cache is None:
            raise ValueError(f"model: {type(self.model).__name__} returned no KV cache from its decoder; "
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
