"""Plugging `repro_fast.ops.prefix_attention` (the op) into any transformers decoder for phase 2.

transformers looks up ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`` at every forward
and passes extra keyword arguments of the decoder's forward down to it. We register, per original
implementation ``impl`` (sdpa, eager, flash_attention_2, ...), a function under the name
``repro_fast_prefix+impl`` that

- runs our prefix-limited kernel when the call carries ``repro_prefix=PrefixMeta(...)`` (the
  phase-2 extend step), and
- delegates everything else to ``impl`` unchanged,

together with ``impl``'s *mask* function under the same name: without a mask entry transformers
would hand our function ``None`` as the mask and the delegated calls would silently lose
causality. Registration is explicit and repeat-safe (`register`), never at import time, and the
model's own implementation is restored after scoring (`prefix_attention_enabled`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from repro_fast.ops import prefix_attention

PREFIX = "repro_fast_prefix+"


@dataclass
class PrefixMeta:
    """Phase-2 metadata: per copy token, its cache limit and the start of its own copy."""

    limit: torch.Tensor  # [B, C] int32
    copy_start: torch.Tensor  # [B, C] int32
    backend: str | None = None  # forwarded to `prefix_attention` (None: by device)


def _make_attention(original: str):
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        meta = kwargs.pop("repro_prefix", None)
        if meta is None:
            return ALL_ATTENTION_FUNCTIONS[original](
                module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
            )
        out = prefix_attention(query, key, value, meta.limit, meta.copy_start, scaling, backend=meta.backend)
        return out, None

    attention.__name__ = f"repro_fast_prefix_attention_{original}"
    return attention


def register(original: str) -> str:
    """Register the phase-2 attention that wraps ``original``; returns its name (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = PREFIX + original
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_attention(original))
    if name not in ALL_MASK_ATTENTION_FUNCTIONS and original in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    return name


def supports_prefix_kernel(model) -> bool:
    """Whether phase 2 can run through the kernel: a plain softmax attention (no logit
    soft-capping, which the kernel does not apply) under a registered implementation."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(cfg, "attn_logit_softcapping", None) is not None:
        return False
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    # "eager" is not in the registry (models call their own eager function), so it keeps the
    # 4-D mask path.
    return (getattr(cfg, "_attn_implementation", None) or "eager") in ALL_ATTENTION_FUNCTIONS


@contextlib.contextmanager
def prefix_attention_enabled(model):
    """Within the block, the model's attention runs our kernel on calls that carry
    ``repro_prefix=...`` and its own implementation otherwise; restored on exit."""
    cfg = model.config
    original = getattr(cfg, "_attn_implementation", None) or "eager"
    if original.startswith(PREFIX):  # re-entrant use
        yield
        return
    name = register(original)
    _set_implementation(model, name)
    try:
        yield
    finally:
        _set_implementation(model, original)


def _set_implementation(model, name: str) -> None:
    try:
        model.set_attn_implementation(name)
    except (AttributeError, ValueError):
        model.config._attn_implementation = name
    text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(text_cfg, "_attn_implementation", name) != name:
        text_cfg._attn_implementation = name
