"""Triton kernel of `prefix_attention`. One program per (block of query rows, batch row x KV head,
KV split): rows are the (copy token, query head) pairs of one KV head, so each K/V tile serves
every query head sharing it (GQA). Phase 2 has few queries but long prefixes, so the cache range
is split across programs (flash-decoding) into fp32 partials that the wrapper merges.
"""

from __future__ import annotations

import triton
import triton.language as tl

# A finite "minus infinity" for running maxima: a fully masked tile gives exp2(-inf) = 0, not NaN.
_NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def _attend_tile(q, k_ptrs, v_ptrs, load_mask, visible, qk_scale, m_i, l_i, acc,
                 FP32_DOT: tl.constexpr, IEEE: tl.constexpr):
    """One K/V tile of online softmax: load it, score the visible (row, key) pairs, fold them
    into the running max ``m_i``, sum ``l_i`` and unnormalized output ``acc`` (log2 domain)."""
    k = tl.load(k_ptrs, mask=load_mask, other=0.0)
    v = tl.load(v_ptrs, mask=load_mask, other=0.0)
    if FP32_DOT:  # the CPU interpreter's low-precision tl.dot is unreliable
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    precision: tl.constexpr = "ieee" if IEEE else None  # fp32 inputs: exact products, not TF32
    s = tl.dot(q, tl.trans(k), input_precision=precision)
    s = tl.where(visible, s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=precision)
    return m_new, l_i, acc


@triton.jit
def _prefix_attention_partial_kernel(
    Q, K, V, LIMIT, COPY_START,  # inputs
    PART_O, PART_M, PART_L,  # outputs: [S, B*HKV, R, D], [S, B*HKV, R], [S, B*HKV, R]
    stride_qb, stride_qh, stride_qc, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_lb, stride_lc, stride_sb, stride_sc,
    C, L, HKV, G, D, R, keys_per_split, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    FP32_DOT: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    num_splits = tl.num_programs(2)
    b = pid_bh // HKV
    kvh = pid_bh % HKV
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # row r = (copy token c, head h)
    c = rows // G
    h = kvh * G + rows % G
    row_ok = rows < R
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(
        Q + b * stride_qb + h[:, None] * stride_qh + c[:, None] * stride_qc + d[None, :] * stride_qd,
        mask=row_ok[:, None] & d_ok[None, :], other=0.0,
    )
    if FP32_DOT:
        q = q.to(tl.float32)
    limit = tl.load(LIMIT + b * stride_lb + c * stride_lc, mask=row_ok, other=0)
    copy_start = tl.load(COPY_START + b * stride_sb + c * stride_sc, mask=row_ok, other=C)
    m_i = tl.full([BLOCK_M], _NEG_BIG, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh

    # ---- cache keys of this split, up to the largest limit in the block --------------------
    lo = pid_s * keys_per_split
    hi = tl.minimum(lo + keys_per_split, tl.max(limit, axis=0))
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        m_i, l_i, acc = _attend_tile(
            q, k_base + n[:, None] * stride_kn + d[None, :] * stride_kd,
            v_base + n[:, None] * stride_vn + d[None, :] * stride_vd,
            (n[:, None] < hi) & d_ok[None, :],
            n[None, :] < limit[:, None],
            qk_scale, m_i, l_i, acc, FP32_DOT, IEEE,
        )

    # ---- own copy keys (causal inside the copy), on the last split -------------------------
    if pid_s == num_splits - 1:
        lo_c = tl.min(tl.where(row_ok, copy_start, C), axis=0)
        hi_c = tl.max(tl.where(row_ok, c + 1, 0), axis=0)
        for start in range(lo_c, hi_c, BLOCK_N):
            j = start + tl.arange(0, BLOCK_N)
            m_i, l_i, acc = _attend_tile(
                q, k_base + (L + j)[:, None] * stride_kn + d[None, :] * stride_kd,
                v_base + (L + j)[:, None] * stride_vn + d[None, :] * stride_vd,
                (j < hi_c)[:, None] & d_ok[None, :],
                (j[None, :] >= copy_start[:, None]) & (j[None, :] <= c[:, None]),
                qk_scale, m_i, l_i, acc, FP32_DOT, IEEE,
            )

    part = (pid_s * tl.num_programs(1) + pid_bh) * R + rows
    tl.store(PART_M + part, m_i, mask=row_ok)
    tl.store(PART_L + part, l_i, mask=row_ok)
    tl.store(PART_O + part[:, None] * D + d[None, :], acc, mask=row_ok[:, None] & d_ok[None, :])
