"""Triton kernels of the fused LM-head log-prob + entropy op, imported lazily by `logprob_entropy.py`
so that a `TRITON_INTERPRET=1` set by a test before the first Triton call is honoured (`triton.jit`
reads it at import). Kept compatible with triton 3.6: plain `range` loops, `tl.dot(a, b, acc)`,
no tensor descriptors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from repro_fast.dispatch import head_programs_per_sm, triton_interpret

# `triton.jit` returns an interpreter-backed function when this is set at import time.
INTERPRET = triton_interpret()

# Fixed, small blocks for the CPU interpreter (autotuning there would run every config).
_INTERPRET_BLOCKS = dict(BLOCK_M=16, BLOCK_V=64, BLOCK_K=32)
# V slices are multiples of this so every slice starts at a valid column (BLOCK_V divides it).
_V_SLICE_QUANTUM = 256


_AUTOTUNE_CONFIGS = [
    triton.Config(dict(BLOCK_M=128, BLOCK_V=128, BLOCK_K=64), num_warps=8, num_stages=3),
    triton.Config(dict(BLOCK_M=128, BLOCK_V=256, BLOCK_K=64), num_warps=8, num_stages=3),
    # Hopper (H100/H200) candidates: one more stage for the 128x256 tile (48 KiB a stage,
    # 192 KiB of the 227 KiB shared memory) and a tall 256x128 tile (two warpgroups).
    triton.Config(dict(BLOCK_M=128, BLOCK_V=256, BLOCK_K=64), num_warps=8, num_stages=4),
    triton.Config(dict(BLOCK_M=256, BLOCK_V=128, BLOCK_K=64), num_warps=8, num_stages=3),
    triton.Config(dict(BLOCK_M=64, BLOCK_V=128, BLOCK_K=64), num_warps=4, num_stages=4),
    triton.Config(dict(BLOCK_M=64, BLOCK_V=256, BLOCK_K=32), num_warps=8, num_stages=4),
    triton.Config(dict(BLOCK_M=16, BLOCK_V=256, BLOCK_K=64), num_warps=4, num_stages=4),
]


@triton.jit
def _logit_tile(
    hidden_ptr, weight_ptr, bias_ptr,
    rows, cols, row_ok, col_ok, H,
    stride_hm, stride_hk, stride_wv, stride_wk,
    inv_temperature,
    HAS_BIAS: tl.constexpr, IS_FP32: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """z[r, c] = (sum_k hidden[r, k] * weight[c, k] + bias[c]) * inv_temperature, fp32 [BM, BV]."""
    acc = tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32)
    h_base = hidden_ptr + rows.to(tl.int64)[:, None] * stride_hm
    w_base = weight_ptr + cols.to(tl.int64)[None, :] * stride_wv
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        h = tl.load(h_base + ks[None, :] * stride_hk, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_base + ks[:, None] * stride_wk, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST_DOT:
            # The CPU interpreter's bf16 tl.dot is wrong (triton 3.9); fp32 there is exact enough.
            acc = tl.dot(h.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        elif IS_FP32:
            # Default fp32 dot is TF32 on Ampere+: too coarse for the 1e-4 contract.
            acc = tl.dot(h, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(h, w, acc)
    if HAS_BIAS:
        b = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        acc += b[None, :]
    return acc * inv_temperature


@triton.jit
def _fwd_partial_kernel(
    hidden_ptr, weight_ptr, bias_ptr, targets_ptr,
    part_max_ptr, part_sum_ptr, part_ent_ptr, part_tgt_ptr,
    M, H, V, v_per_slice,
    stride_hm, stride_hk, stride_wv, stride_wk,
    inv_temperature,
    HAS_BIAS: tl.constexpr, IS_FP32: tl.constexpr, UPCAST_DOT: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Online softmax statistics of rows [pid_m*BM, +BM) over vocabulary slice pid_s; the [M, V]
    logits never reach memory. For the slice's columns c and each row:
        m   = max_c z_c
        s   = sum_c exp(z_c - m)
        t   = sum_c exp(z_c - m) * (z_c - m)        (so that entropy = log s - t / s)
        z_t = z[target] if the target lies in this slice else 0
    Merging a new tile with max m' >= m rescales by a = exp(m - m'):
        s <- a*s + s_tile,  t <- a*(t + (m - m')*s) + t_tile.
    Keeping t relative to the running max avoids cancelling two large numbers (lse and E[z]).
    Partials go to [num_slices, M] fp32 buffers.
    """
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    tgt = tl.load(targets_ptr + rows, mask=row_ok, other=-1).to(tl.int64)
    v_start = pid_s * v_per_slice
    v_end = tl.minimum(v_start + v_per_slice, V)
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    run_ent = tl.zeros((BLOCK_M,), dtype=tl.float32)
    tgt_logit = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < v_end
        z = _logit_tile(
            hidden_ptr, weight_ptr, bias_ptr, rows, cols, row_ok, col_ok, H,
            stride_hm, stride_hk, stride_wv, stride_wk, inv_temperature,
            HAS_BIAS, IS_FP32, UPCAST_DOT, BLOCK_M, BLOCK_V, BLOCK_K,
        )
        z = tl.where(col_ok[None, :], z, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z, axis=1))
        # Rows whose logits so far are all -inf (only possible with a -inf bias): keep 0 shifts.
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        shift = tl.where(run_sum > 0, run_max - safe_max, 0.0)
        alpha = tl.exp(shift)
        diff = z - safe_max[:, None]
        e = tl.exp(diff)
        if WITH_ENTROPY:
            # e == 0 covers masked columns and -inf logits; zero their diff so 0 * -inf never
            # happens (a NaN e keeps the row NaN).
            e_z = e * tl.where(e == 0, 0.0, diff)
            run_ent = alpha * (run_ent + shift * run_sum) + tl.sum(e_z, axis=1)
        run_sum = alpha * run_sum + tl.sum(e, axis=1)
        run_max = new_max
        is_tgt = cols[None, :].to(tl.int64) == tgt[:, None]
        tgt_logit += tl.sum(tl.where(is_tgt, z, 0.0), axis=1)

    out = pid_s * M + rows
    tl.store(part_max_ptr + out, run_max, mask=row_ok)
    tl.store(part_sum_ptr + out, run_sum, mask=row_ok)
    tl.store(part_ent_ptr + out, run_ent, mask=row_ok)
    tl.store(part_tgt_ptr + out, tgt_logit, mask=row_ok)


@triton.jit
def _fwd_combine_kernel(
    part_max_ptr, part_sum_ptr, part_ent_ptr, part_tgt_ptr, targets_ptr,
    logprob_ptr, entropy_ptr, lse_ptr,
    M, V, num_slices,
    BLOCK: tl.constexpr,
):
    """Merge slice partials per row: m = max_s m_s, a_s = exp(m_s - m),
    S = sum_s a_s s_s, T = sum_s a_s (t_s + (m_s - m) s_s), lse = m + log S,
    entropy = log S - T / S, logprob = z_target - lse (NaN if the target is outside [0, V))."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < M
    m = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    for s in range(0, num_slices):
        m = tl.maximum(m, tl.load(part_max_ptr + s * M + rows, mask=row_ok, other=float("-inf")))
    safe_m = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    ent = tl.zeros((BLOCK,), dtype=tl.float32)
    z_t = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, num_slices):
        m_s = tl.load(part_max_ptr + s * M + rows, mask=row_ok, other=float("-inf"))
        s_s = tl.load(part_sum_ptr + s * M + rows, mask=row_ok, other=0.0)
        t_s = tl.load(part_ent_ptr + s * M + rows, mask=row_ok, other=0.0)
        shift = tl.where(s_s > 0, m_s - safe_m, 0.0)
        a = tl.where(s_s > 0, tl.exp(shift), 0.0)
        total += a * s_s
        ent += a * (t_s + shift * s_s)
        z_t += tl.load(part_tgt_ptr + s * M + rows, mask=row_ok, other=0.0)
    total = tl.where(row_ok, total, 1.0)  # rows past M: keep the (unstored) math finite
    log_total = tl.log(total)
    lse = safe_m + log_total
    entropy = log_total - ent / total
    tgt = tl.load(targets_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    tgt_ok = (tgt >= 0) & (tgt < V)
    logprob = tl.where(tgt_ok, z_t - lse, float("nan"))
    tl.store(logprob_ptr + rows, logprob, mask=row_ok)
    tl.store(entropy_ptr + rows, entropy, mask=row_ok)
    tl.store(lse_ptr + rows, lse, mask=row_ok)


@triton.jit
def _bwd_dlogits_kernel(
    hidden_ptr, weight_ptr, bias_ptr, targets_ptr,
    lse_ptr, entropy_ptr, grad_logprob_ptr, grad_entropy_ptr,
    dlogits_ptr,
    M, H, V,
    stride_hm, stride_hk, stride_wv, stride_wk, stride_dm,
    inv_temperature,
    HAS_BIAS: tl.constexpr, IS_FP32: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dL/dx for the raw logits x = hidden @ weight.T + bias of one [BLOCK_M, BLOCK_V] tile, in
    the dtype of `dlogits_ptr` (the two GEMMs of the backward then run on cuBLAS). With z = x / tau,
    p = softmax(z), log p = z - lse and entropy Hn = -sum p log p (lse, Hn from the forward):
        d logp_t / dz_v = [v == t] - p_v,    d Hn / dz_v = -p_v (log p_v + Hn)
    so dL/dx_v = (g_lp ([v == t] - p_v) - g_H p_v (log p_v + Hn)) / tau.
    """
    pid_m = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = rows < M
    col_ok = cols < V
    z = _logit_tile(
        hidden_ptr, weight_ptr, bias_ptr, rows, cols, row_ok, col_ok, H,
        stride_hm, stride_hk, stride_wv, stride_wk, inv_temperature,
        HAS_BIAS, IS_FP32, UPCAST_DOT, BLOCK_M, BLOCK_V, BLOCK_K,
    )
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    ent = tl.load(entropy_ptr + rows, mask=row_ok, other=0.0)
    g_lp = tl.load(grad_logprob_ptr + rows, mask=row_ok, other=0.0)
    g_ent = tl.load(grad_entropy_ptr + rows, mask=row_ok, other=0.0)
    tgt = tl.load(targets_ptr + rows, mask=row_ok, other=-1).to(tl.int64)
    logp = z - lse[:, None]
    p = tl.exp(logp)
    p_logp_term = p * (tl.where(p > 0, logp, 0.0) + ent[:, None])  # p log p -> 0 as p -> 0
    is_tgt = cols[None, :].to(tl.int64) == tgt[:, None]
    g = g_lp[:, None] * (tl.where(is_tgt, 1.0, 0.0) - p) - g_ent[:, None] * p_logp_term
    g = g * inv_temperature
    ok = row_ok[:, None] & col_ok[None, :]
    out = dlogits_ptr + rows.to(tl.int64)[:, None] * stride_dm + cols[None, :]
    tl.store(out, g.to(dlogits_ptr.dtype.element_ty), mask=ok)


if INTERPRET:
    _fwd_partial = _fwd_partial_kernel
    _bwd_dlogits = _bwd_dlogits_kernel
else:
    _TUNING_KEY = ["H", "V", "HAS_BIAS", "IS_FP32"]
    _fwd_partial = triton.autotune(_AUTOTUNE_CONFIGS, key=[*_TUNING_KEY, "WITH_ENTROPY"])(_fwd_partial_kernel)
    _bwd_dlogits = triton.autotune(_AUTOTUNE_CONFIGS, key=_TUNING_KEY)(_bwd_dlogits_kernel)


# Forward programs per SM that the vocabulary slicing aims for (when M alone does not give them).
# Each program streams its whole slice, so with few waves the last one runs part-empty: 4 per SM
# left ~19% of an H200 idle at M = 8192, 32 gives ~16 waves (tail < 6%) for 16 bytes of partials
# per row and slice. `repro_fast.dispatch.head_programs_per_sm` may override it for tuning runs.
_PROGRAMS_PER_SM = 32


def _vocab_slicing(M: int, V: int, device: torch.device) -> tuple[int, int]:
    """(v_per_slice, num_slices): enough programs to fill the device when M is small."""
    if INTERPRET:
        programs_wanted = 4
    else:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        programs_wanted = head_programs_per_sm(_PROGRAMS_PER_SM) * sms
    m_blocks = triton.cdiv(M, _INTERPRET_BLOCKS["BLOCK_M"] if INTERPRET else 64)  # nominal BLOCK_M
    max_slices = triton.cdiv(V, _V_SLICE_QUANTUM)
    slices = max(1, min(max_slices, triton.cdiv(programs_wanted, m_blocks)))
    v_per_slice = triton.cdiv(triton.cdiv(V, slices), _V_SLICE_QUANTUM) * _V_SLICE_QUANTUM
    return v_per_slice, triton.cdiv(V, v_per_slice)


def _launch(kernel, v_programs, hidden, weight, bias, targets, temperature, *args, **constexprs) -> None:
    """Run ``kernel(hidden, weight, bias, targets, *args, 1 / temperature)`` on a (row blocks,
    v_programs(meta)) grid: the interpreter's fixed blocks, or autotuned ones on CUDA."""
    def grid(meta):
        return triton.cdiv(hidden.shape[0], meta["BLOCK_M"]), v_programs(meta)

    bias_arg = bias if bias is not None else hidden  # never read when HAS_BIAS is False
    flags = dict(HAS_BIAS=bias is not None, IS_FP32=hidden.dtype == torch.float32, UPCAST_DOT=INTERPRET)
    blocks = _INTERPRET_BLOCKS if INTERPRET else {}
    kernel[grid](hidden, weight, bias_arg, targets, *args, 1.0 / temperature, **flags, **constexprs, **blocks)


def logprob_entropy_fwd(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    temperature: float, with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward launcher on validated inputs: fp32 (logprobs, entropy, lse), each [M]. Without
    ``with_entropy`` the entropy output is meaningless (not accumulated)."""
    M, H = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    logprobs, entropy, lse = (torch.empty(M, dtype=torch.float32, device=dev) for _ in range(3))
    if M == 0:
        return logprobs, entropy, lse
    v_per_slice, num_slices = _vocab_slicing(M, V, dev)
    parts = torch.empty(4, num_slices, M, dtype=torch.float32, device=dev)
    _launch(
        _fwd_partial, lambda meta: num_slices, hidden, weight, bias, targets, temperature,
        *parts, M, H, V, v_per_slice, *hidden.stride(), *weight.stride(), WITH_ENTROPY=with_entropy,
    )
    block = 128
    _fwd_combine_kernel[(triton.cdiv(M, block),)](
        *parts, targets, logprobs, entropy, lse, M, V, num_slices, BLOCK=block,
    )
    return logprobs, entropy, lse


def logprob_entropy_dlogits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    temperature: float, lse: torch.Tensor, entropy: torch.Tensor,
    grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor,
) -> torch.Tensor:
    """dL/d(raw logits) [rows, V] in the dtype of `hidden`, for its rows (a non-empty chunk)."""
    M, H = hidden.shape
    V = weight.shape[0]
    out = torch.empty(M, V, dtype=hidden.dtype, device=hidden.device)
    _launch(
        _bwd_dlogits, lambda meta: triton.cdiv(V, meta["BLOCK_V"]), hidden, weight, bias, targets,
        temperature, lse, entropy, grad_logprobs, grad_entropy, out, M, H, V,
        *hidden.stride(), *weight.stride(), out.stride(0),
    )
    return out
