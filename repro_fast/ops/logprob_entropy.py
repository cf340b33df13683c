"""Fused LM head -> (log-prob of the target token, entropy), without the [M, V] logits.

Layering (as in Liger-Kernel): Triton kernels in `triton_logprob_entropy.py` and a chunked
torch path here -> one `torch.autograd.Function` per backend -> the public function
`fused_logprob_entropy`, which validates the inputs and picks the backend.

Math (SPEC §4, §7): z = (hidden @ weight.T + bias) / tau, p = softmax(z),
    logprobs[i] = log p[i, targets[i]],    entropy[i] = -sum_v p[i, v] log p[i, v].
Both outputs are fp32 (fp64 when the torch path gets fp64 inputs), accumulated in fp32 at least.

`fused_logprob` is the same op without the entropy (answer tokens need only log-probs): the
Triton kernel skips the entropy accumulation, the torch path its two passes over the logits.

Backend: the ``backend=`` argument (``"auto"`` | ``"triton"`` | ``"torch"``; None reads
``REPRO_FAST_KERNELS``), resolved by `repro_fast.dispatch.resolve_kernels`.

Out-of-range targets: on CPU a ValueError. On CUDA the check would need a device->host sync in
the hot path, so instead the affected rows get logprob = NaN (entropy is still right); a NaN in
the output is the signal. Gradients of such rows ignore the target term.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from repro_fast.dispatch import resolve_kernels, triton_interpret

__all__ = ["fused_logprob_entropy", "fused_logprob", "logprob_entropy_torch"]

# The torch path holds at most about this many bytes of logits-sized temporaries per chunk
# (logits, log-probs and probabilities of one row chunk, fp32).
TORCH_CHUNK_BYTES = 256 * 2**20
# The Triton backward writes dL/dlogits for a chunk of rows (input dtype) before two GEMMs.
TRITON_BWD_CHUNK_BYTES = 2**30

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------------------------
# Validation and backend choice
# --------------------------------------------------------------------------------------------


def _validate(hidden, weight, targets, temperature, bias) -> float:
    """Check every argument; return the temperature as a Python float. Never uses assert."""
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a torch.Tensor of shape [M, H], got {type(hidden).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor of shape [V, H], got {type(weight).__name__}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of shape [M], got {type(targets).__name__}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be 2-D [M, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [V, H], got shape {tuple(weight.shape)}")
    if hidden.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"hidden must be float16, bfloat16, float32 or float64, got {hidden.dtype}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight dtype {weight.dtype} must equal hidden dtype {hidden.dtype}")
    M, H = hidden.shape
    V, H_w = weight.shape
    if H == 0:
        raise ValueError("hidden must have at least one feature (H >= 1), got H = 0")
    if H_w != H:
        raise ValueError(
            f"weight must be [V, H] with H = hidden.shape[1] = {H}, got weight shape {tuple(weight.shape)}"
        )
    if V == 0:
        raise ValueError("weight must have at least one row (vocabulary size V >= 1)")
    if targets.dim() != 1 or targets.shape[0] != M:
        raise ValueError(f"targets must be 1-D of length M = {M}, got shape {tuple(targets.shape)}")
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        raise TypeError(f"targets must be an integer tensor (int64 or int32), got {targets.dtype}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be None or a torch.Tensor of shape [V], got {type(bias).__name__}")
        if bias.dim() != 1 or bias.shape[0] != V:
            raise ValueError(f"bias must be 1-D of length V = {V}, got shape {tuple(bias.shape)}")
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias dtype {bias.dtype} must equal hidden dtype {hidden.dtype}")
    for name, t in (("weight", weight), ("targets", targets), ("bias", bias)):
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name} is on {t.device} but hidden is on {hidden.device}; move them to one device")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    # A range check on CUDA would sync the host; there the kernel writes NaN instead (module doc).
    if targets.device.type != "cuda" and M > 0:
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= V:
            raise ValueError(f"targets must lie in [0, V) = [0, {V}), got values in [{lo}, {hi}]")
    return temperature


def _triton_module(device: torch.device):
    try:
        from repro_fast.ops import triton_logprob_entropy as tle
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the Triton backend needs the `triton` package; use backend='torch'") from exc
    if device.type != "cuda" and not triton_interpret():
        raise RuntimeError(
            "the Triton backend got CPU tensors but the kernels were not built for the interpreter: "
            "set TRITON_INTERPRET=1 before the first Triton call, or use backend='torch'"
        )
    return tle


# --------------------------------------------------------------------------------------------
# Chunked torch path (CPU; also runs on CUDA when forced)
# --------------------------------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows_per_chunk(V: int, bytes_per_element: int, copies: int, budget: int) -> int:
    return max(1, budget // max(1, V * bytes_per_element * copies))


def _torch_forward(hidden, weight, bias, targets, temperature, chunk_rows, with_entropy=True):
    """Returns (logprobs, entropy, lse) in the compute dtype; at most chunk_rows x V logits live.
    Without ``with_entropy`` the entropy is left 0 (no probabilities are formed)."""
    M = hidden.shape[0]
    V = weight.shape[0]
    cdt = _compute_dtype(hidden.dtype)
    w = weight.to(cdt)  # one upcast per call, not per chunk
    b = bias.to(cdt) if bias is not None else None
    inv_t = 1.0 / temperature
    logprobs = torch.empty(M, dtype=cdt, device=hidden.device)
    entropy = torch.zeros(M, dtype=cdt, device=hidden.device)
    lse = torch.empty(M, dtype=cdt, device=hidden.device)
    tgt_ok = (targets >= 0) & (targets < V)
    tgt = torch.where(tgt_ok, targets, torch.zeros_like(targets)).long()
    for start in range(0, M, chunk_rows):
        rows = slice(start, min(M, start + chunk_rows))
        z = F.linear(hidden[rows].to(cdt), w, b).mul_(inv_t)
        if not with_entropy:
            row_lse = torch.logsumexp(z, dim=-1)
            logprobs[rows] = z.gather(1, tgt[rows, None])[:, 0] - row_lse
            lse[rows] = row_lse
            continue
        # One exp pass and one [rows, V] temporary: with z shifted by its row max, p = exp(z),
        # s = sum p, lse = max + log s, H = log s - sum(p z) / s (a plain reduction: a batched
        # dot on CPU lost 2e-4 at V = 49152). -inf logits are clamped after the target is read,
        # so that p = 0 meets a finite z (never 0 * -inf); a NaN row stays NaN.
        top = z.amax(-1, keepdim=True)
        z.sub_(torch.where(torch.isinf(top), 0.0, top))
        z_target = z.gather(1, tgt[rows, None])[:, 0]
        p = z.clamp_min_(torch.finfo(cdt).min).exp()
        total = p.sum(-1)
        log_total = total.log()
        logprobs[rows] = z_target - log_total
        entropy[rows] = log_total - p.mul_(z).sum(-1) / total  # p is not needed any more
        lse[rows] = top[:, 0] + log_total
    # Rows with an out-of-range target (only reachable on CUDA, see module doc) get NaN.
    logprobs = torch.where(tgt_ok, logprobs, torch.full((), float("nan"), dtype=cdt, device=hidden.device))
    return logprobs, entropy, lse


def _torch_dlogits(hidden, weight_c, bias_c, targets, temperature, lse, entropy, g_lp, g_ent):
    """dL/d(raw logits) of a row chunk in the compute dtype (see `_bwd_dlogits_kernel` for the math)."""
    inv_t = 1.0 / temperature
    cdt = weight_c.dtype
    z = F.linear(hidden.to(cdt), weight_c, bias_c).mul_(inv_t)
    logp = z.sub_(lse.to(cdt)[:, None])
    p = logp.exp()
    ent_term = torch.where(p == 0, 0.0, p * (logp + entropy.to(cdt)[:, None]))
    g = -g_lp.to(cdt)[:, None] * p - g_ent.to(cdt)[:, None] * ent_term
    V = weight_c.shape[0]
    ok = (targets >= 0) & (targets < V)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    g[rows[ok], targets[ok].long()] += g_lp.to(cdt)[ok]
    return g.mul_(inv_t)


def _chunked_backward(ctx, grad_logprobs, grad_entropy, dlogits_fn, chunk_rows, gemm_dtype):
    """Shared backward loop: per row chunk, G = dL/dlogits, dh = G @ W, dW += G^T h, db += sum G."""
    hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
    need_h, need_w, _, need_b = ctx.needs_input_grad[:4]
    M = hidden.shape[0]
    w_g = weight.to(gemm_dtype)
    b_g = bias.to(gemm_dtype) if bias is not None else None
    acc_dtype = _compute_dtype(weight.dtype)
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
    grad_b = torch.zeros(weight.shape[0], dtype=acc_dtype, device=weight.device) if need_b else None
    g_lp = grad_logprobs.float() if grad_logprobs.dtype != torch.float64 else grad_logprobs
    g_ent = grad_entropy.float() if grad_entropy.dtype != torch.float64 else grad_entropy
    for start in range(0, M, chunk_rows):
        rows = slice(start, min(M, start + chunk_rows))
        h = hidden[rows].to(gemm_dtype)
        g = dlogits_fn(h, w_g, b_g, targets[rows], ctx.temperature, lse[rows], entropy[rows], g_lp[rows], g_ent[rows])
        if need_h:
            grad_h[rows] = (g @ w_g).to(hidden.dtype)
        if need_w:
            grad_w += (g.T @ h).to(acc_dtype)
        if need_b:
            grad_b += g.sum(0, dtype=acc_dtype)
    grad_w = grad_w.to(weight.dtype) if need_w else None
    grad_b = grad_b.to(bias.dtype) if need_b else None
    return grad_h, grad_w, grad_b


class _TorchLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, bias, temperature, chunk_rows, with_entropy=True):
        logprobs, entropy, lse = _torch_forward(
            hidden, weight, bias, targets, temperature, chunk_rows, with_entropy
        )
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy)
        ctx.temperature = temperature
        ctx.chunk_rows = chunk_rows
        return logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs, grad_entropy):
        cdt = _compute_dtype(ctx.saved_tensors[0].dtype)
        grad_h, grad_w, grad_b = _chunked_backward(
            ctx, grad_logprobs, grad_entropy, _torch_dlogits, ctx.chunk_rows, cdt
        )
        return grad_h, grad_w, None, grad_b, None, None, None


# --------------------------------------------------------------------------------------------
# Triton path
# --------------------------------------------------------------------------------------------


class _TritonLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, bias, temperature, with_entropy=True):
        tle = _triton_module(hidden.device)
        targets = targets.contiguous()
        bias = bias.contiguous() if bias is not None else None
        logprobs, entropy, lse = tle.logprob_entropy_fwd(
            hidden, weight, bias, targets, temperature, with_entropy
        )
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy)
        ctx.temperature = temperature
        return logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight = ctx.saved_tensors[:2]
        tle = _triton_module(hidden.device)
        V = weight.shape[0]
        chunk_rows = _rows_per_chunk(V, hidden.element_size(), 1, TRITON_BWD_CHUNK_BYTES)

        def dlogits(h, w, b, tgt, temperature, lse, ent, g_lp, g_ent):
            out = torch.empty(h.shape[0], V, dtype=h.dtype, device=h.device)
            return tle.logprob_entropy_dlogits(
                h, w, b, tgt, temperature, lse, ent, g_lp.contiguous(), g_ent.contiguous(), out
            )

        grad_h, grad_w, grad_b = _chunked_backward(
            ctx, grad_logprobs, grad_entropy, dlogits, chunk_rows, hidden.dtype
        )
        return grad_h, grad_w, None, grad_b, None, None


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def logprob_entropy_torch(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    *,
    bias: torch.Tensor | None = None,
    memory_budget_bytes: int = TORCH_CHUNK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked torch path: never holds more than `chunk_rows` x V logits (plus two same-size
    temporaries). `chunk_rows=None` derives it from `memory_budget_bytes`. Differentiable
    (the backward recomputes each chunk's logits). Computes in fp32 (fp64 for fp64 inputs)."""
    temperature = _validate(hidden, weight, targets, temperature, bias)
    if chunk_rows is None:
        elt = 8 if hidden.dtype == torch.float64 else 4
        chunk_rows = _rows_per_chunk(weight.shape[0], elt, 3, memory_budget_bytes)
    elif isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")
    return _TorchLogprobEntropy.apply(hidden, weight, targets, bias, temperature, chunk_rows, True)


def _apply(hidden, weight, targets, temperature, bias, backend, with_entropy):
    temperature = _validate(hidden, weight, targets, temperature, bias)
    if resolve_kernels(backend, hidden.device, "backend") == "torch":
        elt = 8 if hidden.dtype == torch.float64 else 4
        chunk_rows = _rows_per_chunk(weight.shape[0], elt, 3, TORCH_CHUNK_BYTES)
        return _TorchLogprobEntropy.apply(hidden, weight, targets, bias, temperature, chunk_rows, with_entropy)
    if hidden.dtype not in _TRITON_DTYPES:
        raise TypeError(f"the Triton backend takes float16, bfloat16 or float32 hidden, got {hidden.dtype}")
    return _TritonLogprobEntropy.apply(hidden, weight, targets, bias, temperature, with_entropy)


def fused_logprob_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token and the entropy of each row's softmax, from the LM head.

    Args:
        hidden: [M, H] final hidden states (fp16 / bf16 / fp32; fp64 on the torch path).
        weight: [V, H] LM-head weight, same dtype and device as `hidden`.
        targets: [M] integer token ids in [0, V).
        temperature: tau > 0; the softmax is taken over logits / tau.
        bias: optional [V] LM-head bias.
        backend: None (REPRO_FAST_KERNELS, default "auto"), "auto", "triton" or "torch".

    Returns:
        (logprobs, entropy), each fp32 [M]: log softmax(z / tau)[target] and -sum p log p.
        Differentiable w.r.t. hidden, weight and bias. The Triton path never builds [M, V] logits
        in the forward; its backward writes dL/dlogits for row chunks of at most ~1 GiB.
    """
    return _apply(hidden, weight, targets, temperature, bias, backend, True)


def fused_logprob(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """`fused_logprob_entropy` without the entropy: fp32 ``[M]`` log-probs (differentiable)."""
    return _apply(hidden, weight, targets, temperature, bias, backend, False)[0]
