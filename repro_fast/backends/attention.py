"""Plugging `repro_fast.ops.prefix_attention` into any transformers decoder for phase 2.

transformers looks up ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`` at every forward
and passes the decoder's extra keyword arguments down to it. Only for the phase-2 extend step
(`phase2_attention`) is the model switched to ``repro_fast_prefix``, whose function runs our kernel
with that call's ``repro_prefix=PrefixMeta(...)``; phase 1 keeps the model's own implementation.
The name's mask entry builds nothing: the kernel takes its whole pattern from the metadata, so a
dense mask would be pure waste. Registration is explicit and repeat-safe, never at import time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from repro_fast.model import text_config
from repro_fast.ops import prefix_attention

NAME = "repro_fast_prefix"


@dataclass
class PrefixMeta:
    """Phase-2 metadata: per copy token (``[B, C]`` int32), its cache limit and its copy's start."""

    limit: torch.Tensor
    copy_start: torch.Tensor


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    meta = kwargs.get("repro_prefix")
    if meta is None:
        raise RuntimeError(f"{NAME} attention called without its metadata (repro_prefix=PrefixMeta)")
    return prefix_attention(query, key, value, meta.limit, meta.copy_start, scaling, backend="triton"), None


def register() -> str:
    """Register the phase-2 attention and its (empty) mask entry; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, _attention)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(NAME, lambda *args, **kwargs: None)
    return NAME


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
