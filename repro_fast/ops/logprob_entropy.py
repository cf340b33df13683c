"""Fused LM head -> (log-prob of the target token, entropy) without the [M, V] logits (SPEC §4, §7):
Triton kernels (`triton_logprob_entropy.py`) or a chunked torch path, behind one autograd Function.
Out-of-range targets raise on CPU; on CUDA that check would sync the host, so such rows get
logprob = NaN and no target gradient.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from repro_fast.dispatch import resolve_kernels, triton_interpret

__all__ = ["fused_logprob_entropy", "fused_logprob", "logprob_entropy_torch"]

# Bytes of logits-sized fp32 temporaries (logits, log-probs, probabilities) per torch-path chunk.
TORCH_CHUNK_BYTES = 256 * 2**20
# The Triton backward writes dL/dlogits for a chunk of rows (input dtype) before two GEMMs.
TRITON_BWD_CHUNK_BYTES = 2**30

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _validate(hidden, weight, targets, temperature, bias) -> float:
    """Check every argument; return the temperature as a Python float."""
    tensors = (("hidden", hidden, "[M, H]"), ("weight", weight, "[V, H]"), ("targets", targets, "[M]"))
    for name, t, shape in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor of shape {shape}, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias: expected None or a torch.Tensor of shape [V], got {type(bias).__name__}")
    for name, t, shape in tensors[:2]:
        if t.dim() != 2:
            raise ValueError(f"{name}: expected 2-D {shape}, got shape {tuple(t.shape)}")
    if hidden.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"hidden: expected float16, bfloat16, float32 or float64, got {hidden.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != hidden.dtype:
            raise TypeError(f"{name}: expected the dtype of hidden ({hidden.dtype}), got {t.dtype}")
    M, H = hidden.shape
    V = weight.shape[0]
    if H == 0:
        raise ValueError("hidden: expected at least one feature (H >= 1), got H = 0")
    if weight.shape[1] != H:
        raise ValueError(f"weight: expected [V, H] with H = hidden.shape[1] = {H}, got {tuple(weight.shape)}")
    if V == 0:
        raise ValueError("weight: expected at least one row (vocabulary size V >= 1), got 0")
    if targets.dim() != 1 or targets.shape[0] != M:
        raise ValueError(f"targets: expected 1-D of length M = {M}, got shape {tuple(targets.shape)}")
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        raise TypeError(f"targets: expected an integer tensor (int64 or int32), got {targets.dtype}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != V):
        raise ValueError(f"bias: expected 1-D of length V = {V}, got shape {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("targets", targets), ("bias", bias)):
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name}: expected the device of hidden ({hidden.device}), got {t.device}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature: expected a real number, got {type(temperature).__name__}")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature}")
    if targets.device.type != "cuda" and M > 0:  # on CUDA the kernel writes NaN instead (module doc)
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= V:
            raise ValueError(f"targets: expected values in [0, V) = [0, {V}), got values in [{lo}, {hi}]")
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


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows_per_chunk(V: int, bytes_per_logit: int, budget: int) -> int:
    return max(1, budget // (V * bytes_per_logit))


def _torch_chunk_rows(hidden: torch.Tensor, V: int, budget: int) -> int:
    return _rows_per_chunk(V, 3 * _compute_dtype(hidden.dtype).itemsize, budget)  # three [rows, V] buffers


def _torch_forward(hidden, weight, bias, targets, temperature, chunk_rows, with_entropy=True):
    """(logprobs, entropy, lse) in the compute dtype, at most chunk_rows x V logits at a time.
    Without ``with_entropy`` the entropy is left 0."""
    M, V = hidden.shape[0], weight.shape[0]
    cdt = _compute_dtype(hidden.dtype)
    w = weight.to(cdt)  # one upcast per call, not per chunk
    b = bias.to(cdt) if bias is not None else None
    logprobs = torch.empty(M, dtype=cdt, device=hidden.device)
    entropy = torch.zeros(M, dtype=cdt, device=hidden.device)
    lse = torch.empty(M, dtype=cdt, device=hidden.device)
    tgt_ok = (targets >= 0) & (targets < V)
    tgt = torch.where(tgt_ok, targets, torch.zeros_like(targets)).long()
    for start in range(0, M, chunk_rows):
        rows = slice(start, min(M, start + chunk_rows))
        z = F.linear(hidden[rows].to(cdt), w, b).mul_(1.0 / temperature)
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
        if with_entropy:
            entropy[rows] = log_total - p.mul_(z).sum(-1) / total  # p is not needed any more
        lse[rows] = top[:, 0] + log_total
    # Rows with an out-of-range target (only reachable on CUDA, see module doc) get NaN.
    return logprobs.masked_fill_(~tgt_ok, float("nan")), entropy, lse


def _torch_dlogits(hidden, weight_c, bias_c, targets, temperature, lse, entropy, g_lp, g_ent):
    """dL/d(raw logits) of a row chunk in the compute dtype (see `_bwd_dlogits_kernel` for the math)."""
    inv_t = 1.0 / temperature
    cdt = weight_c.dtype
    z = F.linear(hidden.to(cdt), weight_c, bias_c).mul_(inv_t)
    logp = z.sub_(lse.to(cdt)[:, None])
    p = logp.exp()
    ent_term = torch.where(p == 0, 0.0, p * (logp + entropy.to(cdt)[:, None]))
    g = -g_lp.to(cdt)[:, None] * p - g_ent.to(cdt)[:, None] * ent_term
    ok = (targets >= 0) & (targets < weight_c.shape[0])
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    g[rows[ok], targets[ok].long()] += g_lp.to(cdt)[ok]
    return g.mul_(inv_t)


class _LogprobEntropy(torch.autograd.Function):
    """``kernels="triton"``: the Triton kernels (``chunk_rows`` unused); ``"torch"``: the torch path
    in chunks of ``chunk_rows`` rows."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, bias, temperature, with_entropy, kernels, chunk_rows):
        """fp32 ``(log p(target), entropy or None)`` per row, by Triton (``kernels="triton"``) or
        chunked torch; saves what the backward needs."""
        if kernels == "triton":
            targets = targets.contiguous()
            bias = bias.contiguous() if bias is not None else None
            logprobs, entropy, lse = _triton_module(hidden.device).logprob_entropy_fwd(
                hidden, weight, bias, targets, temperature, with_entropy
            )
        else:
            logprobs, entropy, lse = _torch_forward(
                hidden, weight, bias, targets, temperature, chunk_rows, with_entropy
            )
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy)
        ctx.temperature = temperature
        ctx.kernels = kernels
        ctx.chunk_rows = chunk_rows
        return logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs, grad_entropy):
        """Per row chunk: G = dL/dlogits, dh = G @ W, dW += G^T h, db += sum G."""
        hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
        need_h, need_w, _, need_b = ctx.needs_input_grad[:4]
        M, V = hidden.shape[0], weight.shape[0]
        acc_dtype = _compute_dtype(weight.dtype)
        on_triton = ctx.kernels == "triton"
        if on_triton:
            tle = _triton_module(hidden.device)
            gemm_dtype = hidden.dtype
            chunk_rows = _rows_per_chunk(V, hidden.element_size(), TRITON_BWD_CHUNK_BYTES)
        else:
            gemm_dtype = acc_dtype
            chunk_rows = ctx.chunk_rows
        w_g = weight.to(gemm_dtype)
        b_g = bias.to(gemm_dtype) if bias is not None else None
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(V, dtype=acc_dtype, device=weight.device) if need_b else None
        g_lp = grad_logprobs.to(_compute_dtype(grad_logprobs.dtype))
        g_ent = grad_entropy.to(_compute_dtype(grad_entropy.dtype))
        for start in range(0, M, chunk_rows):
            rows = slice(start, min(M, start + chunk_rows))
            h = hidden[rows].to(gemm_dtype)
            args = (h, w_g, b_g, targets[rows], ctx.temperature, lse[rows], entropy[rows])
            if on_triton:
                g = tle.logprob_entropy_dlogits(*args, g_lp[rows].contiguous(), g_ent[rows].contiguous())
            else:
                g = _torch_dlogits(*args, g_lp[rows], g_ent[rows])
            if need_h:
                grad_h[rows] = (g @ w_g).to(hidden.dtype)
            if need_w:
                grad_w += (g.T @ h).to(acc_dtype)
            if need_b:
                grad_b += g.sum(0, dtype=acc_dtype)
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, None, grad_b, None, None, None, None


def logprob_entropy_torch(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
    chunk_rows: int | None = None, *, bias: torch.Tensor | None = None,
    memory_budget_bytes: int = TORCH_CHUNK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked torch path of `fused_logprob_entropy`: at most `chunk_rows` x V logits (plus two
    same-size temporaries) at a time; `chunk_rows=None` derives it from `memory_budget_bytes`.
    Computes in fp32 (fp64 for fp64 inputs); the backward recomputes each chunk's logits."""
    temperature = _validate(hidden, weight, targets, temperature, bias)
    if chunk_rows is None:
        chunk_rows = _torch_chunk_rows(hidden, weight.shape[0], memory_budget_bytes)
    elif isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected a positive int or None, got {chunk_rows!r}")
    return _LogprobEntropy.apply(hidden, weight, targets, bias, temperature, True, "torch", chunk_rows)


def _apply(hidden, weight, targets, temperature, bias, backend, with_entropy):
    temperature = _validate(hidden, weight, targets, temperature, bias)
    kernels = resolve_kernels(backend, hidden.device, "backend")
    chunk_rows = None  # the Triton kernels size their own chunks
    if kernels == "torch":
        chunk_rows = _torch_chunk_rows(hidden, weight.shape[0], TORCH_CHUNK_BYTES)
    elif hidden.dtype not in _TRITON_DTYPES:
        raise TypeError(f"the Triton backend takes float16, bfloat16 or float32 hidden, got {hidden.dtype}")
    args = (hidden, weight, targets, bias, temperature, with_entropy, kernels, chunk_rows)
    return _LogprobEntropy.apply(*args)


def fused_logprob_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, *,
    bias: torch.Tensor | None = None, backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token and the entropy of each row's softmax, from the LM head.

    `hidden` [M, H] (fp16 / bf16 / fp32; fp64 on the torch path), `weight` [V, H] and optional
    `bias` [V] of the same dtype and device, `targets` [M] token ids in [0, V); the softmax is
    over logits / `temperature`. `backend`: "auto", "triton" or "torch" (None reads
    REPRO_FAST_KERNELS). Returns (logprobs, entropy), each [M], fp32 (fp64 for fp64 inputs on the
    torch path), differentiable w.r.t. hidden, weight and bias. The Triton backward holds
    dL/dlogits for at most ~1 GiB of rows.
    """
    return _apply(hidden, weight, targets, temperature, bias, backend, True)


def fused_logprob(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, *,
    bias: torch.Tensor | None = None, backend: str | None = None,
) -> torch.Tensor:
    """`fused_logprob_entropy` without the entropy: fp32 ``[M]`` log-probs (differentiable)."""
    return _apply(hidden, weight, targets, temperature, bias, backend, False)[0]
