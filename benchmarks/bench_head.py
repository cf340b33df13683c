"""Benchmark the fused LM-head op (log-prob of the target + entropy) against the alternatives.

    python benchmarks/bench_head.py OUT.md                 # GPU sizes on CUDA, a tiny smoke size on CPU
    python benchmarks/bench_head.py OUT.md --json OUT.json --sizes 8192x4096x151936 --modes fwd
    python benchmarks/bench_head.py --dry-run              # the plan and which peers import; times nothing

Providers (per-token log-prob of the target and softmax entropy at temperature 0.7, bf16 in on CUDA):
    torch_logits   logits = hidden @ weight.T materialized ([M, V]), fp32 log_softmax
    repro_triton   repro_fast.ops.fused_logprob_entropy (Triton; never builds [M, V] forward)
    repro_triton_ps<N>  the same with REPRO_FAST_HEAD_PROGRAMS_PER_SM=N (fwd only; any N): the
                   forward's vocabulary slicing aims at N programs per SM (default 32; 4 = the
                   slicing of the first H200 runs): A/B rows in the same run
    verl_lce       verl's fused `linear_cross_entropy` (log-prob + entropy, Triton, TMA on Hopper):
                   verl.utils.kernel.linear_cross_entropy.LinearCrossEntropy, loaded without running
                   verl's package __init__ (which needs ray, omegaconf, ...; see
                   `baselines.load_verl_linear_cross_entropy`)
    liger_flce     Liger's fused linear cross-entropy (liger_kernel.ops.fused_linear_cross_entropy.
                   LigerFusedLinearCrossEntropyFunction): per-token loss = -log-prob (reduction
                   "none") in fwd, reduction "sum" (its training path, grads computed in the
                   forward) in fwd+bwd; no entropy output and no temperature argument, so it gets
                   hidden / tau (same logits)
    torch_chunked  repro_fast.ops.logprob_entropy_torch (row chunks, fp32 math; slow, runs last)
A peer that is not importable gets a "not installed" row; any error of one provider is one row.

Columns: median time (p20-p80), peak extra memory, max |error| of log-prob (and entropy where
the provider has it) against an fp32 reference on the first rows, achieved TFLOP/s counting useful
matmul flops (fwd 2*M*H*V, fwd+bwd 6*M*H*V), and two roofline fractions: `vs matmul` = time of a
bf16 torch.matmul of the same shape ([M, H] @ [H, V], cuBLAS, measured in the same run; x3 for
fwd+bwd) / provider time, the acceptance measure; `vs 8192^3` = TFLOP/s over the 8192^3 bf16
matmul rate of the card.

Importable: `make_inputs`, `PROVIDERS`, `bench_one`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

try:
    from repro_fast.ops import fused_logprob_entropy, logprob_entropy_torch
except ImportError:  # run from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from repro_fast.ops import fused_logprob_entropy, logprob_entropy_torch

import baselines
import report

TEMPERATURE = 0.7
GPU_SIZES = [  # (M, H, V): Qwen-like 4096 x 151936 (the acceptance shape), SmolLM2-135M 576 x 49152
    (8192, 4096, 151936),
    (8192, 576, 49152),
]
CPU_SIZES = [(64, 64, 1000)]
REF_ROWS = 512  # rows checked against the fp32 reference
PEERS = ("verl_lce", "liger_flce")


def make_inputs(M, H, V, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(M, H, generator=g).to(device=device, dtype=dtype)
    weight = (torch.randn(V, H, generator=g) * (3.0 / H**0.5)).to(device=device, dtype=dtype)
    targets = torch.randint(0, V, (M,), generator=g).to(device)
    return hidden, weight, targets


# ------------------------------------------------------------------------------ providers
# Each factory returns fn(hidden, weight, targets, mode) -> dict with "out" (tensors to reduce for
# backward) and optionally "logprob", "entropy" (forward results to check).


def torch_logits(hidden, weight, targets):
    logits = (hidden @ weight.T).float() / TEMPERATURE
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(1, targets[:, None]).squeeze(1), entropy


def torch_chunked(hidden, weight, targets):
    return logprob_entropy_torch(hidden, weight, targets, TEMPERATURE)


def repro_triton(hidden, weight, targets):
    return fused_logprob_entropy(hidden, weight, targets, TEMPERATURE, backend="triton")


def _both(fn):
    def run(hidden, weight, targets, mode):
        lp, ent = fn(hidden, weight, targets)
        return dict(out=(lp, ent), logprob=lp, entropy=ent)

    return run


def _verl():
    lce = baselines.load_verl_linear_cross_entropy().linear_cross_entropy

    def run(hidden, weight, targets, mode):
        lp, ent = lce(hidden, weight, targets, float(TEMPERATURE), "none")
        return dict(out=(lp, ent), logprob=lp, entropy=ent)

    return run


def _liger():
    flce = baselines.liger_fused_linear_cross_entropy()

    def run(hidden, weight, targets, mode):
        x = hidden / TEMPERATURE  # Liger has no temperature: scale the input (same logits / tau)
        if mode == "fwd":
            # apply(_input, weight, target, bias, ce_weight, ignore_index, lse_square_scale,
            #       label_smoothing, reduction) -> (loss, z_loss, token_accuracy, predicted_tokens)
            loss = flce.apply(x, weight, targets, None, None, -100, 0.0, 0.0, "none")[0]
            return dict(out=(loss,), logprob=-loss)
        loss = flce.apply(x, weight, targets, None, None, -100, 0.0, 0.0, "sum")[0]
        return dict(out=(loss,))

    return run


def _repro_programs_per_sm(per_sm):
    """repro_triton with REPRO_FAST_HEAD_PROGRAMS_PER_SM set during each call: an A/B row for the
    forward's vocabulary slicing (4 = the slicing of the first H200 runs). The autotuned tile
    config is the one found for the default slicing (the autotune key has no slicing in it)."""

    def factory():
        inner = _both(repro_triton)

        def run(hidden, weight, targets, mode):
            old = os.environ.get("REPRO_FAST_HEAD_PROGRAMS_PER_SM")
            os.environ["REPRO_FAST_HEAD_PROGRAMS_PER_SM"] = str(per_sm)
            try:
                return inner(hidden, weight, targets, mode)
            finally:
                if old is None:
                    del os.environ["REPRO_FAST_HEAD_PROGRAMS_PER_SM"]
                else:
                    os.environ["REPRO_FAST_HEAD_PROGRAMS_PER_SM"] = old

        return run

    return factory


def provider_factory(name):
    """PROVIDERS[name], or repro_triton_ps<N> for any N (REPRO_FAST_HEAD_PROGRAMS_PER_SM=N)."""
    if name in PROVIDERS:
        return PROVIDERS[name]
    if name.startswith("repro_triton_ps") and name.removeprefix("repro_triton_ps").isdigit():
        return _repro_programs_per_sm(int(name.removeprefix("repro_triton_ps")))
    raise KeyError(name)


def _fwd_only(name):  # the slicing only changes the forward kernel
    return name.startswith("repro_triton_ps")


PROVIDERS = {
    "torch_logits": lambda: _both(torch_logits),
    "repro_triton": lambda: _both(repro_triton),
    "repro_triton_ps4": _repro_programs_per_sm(4),
    "verl_lce": _verl,
    "liger_flce": _liger,
    "torch_chunked": lambda: _both(torch_chunked),
}


# ------------------------------------------------------------------------------ timing


def _time_ms(fn, device, grad_leaves=()):
    """(p20, p50, p80) milliseconds."""
    if device.type == "cuda":
        import triton.testing

        return tuple(triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=list(grad_leaves),
                                             quantiles=[0.2, 0.5, 0.8]))
    fn()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5)
    return q[0], statistics.median(times), q[-1]


def matmul_tflops(device) -> float | None:
    """Dense bf16 matmul rate of this card (8192^3)."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = _time_ms(partial(torch.matmul, a, b), device)[1]
    del a, b
    return 2 * n**3 / (ms * 1e-3) / 1e12


def matmul_same_shape_ms(M, H, V, dtype, device) -> float:
    """Median ms of the plain [M, H] @ [H, V] matmul (same flops as the head's forward)."""
    hidden, weight, _ = make_inputs(M, H, V, dtype, device)
    out = torch.empty(M, V, device=device, dtype=dtype)
    run = partial(torch.matmul, hidden, weight.T, out=out)
    with torch.no_grad():
        ms = _time_ms(run, device)[1]
    del hidden, weight, out, run
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ms


@torch.no_grad()
def reference(hidden, weight, targets, rows=REF_ROWS):
    """fp32 log-prob and entropy of the first `rows` rows (bf16 inputs upcast)."""
    h = hidden[:rows].float()
    logits = (h @ weight.float().T) / TEMPERATURE
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(1, targets[:rows, None]).squeeze(1), entropy


def _max_err(got, ref):
    if got is None:
        return None
    got = got.detach().float().reshape(-1)[: ref.numel()]
    return (got - ref).abs().max().item()


def bench_one(name, fn, M, H, V, dtype, device, mode, ref=None):
    hidden, weight, targets = make_inputs(M, H, V, dtype, device)
    leaves = ()
    if mode == "fwd":
        run = lambda: fn(hidden, weight, targets, mode)  # noqa: E731
        ctx = torch.no_grad()
    else:
        hidden.requires_grad_()
        weight.requires_grad_()
        leaves = (hidden, weight)

        def run():
            outs = fn(hidden, weight, targets, mode)["out"]
            sum(o.float().sum() for o in outs).backward()

        ctx = torch.enable_grad()
    err_lp = err_ent = None
    with ctx:
        first = run()  # compile / autotune outside the measurement
        if mode == "fwd" and ref is not None:
            err_lp, err_ent = _max_err(first.get("logprob"), ref[0]), _max_err(first.get("entropy"), ref[1])
        del first
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
    return dict(p20=p20, p50=p50, p80=p80, peak_mib=peak_mib, tflops=flops / (p50 * 1e-3) / 1e12,
                err_logprob=err_lp, err_entropy=err_ent)


def _parse_sizes(text):
    return [tuple(int(x) for x in s.lower().split("x")) for s in text.split(",") if s]


def _fmt_err(r):
    if r.get("err_logprob") is None:
        return ""
    s = f"{r['err_logprob']:.1e}"
    return s + (f" / {r['err_entropy']:.1e}" if r.get("err_entropy") is not None else " / -")


def peer_status() -> dict:
    """name -> 'importable' or the reason it is not (no kernel runs)."""
    out = {}
    for name in PEERS:
        try:
            PROVIDERS[name]()
            out[name] = "importable"
        except ImportError as exc:
            out[name] = f"not installed ({exc})"
        except Exception as exc:  # noqa: BLE001
            out[name] = f"import error: {type(exc).__name__}: {str(exc)[:120]}"
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=None, help="markdown file to write the table to")
    ap.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated subset, in order")
    ap.add_argument("--modes", default="fwd,fwd+bwd")
    ap.add_argument("--sizes", default=None, help="MxHxV,... (default: GPU_SIZES on CUDA, CPU_SIZES on CPU)")
    ap.add_argument("--json", default=None, help="write raw records here")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and peer imports, time nothing")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = _parse_sizes(args.sizes) if args.sizes else (GPU_SIZES if device.type == "cuda" else CPU_SIZES)
    providers = [p for p in args.providers.split(",") if p]
    modes = [m for m in args.modes.split(",") if m]
    for p in providers:
        try:
            provider_factory(p)
        except KeyError:
            ap.error(f"unknown provider {p!r}; expected some of {list(PROVIDERS)} or repro_triton_ps<N>")
    if args.dry_run:
        print(f"device {device}, dtype {dtype}, sizes {sizes}, providers {providers}, modes {modes}")
        for name, status in peer_status().items():
            print(f"  {name}: {status}")
        return 0

    import triton

    peak = matmul_tflops(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else report.cpu_name()
    versions = [f"torch {torch.__version__}", f"triton {triton.__version__}"]
    for dist in ("verl", "liger-kernel"):  # the packages of the peer rows
        try:
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
        except Exception:  # noqa: BLE001
            versions.append(f"{dist} not installed")
    lines = [
        f"# LM-head log-prob + entropy ({datetime.datetime.now().isoformat(timespec='seconds')})",
        "",
        f"device: {gpu}; {'; '.join(versions)}; dtype {str(dtype).removeprefix('torch.')}; "
        f"temperature {TEMPERATURE}; bf16 matmul 8192^3: {f'{peak:.0f} TFLOP/s' if peak else 'n/a (CPU)'}",
        "TFLOP/s = useful matmul flops (fwd 2MHV, fwd+bwd 6MHV) / time. vs matmul = time of the same-shape "
        "bf16 torch.matmul ([M,H]@[H,V], x3 for fwd+bwd) / time. vs 8192^3 = TFLOP/s / the 8192^3 rate. "
        f"err = max |log-prob| / |entropy| error vs fp32 on the first {REF_ROWS} rows (fwd).",
        "liger_flce: no entropy output; fwd = per-token loss (reduction none), fwd+bwd = reduction sum.",
        "",
        "| M | H | V | provider | mode | p50 ms (p20-p80) | peak extra MiB | err lp / ent | TFLOP/s "
        "| vs matmul | vs 8192^3 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    records = []

    def row(M, H, V, name, mode, text):
        lines.append(f"| {M} | {H} | {V} | {name} | {mode} | {text} | | | | | |")
        print(lines[-1], flush=True)

    for M, H, V in sizes:
        mm_ms = None
        if device.type == "cuda":
            try:
                mm_ms = matmul_same_shape_ms(M, H, V, dtype, device)
            except torch.cuda.OutOfMemoryError:
                mm_ms = None
            torch.cuda.empty_cache()
            if mm_ms:
                tf = 2 * M * H * V / (mm_ms * 1e-3) / 1e12
                lines.append(f"| {M} | {H} | {V} | matmul (cuBLAS, bf16 out) | fwd | {mm_ms:.3f} | | "
                             f"| {tf:.1f} | 100% | {f'{tf / peak:.1%}' if peak else 'n/a'} |")
                print(lines[-1], flush=True)
                records.append(dict(M=M, H=H, V=V, provider="matmul", mode="fwd", p50=mm_ms, tflops=tf))
        hidden, weight, targets = make_inputs(M, H, V, dtype, device)
        ref = reference(hidden, weight, targets)
        del hidden, weight, targets
        for name in providers:
            try:
                fn = provider_factory(name)()
            except ImportError:
                row(M, H, V, name, "-", "not installed")
                records.append(dict(M=M, H=H, V=V, provider=name, status="not installed"))
                continue
            except Exception as exc:  # noqa: BLE001  a peer's import-time failure is one row
                row(M, H, V, name, "-", f"import error: {type(exc).__name__}: {str(exc)[:80]}")
                records.append(dict(M=M, H=H, V=V, provider=name, status=f"import error: {exc}"))
                continue
            if device.type != "cuda" and name in PEERS:
                row(M, H, V, name, "-", "importable; needs CUDA")
                continue
            interpreted = os.environ.get("TRITON_INTERPRET") == "1"
            if name.startswith("repro_triton") and device.type != "cuda" and not interpreted:
                row(M, H, V, name, "-", "needs CUDA (or TRITON_INTERPRET=1)")
                continue
            for mode in modes:
                if _fwd_only(name) and mode != "fwd":
                    continue
                try:
                    r = bench_one(name, fn, M, H, V, dtype, device, mode, ref)
                except torch.cuda.OutOfMemoryError:
                    row(M, H, V, name, mode, "OOM")
                    records.append(dict(M=M, H=H, V=V, provider=name, mode=mode, status="OOM"))
                    continue
                except Exception as exc:  # noqa: BLE001  a provider's API drift must not end the run
                    row(M, H, V, name, mode, f"error: {type(exc).__name__}: {str(exc)[:80]}")
                    records.append(dict(M=M, H=H, V=V, provider=name, mode=mode, status=f"error: {exc}"))
                    continue
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                vs_mm = (mm_ms * (1 if mode == "fwd" else 3) / r["p50"]) if mm_ms else None
                roof = f"{r['tflops'] / peak:.1%}" if peak else "n/a"
                lines.append(
                    f"| {M} | {H} | {V} | {name} | {mode} | {r['p50']:.3f} ({r['p20']:.3f}-{r['p80']:.3f}) "
                    f"| {r['peak_mib']:.0f} | {_fmt_err(r)} | {r['tflops']:.1f} "
                    f"| {f'{vs_mm:.1%}' if vs_mm else 'n/a'} | {roof} |"
                )
                print(lines[-1], flush=True)
                records.append(dict(M=M, H=H, V=V, provider=name, mode=mode, vs_matmul=vs_mm, **r))

    # Against the acceptance criteria (forward, every size that ran).
    lines.append("")
    by = {(r["M"], r["H"], r["V"], r["provider"], r.get("mode")): r for r in records if "p50" in r}
    for M, H, V in sizes:
        ours = by.get((M, H, V, "repro_triton", "fwd"))
        if ours is None:
            continue
        parts = []
        if ours.get("vs_matmul"):
            met = "met" if ours["vs_matmul"] >= 0.70 else "not met"
            parts.append(f"{ours['vs_matmul']:.1%} of the same-shape bf16 matmul (target >= 70%: {met})")
        for peer in PEERS:
            p = by.get((M, H, V, peer, "fwd"))
            if p is not None:
                ratio = p["p50"] / ours["p50"]
                parts.append(f"{peer} / ours = {ratio:.2f}x ({'not slower' if ratio >= 1 else 'SLOWER'})")
            else:
                parts.append(f"{peer}: not measured")
        lines.append(f"- fwd {M}x{H}x{V}: repro_triton {ours['p50']:.3f} ms; " + "; ".join(parts))
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(device=gpu, matmul_8192_tflops=peak, records=records),
                                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
