"""Fused ops for RePro scoring: `fused_logprob_entropy` / `fused_logprob` (LM head without [M, V]
logits), `prefix_attention` (phase 2) and `segment_select` (SPEC §4's top-k). Each has a Triton
kernel (CUDA) and a torch path (CPU), chosen by ``backend="auto" | "triton" | "torch"`` (None:
``REPRO_FAST_KERNELS``, see `repro_fast.dispatch`), and a `naive` reference in `naive.py`.
"""

from repro_fast.ops.logprob_entropy import fused_logprob, fused_logprob_entropy, logprob_entropy_torch
from repro_fast.ops.naive import (
    logprob_entropy_naive,
    logprob_naive,
    prefix_attention_naive,
    segment_select_naive,
)
from repro_fast.ops.prefix_limited_attention import (
    prefix_attention,
    prefix_attention_mask,
    prefix_attention_torch,
)
from repro_fast.ops.segment_select import segment_select, segment_select_torch

__all__ = [
    "fused_logprob_entropy", "fused_logprob", "logprob_entropy_torch",
    "logprob_entropy_naive", "logprob_naive",
    "segment_select", "segment_select_torch", "segment_select_naive",
    "prefix_attention", "prefix_attention_torch", "prefix_attention_mask", "prefix_attention_naive",
]
