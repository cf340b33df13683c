"""Prefix-limited attention, phase 2 of the fast scorer: every answer copy attends to its own CoT
prefix in the shared KV cache plus, causally, to itself. Triton kernel on CUDA
(`triton_prefix_attention.py`), SDPA with a dense mask on CPU; reference in `naive.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from repro_fast.dispatch import resolve_kernels, triton_interpret

__all__ = ["prefix_attention", "prefix_attention_torch", "prefix_attention_mask"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def prefix_attention_mask(limit: torch.Tensor, copy_start: torch.Tensor, cache_len: int) -> torch.Tensor:
    """Boolean ``[B, C, L + C]`` mask (True = visible) of `prefix_attention`'s rule."""
    _, c_len = limit.shape
    keys = torch.arange(cache_len + c_len, device=limit.device)
    query = torch.arange(c_len, device=limit.device)[None, :, None]
    own = keys - cache_len
    own_copy = (own >= copy_start[:, :, None]) & (own <= query)
    return torch.where(keys < cache_len, keys < limit[:, :, None], own_copy)


def _validate(query, key, value, limit, copy_start, scale):
    for name, t in dict(query=query, key=key, value=value, limit=limit, copy_start=copy_start).items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    qkv = (query, key, value)
    if any(t.dim() != 4 for t in qkv):
        raise ValueError(f"query, key, value: expected 4-D [B, H, T, D], got {[tuple(t.shape) for t in qkv]}")
    if query.dtype not in _DTYPES + (torch.float64,) or any(t.dtype != query.dtype for t in qkv):
        raise TypeError(f"query, key, value: expected one shared float dtype, got {[t.dtype for t in qkv]}")
    B, Hq, C, D = query.shape
    if key.shape != value.shape or key.shape[0] != B or key.shape[3] != D:
        raise ValueError(
            f"key, value: expected [B={B}, Hkv, L + C, D={D}], got {tuple(key.shape)}, {tuple(value.shape)}"
        )
    Hkv = key.shape[1]
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"query: expected a multiple of the key/value heads ({Hkv}) as heads, got {Hq}")
    if key.shape[2] < C:
        raise ValueError(f"key: expected the cache plus the C = {C} copy tokens, got {key.shape[2]} keys")
    for name, t in (("limit", limit), ("copy_start", copy_start)):
        if t.shape != (B, C):
            raise ValueError(f"{name}: expected [B, C] = [{B}, {C}], got {tuple(t.shape)}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"{name}: expected an integer tensor, got {t.dtype}")
        if t.device != query.device:
            raise ValueError(f"{name}: expected the device of query ({query.device}), got {t.device}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a finite number > 0, got {scale!r}")
    if query.device.type != "cuda" and C > 0:  # range checks would sync a CUDA device
        cache_len = key.shape[2] - C
        if int(limit.min()) < 0 or int(limit.max()) > cache_len:
            got = f"[{int(limit.min())}, {int(limit.max())}]"
            raise ValueError(f"limit: expected values in [0, L] = [0, {cache_len}], got {got}")
        if bool(((copy_start < 0) | (copy_start > torch.arange(C, device=limit.device))).any()):
            raise ValueError("copy_start: expected copy_start[b, c] in [0, c]")


def prefix_attention_torch(query, key, value, limit, copy_start, scale):
    """SDPA with the dense boolean mask (the CPU path, and the baseline the kernel beats)."""
    B, Hq, C, D = query.shape
    Hkv = key.shape[1]
    mask = prefix_attention_mask(limit, copy_start, key.shape[2] - C)[:, None]
    if Hkv != Hq:
        key = key.repeat_interleave(Hq // Hkv, dim=1)
        value = value.repeat_interleave(Hq // Hkv, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


def kv_splits(cache_len: int, programs: int, block_n: int, interpret: bool) -> tuple[int, int]:
    """How many programs share one (row block, KV head)'s cache range, and the keys each walks:
    enough to fill the GPU (about 2 waves on 132 SMs), each walking at least 4 KV tiles; under
    the interpreter a small target still exercises several splits."""
    target_programs = 8 if interpret else 264
    keys = max(cache_len, 1)
    splits = max(1, min(-(-keys // (4 * block_n)), target_programs // max(1, programs)))
    return splits, -(-keys // (splits * block_n)) * block_n


def _prefix_attention_triton(query, key, value, limit, copy_start, scale):
    import triton

    from repro_fast.ops.triton_prefix_attention import _prefix_attention_partial_kernel

    B, Hq, C, D = query.shape
    Hkv = key.shape[1]
    G = Hq // Hkv
    L = key.shape[2] - C
    rows = C * G
    interpret = triton_interpret()
    block_m, block_n = (16, 16) if interpret else (64, 64)
    block_d = max(16, triton.next_power_of_2(D))
    m_blocks = triton.cdiv(rows, block_m)
    splits, keys_per_split = kv_splits(L, m_blocks * B * Hkv, block_n, interpret)
    part_o = torch.empty(splits, B * Hkv, rows, D, device=query.device, dtype=torch.float32)
    part_m = torch.empty(splits, B * Hkv, rows, device=query.device, dtype=torch.float32)
    part_l = torch.empty_like(part_m)
    limit = limit.to(torch.int32)
    copy_start = copy_start.to(torch.int32)
    _prefix_attention_partial_kernel[(m_blocks, B * Hkv, splits)](
        query, key, value, limit, copy_start, part_o, part_m, part_l,
        *query.stride(), *key.stride(), *value.stride(), *limit.stride(), *copy_start.stride(),
        C, L, Hkv, G, D, rows, keys_per_split, scale * math.log2(math.e),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        FP32_DOT=interpret or query.dtype == torch.float32, IEEE=query.dtype == torch.float32,
        num_warps=4, num_stages=2,
    )
    # Merge the splits (log2 domain): out = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s.
    m_max = part_m.amax(0)
    weight = torch.exp2(part_m - m_max)
    out = (part_o * weight[..., None]).sum(0) / (part_l * weight).sum(0)[..., None]
    # [B*Hkv, C*G, D] with row = c * G + g  ->  [B, C, Hq, D] with head = kvh * G + g
    out = out.view(B, Hkv, C, G, D).permute(0, 2, 1, 3, 4).reshape(B, C, Hq, D)
    return out.to(query.dtype)


def prefix_attention(query, key, value, limit, copy_start, scale=None, *, backend=None):
    """Attention of answer copies over a shared prefix cache; ``[B, C, Hq, D]`` in the input dtype.

    Layout (transformers' attention interface, so the op plugs in as an attention function)::

        query  [B, Hq,  C,     D]   the C copy tokens of each batch row
        key    [B, Hkv, L + C, D]   cache (L keys of [q, y]) followed by the copy tokens
        value  [B, Hkv, L + C, D]
        limit       [B, C] int      query c sees cache keys [0, limit[b, c])
        copy_start  [B, C] int      ... and copy keys L + [copy_start[b, c], c]

    E.g. with |q| = 1, the tokens of the copy for CoT prefix P = 3 have limit 1 + 3 (keys q, y0-y2)
    and copy_start at that copy's first token. ``scale`` defaults to ``1/sqrt(D)``; ``backend``
    as for `fused_logprob_entropy`.
    """
    if scale is None and isinstance(query, torch.Tensor) and query.dim() == 4:
        scale = query.shape[-1] ** -0.5
    _validate(query, key, value, limit, copy_start, scale)
    B, Hq, C, D = query.shape
    if B == 0 or C == 0:
        return query.new_zeros(B, C, Hq, D)
    if resolve_kernels(backend, query.device, "backend") == "triton" and query.dtype in _DTYPES:
        return _prefix_attention_triton(query, key, value, limit, copy_start, float(scale))
    return prefix_attention_torch(query, key, value, limit, copy_start, float(scale))
