"""Sweeps of k and of response length: fast vs naive vs the plain forward, side by side.

    python benchmarks/bench_sweep.py [--quick] [--out benchmarks/RESULTS.md] [--plot benchmarks/sweeps.png]

Inputs (`presets.make_long_preset`): the CPU preset's random Qwen2-style model and tokenizer on GSM8K
solutions with re-check paragraphs (the `long` preset's CoTs, 30-100 paragraph boundaries):
- k in (5, 20, 100, 300) on 4 CoTs of 2-4k tokens (`--trajectories`);
- response length in (0, 64, 256, 1024, 4096) tokens at k = 20 (the CoT cut to that length,
  then the think end and the boxed answer), plus CoTs without any boundary (one point each).
Per setting, in one process: median time of fast `score()`, of the plain Hugging Face forward a
trainer runs (`logits_to_keep`, log-softmax, gather) and of naive `score()`, and the token-count
bound of naive/fast from the fast result's points. The plot shows fast/plain and naive/fast
(with the bound) against the sweep variable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import baselines  # noqa: E402
import presets  # noqa: E402
import report  # noqa: E402
from inputs import DEFAULTS, encode  # noqa: E402


def timed(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(pre: presets.Preset, k: int, repeats: int, naive_repeats: int) -> dict:
    fast = pre.make_scorer("fast", num_segments=k)
    naive = pre.make_scorer("naive", num_segments=k)
    res = pre.score(fast)
    points = baselines.result_points(res)
    bound = baselines.token_count_bound(pre.prompts, pre.responses, pre.answer_ids(), points)
    rec = {
        "k": k,
        "response_tokens": sum(len(y) for y in pre.responses) / len(pre.responses),
        "points": sum(len(p) for p in res.points) / len(res.points),
        "fast_s": timed(lambda: pre.score(fast), repeats),
        "plain_s": timed(pre.hf_forward, repeats),
        # the fast call above warmed up
        "naive_s": timed(lambda: pre.score(naive), naive_repeats, warmup=False),
        "token_bound": bound["ratio"],
    }
    rec["fast_over_plain"] = rec["fast_s"] / rec["plain_s"]
    rec["naive_over_fast"] = rec["naive_s"] / rec["fast_s"]
    print(json.dumps(rec), flush=True)
    return rec


def with_responses(pre: presets.Preset, responses) -> presets.Preset:
    import dataclasses

    return dataclasses.replace(pre, responses=[list(r) for r in responses])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 CoTs, lengths up to 1024, k up to 100 (a smoke run)")
    ap.add_argument("--trajectories", type=int, default=4, help="CoTs per setting (default 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-repeats", type=int, default=1)
    ap.add_argument("--json", default=None, help="raw records")
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "sweeps.png"))
    ap.add_argument("--out", default=None, help="markdown file to append the tables to")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    n = 2 if args.quick else args.trajectories
    long_pre = presets.make_long_preset(num_trajectories=n)
    tok = long_pre.tokenizer
    ks = (5, 20, 100) if args.quick else (5, 20, 100, 300)
    lengths = (0, 64, 256, 1024) if args.quick else (0, 64, 256, 1024, 4096)

    k_sweep = [measure(long_pre, k, args.repeats, args.naive_repeats) for k in ks]
    boxed = DEFAULTS.answer_template.format(answer=42)
    tail = encode(tok, f"\n{DEFAULTS.think_end}\n\nThe answer is {boxed}.")
    length_sweep = []
    for length in lengths:
        if length == 0:
            responses = [[] for _ in long_pre.responses]
        else:
            body = [encode(tok, tok.decode(y[:length])) for y in long_pre.responses]
            responses = [b[:length] + tail for b in body]
        pre = with_responses(long_pre, responses)
        length_sweep.append(dict(measure(pre, 20, args.repeats, args.naive_repeats), length=length))
    # one paragraph of 1024 tokens: no boundary, so one point per CoT
    flat = [encode(tok, " ".join(tok.decode(y[:1024]).split()))[:1024] for y in long_pre.responses]
    one_point = dict(measure(with_responses(long_pre, flat), 20, args.repeats, args.naive_repeats),
                     length="1024, no boundary")

    if args.json:
        with open(args.json, "w") as fp:
            json.dump({"k": k_sweep, "length": length_sweep, "one_point": one_point}, fp, indent=1)
    plot(k_sweep, length_sweep, args.plot)
    table = render(k_sweep, length_sweep + [one_point], long_pre.summary())
    print(table)
    if args.out:
        report.append_section(args.out, table)
    return 0


def render(k_sweep, length_sweep, summary: str) -> str:
    head = ("| {} | mean points | fast | plain HF forward | naive | fast ÷ plain | naive ÷ fast "
            "| token bound |\n|---|---|---|---|---|---|---|---|")
    keys = ("points", "fast_s", "plain_s", "naive_s", "fast_over_plain", "naive_over_fast", "token_bound")
    row = "| {} | {:.1f} | {:.3f} s | {:.3f} s | {:.3f} s | {:.2f}x | {:.2f}x | {:.2f}x |"
    title = (f"## Sweeps (`bench_sweep.py`): {report.cpu_name()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}")
    out = [title, "", f"Inputs: {summary}.", "", head.format("k")]
    out += [row.format(r["k"], *(r[k] for k in keys)) for r in k_sweep]
    out += ["", "Response length (tokens of CoT, then think end and answer), k = 20:", "",
            head.format("length")]
    out += [row.format(r["length"], *(r[k] for k in keys)) for r in length_sweep]
    out += ["", "![sweeps](sweeps.png)"]
    return "\n".join(out)


def plot(k_sweep, length_sweep, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = ((axes[0], k_sweep, "k", "num_segments k (2-4k-token CoTs)"),
              (axes[1], [r for r in length_sweep if r["length"]], "length", "response tokens (k = 20)"))
    for ax, rows, key, label in panels:
        x = [r[key] for r in rows]
        ax.plot(x, [r["fast_over_plain"] for r in rows], "o-", label="fast ÷ plain HF forward")
        ax.plot(x, [r["naive_over_fast"] for r in rows], "s-", label="naive ÷ fast")
        ax.plot(x, [r["token_bound"] for r in rows], ":", color="gray",
                label="token-count bound naive/fast")
        ax.axhline(1.0, color="black", lw=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("time ratio")
    axes[1].legend(fontsize=8)
    fig.suptitle("RePro scoring cost on CPU: fast vs plain forward vs naive")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
