"""Fused ops for RePro scoring. Each op: a Triton kernel (CUDA), a torch path (CPU), and a
`naive` reference that defines it (`repro_fast/ops/naive.py`).

- `fused_logprob_entropy(hidden, weight, targets, temperature=1.0)`: LM head -> log-prob of the
  target token and softmax entropy per row, without materializing [M, V] logits (SPEC §7);
  `fused_logprob` is the same without the entropy. References: `logprob_entropy_naive`,
  `logprob_naive`; `logprob_entropy_torch` is the chunked torch path (bounded memory).
- `prefix_attention(query, key, value, limit, copy_start, scale)`: phase-2 attention of answer
  copies over a shared prefix cache (Triton on CUDA, SDPA with a dense mask on CPU), with its
  reference `prefix_attention_naive`.
- `segment_select(entropies, candidates, k)`: SPEC §4's top-k segment starts for a batch in
  one launch (reference `segment_select_naive`).

Every op takes ``backend="auto" | "triton" | "torch"`` (None: ``REPRO_FAST_KERNELS``); see
`repro_fast.dispatch`.
"""

from repro_fast.ops.logprob_entropy import fused_logprob, fused_logprob_entropy, logprob_entropy_torch
from repro_fast.ops.naive import (
    logprob_entropy_naive,
    logprob_naive,
    prefix_attention_naive,
    segment_select_naive,
)
from repro_fast.ops.prefix_limited_attention import prefix_attention, prefix_attention_mask, prefix_attention_torch
from repro_fast.ops.segment_select import segment_select, segment_select_torch

__all__ = [
    "fused_logprob_entropy",
    "fused_logprob",
    "logprob_entropy_torch",
    "logprob_entropy_naive",
    "logprob_naive",
    "segment_select",
    "segment_select_torch",
    "segment_select_naive",
    "prefix_attention",
    "prefix_attention_torch",
    "prefix_attention_mask",
    "prefix_attention_naive",
]
