"""`repro-fast study`: a sweep over one setting with the rest fixed, several seeds per arm, every arm of a
seed from that seed's one SFT warm start (toy; GSM8K starts from SmolLM2). Held-out metrics after
training as mean and 95% t-interval over seeds, and each arm's paired difference (same seed, same SFT,
same evaluation draws) against its baseline arm; writes ``OUT/study.json``, ``.md``, ``.png``.

The arms of a sweep (`sweep_arms`):

- none (the default): plain GRPO (alpha = 0) and GRPO + RePro (``alpha``);
- ``alpha``: one arm per value, against the alpha = 0 arm (else the first);
- a RePro setting (``stability_weight``, ``num_segments``, ...): the plain arm (alpha = 0), then one
  arm per value at ``alpha``, each against the plain arm;
- any other setting (``estimator``, ``kl_coef``, ...): each value without and with RePro (alpha = 0
  and ``alpha``); the RePro arm against the same value's plain arm, the plain arms against the first.

Runs go to ``workers`` processes (one torch thread each on the toy task): the SFTs first, then every
run, seed by seed, so that a study stopped early has whole seeds in the ``study.json`` it rewrites
after each run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

METRICS = (("accuracy", "held-out accuracy", 3), ("response_length", "response length (tokens)", 1),
           ("rechecks_per_rollout", "re-checks per response", 2))
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)  # Student t, df 1..10
ALPHA_VALUES = (0.0, 0.025, 0.05, 0.1, 0.2, 0.4)  # the alpha sweep's default values


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


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_arms(sweep: str | None, values, alpha: float) -> list[dict]:
    """The arms of a sweep (module docstring), in order: ``label``, ``name`` (its run folder),
    ``settings`` (its GRPOConfig overrides), ``x`` (the swept value; None for the plain arm of a RePro
    setting's sweep), ``series`` (the plot's line) and ``baseline`` (the label it is paired with)."""
    from repro_fast.grpo.config import GRPOConfig, repro_fields

    def arm(label, settings, x, series, baseline):
        name = "_".join(f"{k}-{_fmt(v)}" for k, v in settings.items())
        return {"label": label, "name": name, "settings": settings, "x": x, "series": series,
                "baseline": baseline}

    if sweep is None:
        return [arm("plain GRPO", {"alpha": 0.0}, None, "", None),
                arm("GRPO + RePro", {"alpha": alpha}, None, "", "plain GRPO")]
    if values is None and sweep != "alpha":
        raise ValueError(f"values: expected the values of {sweep} to sweep, got None")
    values = list(ALPHA_VALUES if values is None else values)
    if not values or len(set(map(json.dumps, values))) != len(values):
        raise ValueError(f"values: expected distinct values, got {values}")
    if sweep not in GRPOConfig.settable_fields() or sweep in FIXED:
        raise ValueError(f"sweep: expected a GRPO setting other than {', '.join(FIXED)}, got {sweep!r}")
    if sweep == "alpha":
        base = next((v for v in values if v == 0), values[0])
        return [arm(f"alpha = {_fmt(v)}", {"alpha": v}, v, "",
                    None if v == base else f"alpha = {_fmt(base)}") for v in values]
    if sweep in repro_fields(GRPOConfig):
        plain = arm("plain (alpha = 0)", {"alpha": 0.0}, None, "alpha = 0", None)
        return [plain] + [arm(f"{sweep} = {_fmt(v)}", {"alpha": alpha, sweep: v}, v, f"alpha = {_fmt(alpha)}",
                              plain["label"]) for v in values]
    arms = []
    for v in values:
        plain = arm(f"{sweep} = {_fmt(v)}", {sweep: v, "alpha": 0.0}, v, "alpha = 0",
                    None if not arms else arms[0]["label"])
        arms += [plain, arm(f"{sweep} = {_fmt(v)} + RePro", {sweep: v, "alpha": alpha}, v,
                            f"alpha = {_fmt(alpha)}", plain["label"])]
    return arms


def _run_job(job: tuple) -> tuple:
    """One SFT or one GRPO run, in a worker process: ``(kind, key, config)``; returns ``(kind, key, out)``."""
    kind, key, config = job
    if kind == "sft":
        from repro_fast.grpo.sft import run_sft

        return kind, key, run_sft(config)["train_s"]
    from repro_fast.grpo.loop import train

    return kind, key, train(config)["eval"]


def _pool(workers: int):
    """``workers`` worker processes (spawn: each imports torch afresh, no forked thread pools), or None
    to run in this process."""
    if workers <= 1:
        return None
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=1)


def _run_all(jobs: list[tuple], pool, done) -> None:
    """Each job through ``pool`` (or here), calling ``done(result)`` as each finishes."""
    if pool is None:
        for job in jobs:
            done(_run_job(job))
        return
    for result in pool.imap_unordered(_run_job, jobs):
        done(result)


def run_study(out: str = "runs/study", seeds: int = 5, task: str = "toy", steps: int = 60,
              sft_steps: int = 300, eval_problems: int = 256, alpha: float = 0.1, progress: bool = True,
              threads: int | None = None, sweep: str | None = None, values=None, workers: int | None = None,
              **grpo) -> dict:
    """``seeds`` seeds of each arm of `sweep_arms` (``sweep``, ``values``, ``alpha``); ``grpo``: further
    `GRPOConfig` fields shared by every arm; ``workers``: processes running SFTs and runs side by side
    (None: one per usable core, at most one per run; 1: all in this process). Every run's settings and
    the out folder are checked before anything runs; an earlier study in ``out`` is replaced (only what
    it wrote: its manifest lists it), a folder holding anything else is refused."""
    from repro_fast.grpo.config import ConfigError, load_config
    from repro_fast.grpo.sft import SFTConfig
    from repro_fast.outputs import check_run_dir

    # 1. every setting of every run, before anything is written or trained
    for name, value in (("seeds", seeds), ("eval_problems", eval_problems)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: expected an int >= 1, got {value!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers: expected an int >= 1 or None, got {workers!r}")
    if fixed := sorted(set(FIXED) & set(grpo)):
        raise ConfigError(f"set: {fixed[0]} is chosen by the study for each run, not settable")
    if sweep is not None and sweep in grpo:
        raise ConfigError(f"set: {sweep} is the swept setting; give its values with values")
    try:
        arms = sweep_arms(sweep, values, alpha)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    runs_total = seeds * len(arms)
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), runs_total))
    quiet = progress and workers == 1  # bars of parallel workers would overwrite each other
    sft_dirs = [os.path.join(out, f"seed{s}", "sft") if task == "toy" else None for s in range(seeds)]
    configs = [[load_config(**{**dict(task=task, init=sft_dir, out=os.path.join(out, f"seed{s}", a["name"]),
                                      steps=steps, seed=s, alpha=alpha, sft_steps=sft_steps,
                                      eval_problems=eval_problems, progress=quiet, threads=threads,
                                      plots=False, overwrite=True), **grpo, **a["settings"]})
                for a in arms]
               for s, sft_dir in enumerate(sft_dirs)]
    device = configs[0][0].device  # each seed's SFT runs where its GRPO runs
    sfts = [sft_dir and SFTConfig(task="toy", out=sft_dir, steps=sft_steps, seed=s, device=device,
                                  progress=quiet, threads=threads) for s, sft_dir in enumerate(sft_dirs)]
    # 2. the out folder: new, empty or an earlier study's; every run folder is in a seed folder the
    # study creates anew (an earlier study's is deleted by claim), so none needs a check of its own
    run_dir = check_run_dir(out, "study", overwrite=True, writes=STUDY_WRITES, flag=None)
    run_dir.claim()
    for s in range(seeds):
        run_dir.record(f"seed{s}")
    start = time.perf_counter()
    result = {"task": task, "seeds": seeds, "steps": steps, "sft_steps": sft_steps if task == "toy" else None,
              "eval_problems": eval_problems, "alpha": alpha, "sweep": sweep, "settings": grpo,
              "arms": arms, "workers": workers, "machine": machine(), "elapsed_s": 0.0,
              "runs": {a["label"]: [] for a in arms}}

    def write() -> None:
        result["elapsed_s"] = time.perf_counter() - start
        for runs in result["runs"].values():
            runs.sort(key=lambda r: r["seed"])
        result["table"] = table(result)
        Path(run_dir.record("study.json")).write_text(json.dumps(result, indent=2))
        Path(run_dir.record("study.md")).write_text(result["table"])

    def done(finished: tuple) -> None:
        kind, (s, i), value = finished
        clock = f"[{(time.perf_counter() - start) / 60:.1f} min]"
        if kind == "sft":
            print(f"{clock} seed {s}: SFT done ({value:.0f} s)", flush=True)
            return
        label = arms[i]["label"]
        result["runs"][label].append({"seed": s, "before": value["0"], "after": value[str(steps)]})
        print(f"{clock} seed {s}: {label} done ({len(sum(result['runs'].values(), []))}/{runs_total}); "
              f"accuracy {value['0']['accuracy']:.3f} -> {value[str(steps)]['accuracy']:.3f}", flush=True)
        write()

    pool = _pool(workers)
    try:
        print(f"== {len(arms)} arms x {seeds} seeds = {runs_total} runs of {steps} steps, "
              f"{workers} worker(s)", flush=True)
        _run_all([("sft", (s, None), sft) for s, sft in enumerate(sfts) if sft is not None], pool, done)
        _run_all([("grpo", (s, i), configs[s][i]) for s in range(seeds) for i in range(len(arms))],
                 pool, done)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    write()
    result["plot"] = plot(result, run_dir.record("study.png"))
    print(result["table"])
    print(f"study took {result['elapsed_s']:.0f} s; {out}/study.json, study.md, study.png")
    return result


def _values(result: dict, label: str, key: str, when: str = "after") -> dict[int, float]:
    """Seed -> the metric ``key`` of arm ``label`` (``when``: before or after training)."""
    return {r["seed"]: r[when][key] for r in result["runs"].get(label, []) if key in r[when]}


def paired(result: dict, label: str, baseline: str, key: str) -> list[float]:
    """``label``'s metric minus ``baseline``'s, per seed that both have."""
    a, b = _values(result, label, key), _values(result, baseline, key)
    return [a[s] - b[s] for s in sorted(a) if s in b]


def _cell(xs, digits: int) -> str:
    if not xs:
        return "-"
    m, h = interval(list(xs))
    return f"{m:.{digits}f}" if math.isnan(h) else f"{m:.{digits}f} ± {h:.{digits}f}"  # one seed: no interval


def table(result: dict) -> str:
    """Markdown: per arm, each metric's mean ± 95% half-width over seeds and its paired difference
    against the arm's baseline (same seed); the first row is before training (the SFT start)."""
    arms = result["arms"]
    keys = [(k, name, d) for k, name, d in METRICS
            if any(_values(result, a["label"], k) for a in arms)]  # a metric no run reports: no column
    done = min((len(result["runs"].get(a["label"], [])) for a in arms), default=0)
    lines = [f"{result['seeds']} seeds ({done} finished for every arm), task {result['task']}, "
             f"{result['steps']} steps per run, {result['eval_problems']} held-out problems (one sample each "
             f"at tau = 1); sweep: {result.get('sweep') or 'alpha (plain vs RePro)'}; {result['machine']}; "
             f"{result.get('workers', 1)} worker(s), {result['elapsed_s'] / 60:.1f} min.", "",
             "| arm | seeds | " + " | ".join(f"{name} | paired difference" for _, name, _ in keys) + " |",
             "|---|---|" + "---|---|" * len(keys)]
    first = arms[0]["label"]
    before = [f"{_cell(_values(result, first, k, 'before').values(), d)} | -" for k, _, d in keys]
    lines.append(f"| before (SFT) | {len(_values(result, first, 'accuracy', 'before'))} | "
                 + " | ".join(before) + " |")
    for a in arms:
        n = len(result["runs"].get(a["label"], []))
        cells = []
        for k, _, d in keys:
            diff = f"vs {a['baseline']}: {_cell(paired(result, a['label'], a['baseline'], k), d)}" \
                if a["baseline"] else "(baseline)"
            cells.append(f"{_cell(_values(result, a['label'], k).values(), d)} | {diff}")
        lines.append(f"| {a['label']} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> str | None:
    """Top row, one panel per metric: each arm's mean after training with its 95% band against the swept
    value (a horizontal band for an arm without one); bottom row: the paired differences against each
    arm's baseline, with their bands."""
    from repro_fast.grpo.plots import _pyplot

    plt = _pyplot()
    if plt is None:
        return None
    arms = result["arms"]
    xs = [a["x"] for a in arms if a["x"] is not None]
    numeric = bool(xs) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    if xs:
        order = list(dict.fromkeys(xs))
        pos = (lambda x: x) if numeric else order.index
    else:  # the two-arm study: the arms side by side
        order = [a["label"] for a in arms]
        pos = order.index
    fig, axes = plt.subplots(2, len(METRICS), figsize=(4.2 * len(METRICS), 6.4), squeeze=False)
    series = list(dict.fromkeys(a["series"] for a in arms))
    colors = dict(zip(series, plt.rcParams["axes.prop_cycle"].by_key()["color"]))

    def band(ax, pts, color, label):
        pts = [(x, m, h) for x, m, h in sorted(pts) if not math.isnan(m)]
        if not pts:
            return
        x, m, h = zip(*pts)
        h = [0.0 if math.isnan(v) else v for v in h]
        ax.plot(x, m, "o-", color=color, label=label, ms=4)
        ax.fill_between(x, [a - b for a, b in zip(m, h)], [a + b for a, b in zip(m, h)], color=color,
                        alpha=0.2)

    for col, (key, name, _) in enumerate(METRICS):
        top, bottom = axes[0][col], axes[1][col]
        for s in series:
            pts, diffs = [], []
            for a in arms:
                if a["series"] != s:
                    continue
                vals = list(_values(result, a["label"], key).values())
                x = pos(a["x"]) if a["x"] is not None else (pos(a["label"]) if not xs else None)
                if not vals:
                    continue
                m, h = interval(vals)
                if x is None:  # an arm at no swept value: a horizontal band across the panel
                    top.axhline(m, color=colors[s], ls="--", lw=1, label=a["label"])
                    if not math.isnan(h):
                        top.axhspan(m - h, m + h, color=colors[s], alpha=0.12)
                    continue
                pts.append((x, m, h))
                d = paired(result, a["label"], a["baseline"], key) if a["baseline"] else []
                if d:
                    diffs.append((x, *interval(d)))
            band(top, pts, colors[s], s or None)
            band(bottom, diffs, colors[s], s or None)
        before = list(_values(result, arms[0]["label"], key, "before").values())
        if before:
            top.axhline(statistics.fmean(before), color="gray", ls=":", lw=1, label="before (SFT)")
        bottom.axhline(0.0, color="black", lw=0.8)
        top.set_title(name, fontsize=10)
        bottom.set_title(f"{name}: paired difference", fontsize=9)
        bottom.set_ylabel("minus the baseline arm, same seed", fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            if not numeric:
                ax.set_xticks(range(len(order)), [str(o) for o in order], fontsize=8, rotation=15)
            else:
                ax.set_xlabel(result.get("sweep") or "")
        for ax in (top, bottom) if col == 0 else ():
            if ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize=7)
    done = min((len(result["runs"].get(a["label"], [])) for a in arms), default=0)
    fig.suptitle(f"{result['task']}: sweep over {result.get('sweep') or 'alpha (plain vs RePro)'}, "
                 f"{done} seed(s) x {result['steps']} steps; held-out metrics after training "
                 f"({result['eval_problems']} problems): mean, 95% t-interval band over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
