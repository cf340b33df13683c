"""Plugging `repro_fast.ops.prefix_attention` into any transformers decoder for phase 2.

transformers looks up ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`` at every forward
and passes extra keyword arguments of the decoder's forward down to it. For the phase-2 extend
step only (`phase2_attention`), the model's implementation is switched to ``repro_fast_prefix``,
whose function runs our kernel with the ``repro_prefix=PrefixMeta(...)`` metadata of that call;
phase 1 runs under the model's own implementation, untouched. The name also gets a mask entry
that builds nothing: the kernel takes its whole pattern from the metadata, so a dense mask would
be pure waste. Registration is explicit and repeat-safe, never at import time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from repro_fast.ops import prefix_attention


def text_config(model):
    """The decoder's config (multimodal models keep it under ``get_text_config()``)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

NAME = "repro_fast_prefix"


@dataclass
class PrefixMeta:
    """Phase-2 metadata: per copy token, its cache limit and the start of its own copy."""

    limit: torch.Tensor  # [B, C] int32
    copy_start: torch.Tensor  # [B, C] int32


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    meta = kwargs.get("repro_prefix")
    if meta is None:
        raise RuntimeError(f"{NAME} attention called without its metadata (repro_prefix=PrefixMeta)")
    return prefix_attention(query, key, value, meta.limit, meta.copy_start, scaling, backend="triton"), None


def _no_mask(*args, **kwargs):
    return None


def register() -> str:
    """Register the phase-2 attention and its (empty) mask entry; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, _attention)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(NAME, _no_mask)
    return NAME


def supports_prefix_kernel(model) -> bool:
    """Whether phase 2 can run through the kernel: plain softmax attention (no logit
    soft-capping, which the kernel does not apply)."""
    return getattr(text_config(model), "attn_logit_softcapping", None) is None


@contextlib.contextmanager
def phase2_attention(model):
    """Within the block the model's attention is the prefix kernel; restored on exit."""
    original = getattr(model.config, "_attn_implementation", None) or "eager"
    _set_implementation(model, register())
    try:
        yield
    finally:
        _set_implementation(model, original)


def _set_implementation(model, name: str) -> None:
    try:
        model.set_attn_implementation(name)
    except (AttributeError, ValueError):
        model.config._attn_implementation = name
    text_cfg = text_config(model)
    if getattr(text_cfg, "_attn_implementation", name) != name:
        text_cfg._attn_implementation = name
