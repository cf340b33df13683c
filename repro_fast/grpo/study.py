"""`repro-fast study`: plain GRPO and GRPO + RePro over several seeds, each pair from that seed's SFT
warm start (toy; GSM8K starts from SmolLM2). Held-out metrics before and after as mean and 95%
t-interval over seeds, plus the paired difference; writes ``OUT/study.json``, ``.md``, ``.png``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

ARMS = (("plain GRPO", "grpo", 0.0), ("GRPO + RePro", "repro", 0.1))
METRICS = (("accuracy", "held-out accuracy", 3), ("response_length", "response length (tokens)", 1),
           ("rechecks_per_rollout", "re-checks per response", 2))
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)  # Student t, df 1..10


def interval(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (nan for one value)."""
    if len(xs) < 2:
        return statistics.fmean(xs), math.nan
    df, z = len(xs) - 1, 1.959964
    # beyond the table: the Cornish-Fisher expansion of the t quantile (error < 2e-3)
    t = T975[df - 1] if df <= len(T975) else (
        z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2))
    return statistics.fmean(xs), t * statistics.stdev(xs) / math.sqrt(len(xs))


def machine() -> str:
    """CPU model, usable cores, torch and Python versions."""
    import torch

    try:
        with open("/proc/cpuinfo") as fp:
            cpu = next(line.split(":", 1)[1].strip() for line in fp if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


# what a study writes into its out folder: a file of yours with one of these names blocks the study
STUDY_WRITES = ("study.json", "study.md", "study.png", "seed*")
FIXED = ("seed", "out", "init", "plots", "overwrite")  # GRPOConfig fields the study sets for each run


def run_study(out: str = "runs/study", seeds: int = 5, task: str = "toy", steps: int = 60,
              sft_steps: int = 300, eval_problems: int = 256, alpha: float = 0.1, progress: bool = True,
              threads: int | None = None, **grpo) -> dict:
    """``seeds`` seeds of each arm; ``grpo``: further `GRPOConfig` fields shared by both arms. Every run's
    settings and the out folder are checked before anything runs; an earlier study in ``out`` is replaced
    (only what it wrote: its manifest lists it), a folder holding anything else is refused."""
    from repro_fast.grpo.config import ConfigError, load_config
    from repro_fast.grpo.loop import train
    from repro_fast.grpo.sft import SFTConfig, run_sft
    from repro_fast.outputs import check_run_dir

    # 1. every setting of every run, before anything is written or trained
    for name, value in (("seeds", seeds), ("eval_problems", eval_problems)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: expected an int >= 1, got {value!r}")
    if fixed := sorted(set(FIXED) & set(grpo)):
        raise ConfigError(f"set: {fixed[0]} is chosen by the study for each run, not settable")
    arms = [(label, name, alpha if a else 0.0) for label, name, a in ARMS]
    sft_dirs = [os.path.join(out, f"seed{s}", "sft") if task == "toy" else None for s in range(seeds)]
    configs = [[load_config(task=task, init=sft_dir, out=os.path.join(out, f"seed{s}", name), steps=steps,
                            seed=s, alpha=a, sft_steps=sft_steps, eval_problems=eval_problems,
                            progress=progress, threads=threads, plots=False, overwrite=True, **grpo)
                for _, name, a in arms]
               for s, sft_dir in enumerate(sft_dirs)]
    device = configs[0][0].device  # each seed's SFT runs where its GRPO runs
    sfts = [sft_dir and SFTConfig(task="toy", out=sft_dir, steps=sft_steps, seed=s, device=device,
                                  progress=progress, threads=threads) for s, sft_dir in enumerate(sft_dirs)]
    # 2. the out folder: new, empty or an earlier study's; every run folder is in a seed folder the
    # study creates anew (an earlier study's is deleted by claim), so none needs a check of its own
    run_dir = check_run_dir(out, "study", overwrite=True, writes=STUDY_WRITES, flag=None)
    run_dir.claim()
    start = time.perf_counter()
    runs = {label: [] for label, _, _ in arms}
    for s in range(seeds):
        run_dir.record(f"seed{s}")
        if sfts[s] is not None:
            print(f"== seed {s}: SFT ({sft_steps} steps)")
            run_sft(sfts[s])
        for (label, _, a), config in zip(arms, configs[s]):
            print(f"== seed {s}: {label} (alpha = {a:g}), {steps} steps")
            ev = train(config)["eval"]
            runs[label].append({"seed": s, "before": ev["0"], "after": ev[str(steps)]})
    result = {"task": task, "seeds": seeds, "steps": steps, "sft_steps": sft_steps if task == "toy" else None,
              "eval_problems": eval_problems, "alpha": alpha, "machine": machine(),
              "elapsed_s": time.perf_counter() - start, "runs": runs}
    result["table"] = table(result)
    Path(run_dir.record("study.json")).write_text(json.dumps(result, indent=2))
    Path(run_dir.record("study.md")).write_text(result["table"])
    result["plot"] = plot(result, run_dir.record("study.png"))
    print(result["table"])
    print(f"study took {result['elapsed_s']:.0f} s; {out}/study.json, study.md, study.png")
    return result


def _values(result: dict, label: str, key: str, when: str = "after") -> list[float]:
    return [r[when][key] for r in result["runs"][label] if key in r[when]]


def table(result: dict) -> str:
    """Markdown: mean ± 95% half-width over seeds, per arm, before and after, and RePro - GRPO."""
    (base, _, _), (rep, _, _) = ARMS

    def cell(xs, digits):
        if not xs:
            return "-"
        m, h = interval(xs)
        return f"{m:.{digits}f} ± {h:.{digits}f}"

    lines = [f"{result['seeds']} seeds, task {result['task']}, {result['steps']} GRPO steps per run, "
             f"{result['eval_problems']} held-out problems (one sample each at tau = 1); "
             f"{result['machine']}; {result['elapsed_s'] / 60:.1f} min.", "",
             f"| metric (mean ± 95% interval) | before (SFT) | {base} | {rep} | {rep} - {base}, paired |",
             "|---|---|---|---|---|"]
    for key, name, digits in METRICS:
        before = _values(result, base, key, "before")
        b, r = _values(result, base, key), _values(result, rep, key)
        if b:
            lines.append(f"| {name} | {cell(before, digits)} | {cell(b, digits)} | {cell(r, digits)} | "
                         f"{cell([x - y for x, y in zip(r, b)], digits)} |")
    lines += ["", "| seed | " + " | ".join(f"{name}: {base} / {rep}" for _, name, _ in METRICS) + " |",
              "|---|" + "---|" * len(METRICS)]
    for rb, rr in zip(result["runs"][base], result["runs"][rep]):
        lines.append(f"| {rb['seed']} | " + " | ".join(
            f"{rb['after'].get(k, math.nan):.{d}f} / {rr['after'].get(k, math.nan):.{d}f}"
            for k, _, d in METRICS) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> str | None:
    """One panel per metric: each seed's before -> after per arm, means with 95% intervals."""
    from repro_fast.grpo.plots import _pyplot

    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6))
    base = ARMS[0][0]
    for ax, (key, name, _) in zip(axes, METRICS):
        cols = [("before (SFT)", _values(result, base, key, "before"))]
        cols += [(label, _values(result, label, key)) for label, _, _ in ARMS]
        for x, (_, xs) in enumerate(cols):
            ax.scatter([x] * len(xs), xs, s=14, alpha=0.5)
            if xs:
                m, h = interval(xs)
                ax.errorbar([x + 0.15], [m], yerr=None if math.isnan(h) else [h], fmt="o", color="black",
                            capsize=4)
        ax.set_xticks(range(len(cols)), [c[0] for c in cols], fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result['task']}: {result['seeds']} seeds x {result['steps']} steps (dots: seeds; "
                 "black: mean, 95% interval)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
