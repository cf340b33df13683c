"""Benchmark the fused LM-head op (log-prob of the target + entropy) against the alternatives.

    python benchmarks/bench_head.py OUT.md          # GPU sizes on CUDA, a tiny smoke size on CPU

Providers (each computes per-token log-prob of the target and softmax entropy at temperature 0.7):
    torch_logits   logits = hidden @ weight.T materialized ([M, V]), fp32 log_softmax
    torch_chunked  repro_fast.ops.logprob_entropy_torch (row chunks, fp32 math)
    repro_triton   repro_fast.ops.fused_logprob_entropy (Triton; never builds [M, V] forward)
    verl_lce       verl's linear_cross_entropy (log-probs + entropy), if installed
    liger_flce     Liger's fused linear cross-entropy (loss only: no entropy), if installed
Columns: median time (p20/p80 around it), peak extra memory, achieved TFLOP/s counting useful
matmul flops only (forward 2*M*H*V, forward+backward 6*M*H*V), and that rate as a fraction of
the bf16 matmul rate measured on the same card in the same run (8192^3 torch.matmul).

Importable: `make_inputs`, `PROVIDERS`, `bench_one` are what a pytest-benchmark file would use.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    from repro_fast.ops import fused_logprob_entropy, logprob_entropy_torch
except ImportError:  # run from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from repro_fast.ops import fused_logprob_entropy, logprob_entropy_torch

TEMPERATURE = 0.7
GPU_SIZES = [  # (M, H, V)
    (8192, 4096, 151936),
    (8192, 4096, 131072),
    (8192, 576, 49152),
]
CPU_SIZES = [(64, 64, 1000)]


def make_inputs(M, H, V, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(M, H, generator=g).to(device=device, dtype=dtype)
    weight = (torch.randn(V, H, generator=g) * (3.0 / H**0.5)).to(device=device, dtype=dtype)
    targets = torch.randint(0, V, (M,), generator=g).to(device)
    return hidden, weight, targets


# ------------------------------------------------------------------------------ providers
# Each: fn(hidden, weight, targets) -> tuple of tensors to reduce for backward.


def torch_logits(hidden, weight, targets):
    logits = (hidden @ weight.T).float() / TEMPERATURE
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(1, targets[:, None]).squeeze(1), entropy


def torch_chunked(hidden, weight, targets):
    return logprob_entropy_torch(hidden, weight, targets, TEMPERATURE)


def repro_triton(hidden, weight, targets):
    return fused_logprob_entropy(hidden, weight, targets, TEMPERATURE, backend="triton")


def _verl():
    from verl.utils.kernel.linear_cross_entropy import linear_cross_entropy

    def run(hidden, weight, targets):
        return linear_cross_entropy(hidden, weight, targets, TEMPERATURE, "none")

    return run


def _liger():
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    def run(hidden, weight, targets):
        # Loss only (sum of -logprob); Liger has no entropy output. Temperature is not an option
        # there, so scale the hidden states instead (same logits / tau).
        return (liger_fused_linear_cross_entropy(hidden / TEMPERATURE, weight, targets, reduction="sum"),)

    return run


PROVIDERS = {
    "torch_logits": lambda: torch_logits,
    "torch_chunked": lambda: torch_chunked,
    "repro_triton": lambda: repro_triton,
    "verl_lce": _verl,
    "liger_flce": _liger,
}


# ------------------------------------------------------------------------------ timing


def _time_ms(fn, device, grad_leaves=()):
    """(p20, p50, p80) milliseconds."""
    if device.type == "cuda":
        import triton.testing

        return tuple(triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=list(grad_leaves), quantiles=[0.2, 0.5, 0.8]))
    fn()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5)
    return q[0], statistics.median(times), q[-1]


def matmul_tflops(device) -> float | None:
    """Dense bf16 matmul rate of this card (8192^3), the roofline denominator."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = _time_ms(lambda: a @ b, device)[1]
    return 2 * n**3 / (ms * 1e-3) / 1e12


def bench_one(name, fn, M, H, V, dtype, device, mode):
    hidden, weight, targets = make_inputs(M, H, V, dtype, device)
    leaves = ()
    if mode == "fwd":
        run = lambda: fn(hidden, weight, targets)  # noqa: E731
        ctx = torch.no_grad()
    else:
        hidden.requires_grad_()
        weight.requires_grad_()
        leaves = (hidden, weight)

        def run():
            outs = fn(hidden, weight, targets)
            sum(o.float().sum() for o in outs).backward()

        ctx = torch.enable_grad()
    with ctx:
        run()  # compile / autotune outside the measurement
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            peak_mib = float("nan")
        p20, p50, p80 = _time_ms(run, device, leaves)
    flops = (2 if mode == "fwd" else 6) * M * H * V
    return dict(p20=p20, p50=p50, p80=p80, peak_mib=peak_mib, tflops=flops / (p50 * 1e-3) / 1e12)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=None, help="markdown file to write the table to")
    ap.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated subset")
    ap.add_argument("--modes", default="fwd,fwd+bwd")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    peak = matmul_tflops(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    import triton

    lines = [
        f"# LM-head log-prob + entropy ({datetime.datetime.now().isoformat(timespec='seconds')})",
        "",
        f"device: {gpu}; torch {torch.__version__}; triton {triton.__version__}; dtype {str(dtype).removeprefix('torch.')}; "
        f"temperature {TEMPERATURE}; bf16 matmul 8192^3: {f'{peak:.0f} TFLOP/s' if peak else 'n/a (CPU)'}",
        "Roofline = useful matmul flops (fwd 2MHV, fwd+bwd 6MHV) / time, over that matmul rate.",
        "",
        "| M | H | V | provider | mode | p50 ms (p20-p80) | peak extra MiB | TFLOP/s | roofline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for M, H, V in sizes:
        for name in args.providers.split(","):
            try:
                fn = PROVIDERS[name]()
            except ImportError:
                lines.append(f"| {M} | {H} | {V} | {name} | - | not installed | | | |")
                continue
            if name == "repro_triton" and device.type != "cuda":
                import os

                if os.environ.get("TRITON_INTERPRET") != "1":
                    lines.append(f"| {M} | {H} | {V} | {name} | - | needs CUDA (or TRITON_INTERPRET=1) | | | |")
                    continue
            for mode in args.modes.split(","):
                try:
                    r = bench_one(name, fn, M, H, V, dtype, device, mode)
                except torch.cuda.OutOfMemoryError:
                    lines.append(f"| {M} | {H} | {V} | {name} | {mode} | OOM | | | |")
                    continue
                except Exception as exc:  # a third-party provider's API drift must not end the run
                    lines.append(f"| {M} | {H} | {V} | {name} | {mode} | error: {type(exc).__name__}: {str(exc)[:80]} | | | |")
                    continue
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                roof = f"{r['tflops'] / peak:.1%}" if peak else "n/a"
                lines.append(
                    f"| {M} | {H} | {V} | {name} | {mode} | {r['p50']:.3f} ({r['p20']:.3f}-{r['p80']:.3f}) "
                    f"| {r['peak_mib']:.0f} | {r['tflops']:.1f} | {roof} |"
                )
            print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
