"""torch.profiler summary of the fast scorer: where does `RePROScorer.score()` spend its time?

    python benchmarks/profile_score.py --preset gpu --out-dir OUT/profile        # CUDA
    python benchmarks/profile_score.py --preset cpu --repeats 1 --out-dir /tmp/prof   # CPU

Builds the preset with `benchmarks/presets.py` (any name `presets.get_preset` knows), warms the fast
scorer up (`--warmup` calls: Triton compile + autotune, CUDA context, allocator), then profiles
`--repeats` calls of `score()` (and, with `--plain`, the same number of plain log-prob forwards
for comparison). Writes to --out-dir:
    profile_<preset>.txt    the top ops by self device time (self CUDA time on CUDA, self CPU on CPU),
                            time by category (GEMM, attention, the repro Triton kernels, ...),
                            host syncs, and the device-busy fraction
    profile_<preset>.json   the same numbers, machine-readable
    trace_<preset>.json.gz  the chrome trace, only with --trace (can be large)
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import presets  # noqa: E402

# Kernel / op name patterns -> category (first match wins; matched case-insensitively).
CATEGORIES = [
    ("repro head (Triton)", r"_fwd_partial|_fwd_combine|_bwd_dlogits|logprob_entropy"),
    ("repro prefix attention (Triton)", r"prefix_attention"),
    ("repro segment select (Triton)", r"segment_select"),
    ("attention (SDPA/flash)", r"flash|fmha|attention|sdpa|efficient_attention|cudnn.*mha"),
    ("GEMM", r"gemm|matmul|\bmm\b|addmm|nvjet|cutlass|sm90_xmma|ampere_.*s16816|cublas"
             r"|aten::linear|aten::bmm"),
    ("memcpy / memset", r"memcpy|memset|copy_|aten::to\b|aten::_to_copy"),
    ("normalization", r"norm"),
    ("softmax / log-softmax", r"softmax"),
    ("elementwise / reduce", r"elementwise|vectorized|reduce|unrolled"
                             r"|aten::(mul|add|sub|div|exp|silu|neg|cat|where|sum|max)"),
]
SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::item",
            "aten::_local_scalar_dense", "aten::nonzero", "cudaMemcpy ", "cudaMemcpyAsync")


def categorize(name: str) -> str:
    for cat, pat in CATEGORIES:
        if re.search(pat, name, flags=re.I):
            return cat
    return "other"


def _self_device_us(evt) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(evt, attr):
            return float(getattr(evt, attr))
    return 0.0


def summarize(prof, on_cuda: bool, wall_s: float, calls: int) -> dict:
    events = prof.key_averages()
    rows = []
    for e in events:
        dev = _self_device_us(e) if on_cuda else 0.0
        rows.append(dict(name=e.key, count=e.count, self_cpu_us=float(e.self_cpu_time_total),
                         self_device_us=dev, cpu_total_us=float(e.cpu_time_total)))
    key = "self_device_us" if on_cuda else "self_cpu_us"
    total = sum(r[key] for r in rows)
    cats: dict[str, float] = {}
    for r in rows:
        if on_cuda and r["self_device_us"] <= 0:
            continue
        if not on_cuda and (r["name"].startswith("score()") or r["name"].startswith("ProfilerStep")):
            continue
        cats[categorize(r["name"])] = cats.get(categorize(r["name"]), 0.0) + r[key]
    syncs = {r["name"]: r["count"] for r in rows if any(r["name"].startswith(s.strip()) for s in SYNC_OPS)}
    return dict(
        metric=key, total_us=total, wall_s=wall_s, calls=calls,
        device_busy_fraction=(total / 1e6 / wall_s) if (on_cuda and wall_s > 0) else None,
        categories=dict(sorted(cats.items(), key=lambda kv: -kv[1])),
        host_sync_like_calls=syncs,
        top=sorted(rows, key=lambda r: -r[key])[:40],
    )


def render(summary: dict, table: str, title: str) -> str:
    key = summary["metric"]
    label = "self CUDA" if key == "self_device_us" else "self CPU"
    total = summary["total_us"] or 1.0
    out = [title, ""]
    out.append(f"profiled calls: {summary['calls']}; wall {summary['wall_s']:.3f} s "
               f"({summary['wall_s'] / max(1, summary['calls']):.3f} s a call); total {label} time "
               f"{summary['total_us'] / 1e3:.1f} ms")
    if summary["device_busy_fraction"] is not None:
        out.append(f"device busy (sum of kernel time / wall): {summary['device_busy_fraction']:.1%}")
    out += ["", f"By category ({label}):", "| category | ms | share |", "|---|---|---|"]
    for cat, us in summary["categories"].items():
        out.append(f"| {cat} | {us / 1e3:.2f} | {us / total:.1%} |")
    out += ["", "Host-sync-like calls (count over the profiled calls):"]
    out += [f"  {k}: {v}" for k, v in sorted(summary["host_sync_like_calls"].items())] or ["  none"]
    out += ["", f"Top ops by {label} time:", table]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu" if torch.cuda.is_available() else "cpu",
                    help="a name presets.get_preset knows (cpu, gpu, ...)")
    ap.add_argument("--repeats", type=int, default=2, help="profiled score() calls")
    ap.add_argument("--warmup", type=int, default=1, help="unprofiled score() calls first")
    ap.add_argument("--row-limit", type=int, default=30)
    ap.add_argument("--out-dir", default="profile_out")
    ap.add_argument("--plain", action="store_true", help="also profile the plain log-prob forward")
    ap.add_argument("--trace", action="store_true", help="also save the chrome trace (gzipped)")
    ap.add_argument("--backend", default="fast", help="scorer backend (fast or naive)")
    args = ap.parse_args(argv)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    preset = presets.get_preset(args.preset)
    print(f"preset built in {time.perf_counter() - t0:.1f} s: {preset.summary()}", flush=True)
    on_cuda = preset.is_cuda
    scorer = preset.make_scorer(args.backend)
    preset.warm_libraries()
    for _ in range(args.warmup):
        t0 = time.perf_counter()
        preset.score(scorer)
        preset.synchronize()
        print(f"warm-up score(): {time.perf_counter() - t0:.3f} s", flush=True)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    sort_by = "self_device_time_total" if on_cuda else "self_cpu_time_total"  # torch >= 2.4 name
    report = {}
    text = []
    jobs = [("score", lambda: preset.score(scorer))]
    if args.plain:
        jobs.append(("plain", preset.plain_forward))
    for label, fn in jobs:
        preset.synchronize()
        with profile(activities=activities, record_shapes=False) as prof:
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                with record_function(f"{label}()"):
                    fn()
            preset.synchronize()
            wall = time.perf_counter() - t0
        table = prof.key_averages().table(sort_by=sort_by, row_limit=args.row_limit, max_name_column_width=60)
        summary = summarize(prof, on_cuda, wall, args.repeats)
        title = (f"# torch.profiler: {args.backend} {label}() on preset `{args.preset}` "
                 f"({torch.cuda.get_device_name(0) if on_cuda else 'CPU'}; torch {torch.__version__})\n"
                 f"{preset.summary()}")
        text.append(render(summary, table, title))
        report[label] = summary
        print(text[-1], flush=True)
        if args.trace:
            raw = out_dir / f"trace_{args.preset}_{label}.json"
            prof.export_chrome_trace(str(raw))
            with open(raw, "rb") as src, gzip.open(str(raw) + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            raw.unlink()
    if "score" in report and "plain" in report:
        s, p = report["score"], report["plain"]
        line = (f"score() / plain forward: wall {s['wall_s'] / p['wall_s']:.2f}x, "
                f"{s['metric']} {s['total_us'] / max(p['total_us'], 1e-9):.2f}x")
        text.append(line + "\n")
        print(line)
    (out_dir / f"profile_{args.preset}.txt").write_text("\n".join(text))
    (out_dir / f"profile_{args.preset}.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out_dir / f'profile_{args.preset}.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
