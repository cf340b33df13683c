"""Side-by-side table: fast score(), naive score(), plain log-prob forward, paper-code cost.

    python benchmarks/bench_table.py --preset cpu [--out FILE] [--repeats N]
    python benchmarks/bench_table.py --preset gpu [--out FILE] [--repeats N]

Every provider runs on the same inputs (`presets.py`; the baselines are in `baselines.py`).
Time: median wall time over the repeats, after warm-up calls (CUDA: `torch.cuda.synchronize()`
around each call). Peak memory:

* CPU: every provider runs in a fresh subprocess, so one provider's peak cannot hide
  another's. Peak = the process's peak RSS during the calls (VmHWM, reset just before the
  first call via /proc/self/clear_refs; a 1 ms RSS sampler where that is not allowed) minus
  the RSS after model and input setup.
* CUDA: all providers in one process; peak = `torch.cuda.max_memory_allocated()` after
  `reset_peak_memory_stats()`, minus the memory allocated before the calls.

The fast scorer also runs at k = 5 (memory check: its peak must not grow with k). The
token-count bound naive/fast is counted from the fast result's scored points.

The table goes to stdout, and into `benchmarks/RESULTS.md` (or `--out FILE`) under a heading
that describes the machine; a section for the same preset and machine is replaced in place.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import baselines  # noqa: E402
import presets  # noqa: E402
import report  # noqa: E402
from report import fmt_mem, fmt_time, ratio  # noqa: E402

# provider id -> (label, slow?)
# (Run in this order: the quick rows first, so a time limit costs the slow ones.)
PROVIDERS = {
    "fast": ("fast score()", False),
    "hf": ("plain HF forward (logits_to_keep, log-softmax, gather)", False),
    "plain": ("plain forward + fused head", False),
    "fast_torch": ("fast score(), torch ops only (no Triton kernels)", False),
    "fast_k5": ("fast score(), k=5 (memory check)", False),
    "fast_k300": ("fast score(), k=300", False),
    "naive": ("naive score()", True),
    "paper": ("paper-code cost", True),
}
# Providers that only mean something on CUDA (on CPU the fast path already uses torch ops).
CUDA_ONLY = {"fast_torch"}
MEMCHECK_K = 5

# Acceptance targets, per preset (reported, never enforced). "plain" is the HF forward a
# trainer runs when that row was measured, else the fused-head plain forward.
TARGETS = {
    "cpu": {"naive_over_fast_time": (">=", 6.0), "fast_over_plain_time": ("<=", 1.3),
            "fast_over_plain_peak": ("<=", 1.2)},
    "real": {"naive_over_fast_time": (">=", 3.5), "fast_over_plain_time": ("<=", 1.25),
             "fast_over_plain_peak": ("<=", 1.2), "k300_over_k20_time": ("<=", 1.1)},
    "gpu": {"fast_over_plain_time": ("<=", 1.15), "fast_over_plain_peak": ("<=", 1.2)},
}


# --------------------------------------------------------------------------------------------
# Memory probes
# --------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class CpuPeak:
    """Peak RSS above a baseline, in bytes."""

    def __init__(self) -> None:
        self.base = 0
        self._hwm_ok = False
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        gc.collect()
        self.base = (_status_kib("VmRSS") or 0) * 1024
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            self._hwm_ok = (_status_kib("VmHWM") or 0) * 1024 <= self.base + (1 << 20)
        except OSError:
            self._hwm_ok = False
        if not self._hwm_ok:
            self._sampled = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, (_status_kib("VmRSS") or 0) * 1024)
            time.sleep(0.001)

    def stop(self) -> tuple[int, str]:
        if self._hwm_ok:
            return (_status_kib("VmHWM") or 0) * 1024 - self.base, "VmHWM"
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self._sampled - self.base, "RSS sampler (1 ms)"


class CudaPeak:
    def start(self) -> None:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()

    def stop(self) -> tuple[int, str]:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - self.base, "max_memory_allocated"


# --------------------------------------------------------------------------------------------
# One provider
# --------------------------------------------------------------------------------------------

def _provider_fn(preset: presets.Preset, provider: str, points=None):
    if provider in ("fast", "fast_k5", "fast_k300"):
        scorer = preset.make_scorer("fast")
        return lambda: preset.score(scorer)
    if provider == "fast_torch":
        scorer = preset.make_scorer("fast", kernels="torch")
        return lambda: preset.score(scorer)
    if provider == "hf":
        return preset.hf_forward
    if provider == "naive":
        scorer = preset.make_scorer("naive")
        return lambda: preset.score(scorer)
    if provider == "plain":
        return preset.plain_forward
    if provider == "paper":
        return lambda: preset.paper_cost(points=points)
    raise ValueError(f"unknown provider {provider!r}")


def measure(preset: presets.Preset, provider: str, repeats: int, warmup: int,
            points=None) -> dict:
    """Run one provider on `preset`: median time, peak memory, and what its result says.

    `points`: the scored points the paper-code cost uses (from the fast result; default:
    evenly spaced)."""
    fn = _provider_fn(preset, provider, points)
    preset.warm_libraries()
    probe = CudaPeak() if preset.is_cuda else CpuPeak()
    probe.start()
    times, out = [], None
    for i in range(warmup + repeats):
        out = None
        preset.synchronize()
        t0 = time.perf_counter()
        out = fn()
        preset.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak, peak_method = probe.stop()
    rec = {
        "provider": provider,
        "num_segments": preset.num_segments,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_bytes": peak,
        "peak_method": peak_method,
        "head": baselines.HEAD_NAME,
    }
    if provider == "paper":
        rec["paper_points"] = "fast score()'s points" if points else "evenly spaced points"
    if provider in ("fast", "naive", "fast_k5", "fast_torch"):
        pts = baselines.result_points(out)
        rec["points"] = pts
        rec["nll"] = [[float(v) for v in t.tolist()] for t in out.nll]
        rec["token_bound"] = baselines.token_count_bound(
            preset.prompts, preset.responses, preset.answer_ids(), pts)
        rec["mean_point_position"] = preset.mean_point_position(out)
    rec["summary"] = preset.summary()
    return rec


def _build_preset(name: str, provider: str):
    k = {"fast_k5": MEMCHECK_K, "fast_k300": 300}.get(provider)
    return presets.get_preset(name, **({} if k is None else {"num_segments": k}))


def worker_main(args) -> int:
    """Subprocess entry: one provider, result as JSON into args.json_out."""
    try:
        preset = _build_preset(args.preset, args.worker)
        points = None
        if args.points_file:
            with open(args.points_file) as fh:
                points = json.load(fh)
        rec = measure(preset, args.worker, args.repeats, args.warmup, points)
        rec["ok"] = True
    except Exception as exc:  # reported in the table, not fatal for the other rows
        rec = {"provider": args.worker, "ok": False,
               "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with open(args.json_out, "w") as fh:
        json.dump(rec, fh)
    return 0


def _worker_env() -> dict:
    """glibc malloc told to hand large blocks back at once (mmap above 128 KiB, trim above
    128 KiB, two arenas): peak RSS then tracks the peak of live tensors. Without it the same
    provider's peak varied by +-100 MiB between processes (measured here), more than the
    differences this table is about."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def _with_peaks(rec: dict, mem_runs: list[dict]) -> dict:
    """``rec`` (times from the default allocator) with the median peak of the memory runs;
    every peak kept in ``peak_runs``."""
    peaks = [r["peak_bytes"] for r in mem_runs if r.get("ok")]
    if not peaks:
        return rec
    rec = dict(rec, peak_runs=peaks, peak_bytes=statistics.median(peaks))
    rec["peak_method"] = f"{rec.get('peak_method', 'VmHWM')}, malloc returning memory at once"
    return rec


def run_isolated(args, provider: str, repeats: int, warmup: int, points=None,
                 tuned_malloc: bool = False) -> dict:
    fd, path = tempfile.mkstemp(prefix=f"bench-{provider}-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--preset", args.preset,
           "--worker", provider, "--repeats", str(repeats), "--warmup", str(warmup),
           "--json-out", path]
    points_path = None
    if points is not None:
        fd, points_path = tempfile.mkstemp(prefix="bench-points-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(points, fh)
        cmd += ["--points-file", points_path]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env=_worker_env() if tuned_malloc else None)
        try:
            with open(path) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            rec = {"provider": provider, "ok": False,
                   "error": f"worker exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    finally:
        os.unlink(path)
        if points_path:
            os.unlink(points_path)
    return rec


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------

def build_table(preset: str, summary: str, recs: dict) -> tuple[str, list[str], dict]:
    ok = {p: r for p, r in recs.items() if r.get("ok")}
    t = {p: r["median_s"] for p, r in ok.items()}
    m = {p: r["peak_bytes"] for p, r in ok.items()}
    base = "hf" if "hf" in ok else "plain"
    lines = [
        f"| configuration | provider | median time | peak memory | time ÷ fast | time ÷ {base} "
        f"| peak ÷ {base} |",
        "|---|---|---|---|---|---|---|",
    ]
    first = True
    for p, (label, _slow) in PROVIDERS.items():
        if p not in recs:
            continue
        r = recs[p]
        conf = f"`{preset}`" if first else ""
        first = False
        if p in ("fast", "naive"):
            label = f"{label}, k={r.get('num_segments', '?')}" if r.get("ok") else label
        if not r.get("ok"):
            lines.append(f"| {conf} | {label} | n/a | n/a | | | {r.get('error', '?')[:160]} |")
            continue
        lines.append(
            f"| {conf} | {label} | {fmt_time(t[p])} | {fmt_mem(m[p])} "
            f"| {ratio(t[p], t.get('fast'))} | {ratio(t[p], t.get(base))} "
            f"| {ratio(m[p], m.get(base))} |"
        )
    bound = None
    for src in ("fast", "naive"):
        if src in ok and "token_bound" in ok[src]:
            bound = dict(ok[src]["token_bound"], source=f"points of {src} score()")
            break
    if bound is None and preset in presets.PRESET_SETTINGS:  # no scorer result: evenly spaced points
        inp = presets.make_inputs(preset)
        k_est = inp["num_segments"]
        pts = [baselines.default_points(len(y), k_est) for y in inp["responses"]]
        bound = dict(baselines.token_count_bound(inp["prompts"], inp["responses"],
                                                 inp["answer_ids"], pts),
                     source="estimate: evenly spaced points, no scorer result")
    if "fast" in ok and ok["fast"].get("mean_point_position") is not None:
        notes_pos = f"Mean P_j / n of the selected starts (fast): {ok['fast']['mean_point_position']:.3f}."
    else:
        notes_pos = None
    if bound:
        lines.append(
            f"| | token-count bound naive/fast | {bound['ratio']:.2f}× "
            f"| {bound['naive_tokens']:,} / {bound['fast_tokens']:,} tokens | | | |"
        )

    notes = [f"Inputs: {summary}."] + ([] if bound is None else [
             f"Token-count bound from {bound['source']}: naive = Σ_b [(|q|+n) + Σ_j (|q|+P_j+|a|)], "
             "fast = Σ_b [(|q|+n) + (m+1)(|a|-1)]."])
    if notes_pos:
        notes.append(notes_pos)
    heads = {r.get("head") for r in ok.values() if r.get("head")}
    if heads:
        notes.append("Head used by the plain forward: " + ", ".join(sorted(heads)) + ".")
    if "paper" in ok:
        notes.append(f"Paper-code cost scores {ok['paper'].get('paper_points')}: k+2 forwards "
                     "per rollout over [q, y[:P_j], a], full-sequence fp32 logits, log-softmax over "
                     "the whole response region.")
    methods = {r.get("peak_method") for r in ok.values()}
    notes.append("Peak memory: " + ", ".join(sorted(m for m in methods if m)) +
                 (", each provider in a fresh process" if preset == "cpu" else "") +
                 "; above the memory held after model/input setup.")
    reps = {p: len(r["times_s"]) for p, r in ok.items()}
    notes.append("Timed calls per provider: " + ", ".join(f"{p} {n}" for p, n in reps.items()) + ".")
    if "fast" in ok and "fast_k5" in ok:
        notes.append(
            f"Memory check: fast peak at k={MEMCHECK_K}: {fmt_mem(m['fast_k5'])}, at "
            f"k={ok['fast']['num_segments']}: {fmt_mem(m['fast'])} "
            f"(ratio {ratio(m['fast'], m['fast_k5'])})."
        )
    if "fast" in ok and "naive" in ok:
        same = ok["fast"]["points"] == ok["naive"]["points"]
        diffs = [abs(a - b) for x, y in zip(ok["fast"]["nll"], ok["naive"]["nll"])
                 for a, b in zip(x, y)] if same else []
        notes.append(
            "Fast vs naive on these inputs: points "
            + ("identical" if same else "DIFFER")
            + (f", max |ΔNLL| = {max(diffs, default=0.0):.2e}" if same else "") + "."
        )
    ratios = {
        "naive_over_fast_time": t["naive"] / t["fast"] if "naive" in t and "fast" in t else None,
        "fast_over_plain_time": t["fast"] / t[base] if "fast" in t and base in t else None,
        "fast_over_plain_peak": m["fast"] / m[base] if "fast" in m and base in m and m[base] > 0 else None,
        "k300_over_k20_time": t["fast_k300"] / t["fast"] if "fast_k300" in t and "fast" in t else None,
        "token_bound": bound["ratio"] if bound else None,
    }
    if preset in TARGETS:
        checks = []
        for name, (op, target) in TARGETS[preset].items():
            v = ratios[name]
            if v is None:
                checks.append(f"{name} n/a")
                continue
            met = v >= target if op == ">=" else v <= target
            checks.append(f"{name.replace('_over_', '/').replace('_', ' ')} = {v:.2f} "
                          f"(target {op} {target}: {'met' if met else 'NOT met'})")
        notes.append("Targets: " + "; ".join(checks) + ".")
    return "\n".join(lines), notes, ratios


def write_results(path: str, preset: str, desc: str, key: str, table: str, notes: list[str]) -> None:
    """The preset's section of `RESULTS.md` (replaced in place when the machine's key matches)."""
    section = "\n".join([f"## `{preset}` preset: {desc}", "", table, "", *[f"- {n}" for n in notes]])
    report.replace_section(path, key, section)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(presets.PRESETS), default="cpu")
    ap.add_argument("--out", help="markdown file to write/update (default benchmarks/RESULTS.md)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed calls of fast, plain and fast k=5 (default 3)")
    ap.add_argument("--slow-repeats", type=int, default=None,
                    help="timed calls of naive and paper cost (default: 2 on cpu, 1 on gpu)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed calls before the timed ones (fast, plain, fast k=5)")
    ap.add_argument("--slow-warmup", type=int, default=0,
                    help="untimed calls before the timed ones (naive, paper cost)")
    ap.add_argument("--providers", default=",".join(PROVIDERS),
                    help=f"comma-separated subset of {','.join(PROVIDERS)}")
    ap.add_argument("--in-process", action="store_true",
                    help="run every provider in this process (default on gpu only)")
    ap.add_argument("--memory-runs", type=int, default=3,
                    help="fresh processes per quick provider on CPU; the median peak is reported")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--json", dest="json_path",
                    help="also write the raw per-provider records (all times, peaks) as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    ap.add_argument("--points-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)

    on_gpu = args.preset.startswith("gpu")
    if on_gpu and not torch.cuda.is_available():
        print(f"the {args.preset} preset needs a CUDA device", file=sys.stderr)
        return 2
    slow_repeats = args.slow_repeats or (1 if on_gpu else 2)
    wanted = [p.strip() for p in args.providers.split(",") if p.strip()]
    # fast first: the paper-code cost scores the fast result's points
    wanted.sort(key=lambda p: list(PROVIDERS).index(p) if p in PROVIDERS else -1)
    unknown = set(wanted) - set(PROVIDERS)
    if unknown:
        ap.error(f"unknown providers {sorted(unknown)}")
    if not on_gpu:
        wanted = [p for p in wanted if p not in CUDA_ONLY]
    in_process = args.in_process or on_gpu

    load_start = report.loadavg()
    recs: dict[str, dict] = {}
    shared = {}
    points = None
    for p in wanted:
        slow = PROVIDERS[p][1]
        reps, warm = (slow_repeats, args.slow_warmup) if slow else (args.repeats, args.warmup)
        t0 = time.perf_counter()
        if in_process:
            try:
                if "main" not in shared:
                    shared["main"] = presets.get_preset(args.preset)
                pre = shared["main"]
                if p in ("fast_k5", "fast_k300"):  # same model and inputs, another k
                    pre = dataclasses.replace(pre, num_segments=MEMCHECK_K if p == "fast_k5" else 300)
                rec = measure(pre, p, reps, warm, points)
                rec["ok"] = True
            except Exception as exc:
                rec = {"provider": p, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
        else:
            # Time from a process with the default allocator; for the quick providers the peak
            # comes from extra processes whose allocator returns memory at once (see
            # `_worker_env`), the median over `--memory-runs` of them.
            pts = points if p == "paper" else None
            rec = run_isolated(args, p, reps, warm, pts)
            if not slow and rec.get("ok"):
                mem = [run_isolated(args, p, 1, warm, pts, tuned_malloc=True)
                       for _ in range(args.memory_runs)]
                rec = _with_peaks(rec, mem)
        recs[p] = rec
        if p == "fast" and rec.get("ok"):
            points = rec["points"]
        status = (f"median {fmt_time(rec['median_s'])}, peak {fmt_mem(rec['peak_bytes'])}"
                  if rec.get("ok") else f"FAILED: {rec.get('error')}")
        print(f"[{p}] {status} ({time.perf_counter() - t0:.0f} s incl. setup)", file=sys.stderr)
        if not rec.get("ok") and rec.get("traceback"):
            print(rec["traceback"], file=sys.stderr)

    summary = next((r["summary"] for r in recs.values() if r.get("summary")), None)
    if summary is None and args.preset in presets.PRESET_SETTINGS:
        summary = presets.make_inputs(args.preset)["summary"]
    table, notes, _ratios = build_table(args.preset, summary or args.preset, recs)
    spread = [f"{p} " + ", ".join(fmt_mem(b) for b in r["peak_runs"])
              for p, r in recs.items() if len(r.get("peak_runs", ())) > 1]
    if spread:
        notes.append("Peak memory of the quick rows is the median over fresh processes with glibc "
                     "malloc returning large blocks at once (times come from a separate process "
                     "with the default allocator); each process's peak: "
                     + "; ".join(spread) + ".")
    load_end = report.loadavg()
    busy = report.busy(load_start, load_end)
    notes.append(f"1-min load average at start / end of the run: {load_start} / {load_end} "
                 f"on {os.cpu_count()} cores"
                 + (" (above the core count: other processes shared the CPUs and wall times are "
                    "inflated; the ratios of one run are more robust)." if busy else "."))
    desc, key = report.machine_description(args.preset)
    print(f"## `{args.preset}` preset: {desc}\n")
    print(table)
    print()
    for n in notes:
        print(f"- {n}")
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"preset": args.preset, "machine": desc, "summary": summary,
                       "records": {p: {k: v for k, v in r.items() if k not in ("nll", "points")}
                                   for p, r in recs.items()}}, fh, indent=1)
    if not args.no_write:
        out = args.out or os.path.join(HERE, "RESULTS.md")
        write_results(out, args.preset, desc, key, table, notes)
        print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
