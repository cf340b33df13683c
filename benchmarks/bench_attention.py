"""Benchmark phase-2 prefix-limited attention against the alternatives, side by side.

    python benchmarks/bench_attention.py OUT.md     # GPU sizes on CUDA, a tiny smoke size on CPU

Shape: the answer copies of B trajectories over their [q, y] caches, Qwen2.5-1.5B's heads
(12 query / 2 KV, head dim 128), cache L = 8448 (prompt 256 + CoT 8192), 21 copies of a
4-token answer (k = 20 points plus the baseline): C = 84 query tokens per row.

Providers (same inputs, same output [B, C, Hq, D]):
    sdpa_dense   torch SDPA with the dense boolean mask (what transformers runs with a 4-D mask)
    flex         FlexAttention (torch.compile'd) with a block mask built from the same rule
    repro_triton repro_fast.ops.prefix_attention (tiles past every limit skipped, GQA-packed)
Columns: median time (p20/p80), peak extra memory, max abs error vs float64 on the first row.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    from repro_fast.ops import prefix_attention, prefix_attention_naive, prefix_attention_torch
except ImportError:  # run from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from repro_fast.ops import prefix_attention, prefix_attention_naive, prefix_attention_torch

GPU_SIZES = [(1, 12, 2, 8448, 21, 4, 128), (16, 12, 2, 8448, 21, 4, 128)]  # B, Hq, Hkv, L, copies, span, D
CPU_SIZES = [(2, 4, 2, 300, 5, 3, 32)]


def make_case(B, Hq, Hkv, L, copies, span, D, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = copies * span
    q = torch.randn(B, Hq, C, D, generator=g).to(device, dtype)
    k = torch.randn(B, Hkv, L + C, D, generator=g).to(device, dtype)
    v = torch.randn(B, Hkv, L + C, D, generator=g).to(device, dtype)
    limit = torch.zeros(B, C, dtype=torch.int32)
    start = torch.zeros(B, C, dtype=torch.int32)
    for b in range(B):
        prefix = torch.sort(torch.randint(1, L + 1, (copies,), generator=g)).values
        prefix[0] = 256  # the baseline copy sees the prompt only
        prefix = torch.sort(prefix).values
        for j in range(copies):
            limit[b, j * span : (j + 1) * span] = prefix[j]
            start[b, j * span : (j + 1) * span] = j * span
    return q, k, v, limit.to(device), start.to(device)


def _flex_provider():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v, limit, start):
        B, Hq, C, D = q.shape
        L = k.shape[2] - C

        def mask_mod(b, h, qi, kv):
            own = kv - L
            return torch.where(kv < L, kv < limit[b, qi], (own >= start[b, qi]) & (own <= qi))

        block = create_block_mask(mask_mod, B, None, C, k.shape[2], device=q.device)
        return compiled(q, k, v, block_mask=block, enable_gqa=True).transpose(1, 2)

    return run


def providers(device):
    out = {
        "sdpa_dense": lambda q, k, v, limit, start: prefix_attention_torch(q, k, v, limit, start,
                                                                           q.shape[-1] ** -0.5),
        "repro_triton": lambda q, k, v, limit, start: prefix_attention(q, k, v, limit, start,
                                                                       backend="triton"),
    }
    if device == "cuda":
        try:
            out["flex"] = _flex_provider()
        except Exception as exc:  # noqa: BLE001 - recorded in the table
            out["flex"] = exc
    return out


def bench(fn, args, device, reps):
    fn(*args)  # warm-up / compile
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) if device == "cuda" else float("nan")
    qs = statistics.quantiles(times, n=5) if len(times) >= 5 else [min(times)] * 4
    return statistics.median(times), qs[0], qs[3], peak


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", help="markdown file to write the table to")
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes, dtype = (GPU_SIZES, torch.bfloat16) if device == "cuda" else (CPU_SIZES, torch.float32)
    reps = args.reps if device == "cuda" else 5
    card = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    lines = [
        f"### Phase-2 prefix-limited attention ({card}, {dtype}, torch {torch.__version__}, "
        f"{datetime.date.today()})",
        "",
        "| B, Hq/Hkv, L, C, D | provider | median ms (p20-p80) | peak extra MiB | max err vs fp64 "
        "| vs sdpa_dense |",
        "|---|---|---|---|---|---|",
    ]
    for size in sizes:
        B, Hq, Hkv, L, copies, span, D = size
        case = make_case(*size, dtype=dtype, device=device)
        ref = prefix_attention_naive(*(t[:1] for t in case))
        results = {}
        for name, fn in providers(device).items():
            label = f"{B}, {Hq}/{Hkv}, {L}, {copies * span}, {D}"
            if isinstance(fn, Exception):
                lines.append(f"| {label} | {name} | unavailable: {type(fn).__name__}: {str(fn)[:80]} | | | |")
                continue
            try:
                med, p20, p80, peak = bench(fn, case, device, reps)
                err = (fn(*(t[:1] for t in case)).double() - ref).abs().max().item()
            except Exception as exc:  # noqa: BLE001 - one provider failing must not hide the others
                lines.append(f"| {label} | {name} | failed: {type(exc).__name__}: {str(exc)[:80]} | | | |")
                continue
            results[name] = med
            ratio = results["sdpa_dense"] / med if "sdpa_dense" in results else float("nan")
            lines.append(
                f"| {label} | {name} | {med * 1e3:.3f} ({p20 * 1e3:.3f}-{p80 * 1e3:.3f}) | "
                f"{peak / 2**20:.1f} | {err:.2e} | {ratio:.2f}x |"
            )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
