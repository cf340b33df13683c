"""PNG plots of a run (accuracy, response length, scoring time per step), and of several runs
side by side (the demo). Needs matplotlib; without it the plots are skipped with a warning.

Each line says what was measured: ``training rollouts`` are the step's own samples (at the sampling
temperature tau, on that step's training prompts); ``held-out eval`` is the run's evaluation on
``eval_problems`` fixed held-out problems, one sample each at tau with the same draws every time
(greedy only with ``eval_greedy``), step 0 being the evaluation before training."""

from __future__ import annotations

import json
import os
import warnings


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no plots (pip install matplotlib)", stacklevel=3)
        return None
    return plt


def _tau(config: dict) -> str:
    return f"tau = {config.get('temperature', 1.0):g}"


def eval_description(config: dict) -> str:
    """How a run's held-out evaluation sampled, from its config (a `GRPOConfig.to_dict()`)."""
    n = config.get("eval_problems")
    how = "greedy" if config.get("eval_greedy") else f"one sample each at {_tau(config)}"
    return f"{n} held-out problems, {how}" if n else f"held-out problems, {how}"


def _name(label: str, what: str) -> str:
    return f"{label}: {what}" if label else what


def _eval_points(rows: list[dict], evals: dict | None, row_key: str, eval_key: str) -> list[tuple]:
    """(step, value) of the held-out evaluations: from ``evals`` (step 0 included) when given,
    else from the rows that carry one."""
    if evals:
        points = [(int(step), ev[eval_key]) for step, ev in evals.items() if eval_key in ev]
    else:
        points = [(r["step"], r[row_key]) for r in rows if row_key in r]
    return sorted(points)


def _series(rows: list[dict], key: str) -> list[tuple]:
    return [(r["step"], r[key]) for r in rows if key in r]


def _common(configs: dict, describe) -> str | None:
    """``describe(config)`` when all runs share it (said once, in the title), else None (per line)."""
    found = {describe(c) for c in configs.values()}
    return found.pop() if len(found) == 1 else None


def _lines(runs, configs, evals, train_key: str, row_key: str, eval_key: str):
    shared_tau, shared_eval = _common(configs, _tau), _common(configs, eval_description)
    lines = []
    for label, rows in runs.items():
        config = configs.get(label)
        train_what = "training rollouts" + (f" ({_tau(config)})" if config and not shared_tau else "")
        eval_what = "held-out eval" + (f" ({eval_description(config)})" if config and not shared_eval else "")
        lines.append((_name(label, train_what), _series(rows, train_key), "-"))
        lines.append((_name(label, eval_what), _eval_points(rows, evals.get(label), row_key, eval_key), "--"))
    what = []
    if shared_tau:
        what.append(f"solid, training rollouts: that step's own samples at {shared_tau}")
    if shared_eval:
        what.append(f"dashed, held-out eval: {shared_eval}, the same draws each time")
    return lines, "\n".join(what)


def _scorer_lines(runs, configs):
    """Scoring time per step. Runs that also timed the naive scorer (``compare_naive``) show fast and
    naive on the same rollouts, and only they are shown; otherwise each run's own scorer."""
    compared = {label: rows for label, rows in runs.items() if any("time_score_naive_s" in r for r in rows)}
    lines = []
    for label, rows in (compared or runs).items():
        config = configs.get(label, {})
        scorer = config.get("scorer", "fast")
        own = {"fast": "fast scorer", "naive": "naive scorer",
               "none": "log-prob forward (no RePro scorer)"}.get(scorer, f"{scorer} scorer")
        if scorer != "none" and config.get("alpha") == 0:
            own += " (alpha = 0: only its log-probs are used, as PPO old log-probs)"
        lines.append((_name(label, own), _series(rows, "time_score_s"), "-"))
        if label in compared:
            naive = _series(rows, "time_score_naive_s")
            lines.append((_name(label, "naive scorer, same rollouts"), naive, "-"))
    notes = []
    for label in runs:
        if compared and label not in compared:
            # an alpha = 0 run still runs its scorer: its token log-probs are the PPO old log-probs and
            # its RePro rewards are computed but weighted 0; timed on other rollouts, it compares nothing
            why = ("its scorer runs only for the PPO old log-probs (RePro weight alpha = 0)"
                   if configs.get(label, {}).get("alpha") == 0 else "no naive timing on its rollouts")
            notes.append(f"not shown: {label}, {why}")
    return lines, "\n".join(notes)


def plot_runs(runs: dict[str, list[dict]], out_dir: str, configs: dict[str, dict] | None = None,
              evals: dict[str, dict] | None = None) -> list[str]:
    """One figure per quantity, lines per run; returns the files written.

    ``runs``: label -> metrics.jsonl rows; ``configs``: label -> the run's config dict (for tau, the
    evaluation's settings and the scorer in the labels); ``evals``: label -> the summary's ``eval``
    dict (step -> metrics, step 0 = before training), so the eval curves start at step 0."""
    plt = _pyplot()
    if plt is None:
        return []
    from matplotlib.ticker import MaxNLocator

    configs, evals = configs or {}, evals or {}
    tau = _common(configs, _tau)
    sampled = f", sampled at {tau}" if tau else ""
    if any(c.get("eval_greedy") for c in configs.values()):
        sampled = f" (rollouts at {tau or 'tau'}; eval greedy)"
    compared = any("time_score_naive_s" in r for rows in runs.values() for r in rows)
    panels = [
        ("accuracy.png", f"accuracy{sampled}", "Accuracy per GRPO step",
         "GRPO step (0: before training)",
         *_lines(runs, configs, evals, "accuracy", "eval_accuracy", "accuracy")),
        ("response_length.png", f"response length (tokens){sampled}", "Response length per GRPO step",
         "GRPO step (0: before training)",
         *_lines(runs, configs, evals, "response_length", "eval_response_length", "response_length")),
        ("scoring_time.png", "RePro scoring time per step (s)",
         "Fast vs naive RePro scorer on the same rollouts" if compared else "RePro scoring time per step",
         "GRPO step", *_scorer_lines(runs, configs)),
    ]
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for filename, ylabel, title, xlabel, lines, note in panels:
        lines = [line for line in lines if line[1]]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (label, points, style) in enumerate(lines):
            xs, ys = zip(*points)
            color = f"C{i}" if filename == "scoring_time.png" else f"C{i // 2}"  # one colour per run
            ax.plot(xs, ys, style, color=color, marker="o" if len(xs) < 12 else None, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title + (f"\n{note}" if note else ""), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _read_json(path: str):
    try:
        with open(path) as fp:
            return json.load(fp)
    except (OSError, ValueError):
        return None


def plot_run(rows: list[dict], out_dir: str, run_dir: str | None = None, label: str = "") -> list[str]:
    """`plot_runs` of one run. ``run_dir`` (default: ``out_dir``'s parent, the run's ``out``): where
    its ``config.json`` and ``summary.json`` are read from, for the labels and the step-0 evaluation."""
    run_dir = os.path.dirname(os.path.abspath(out_dir)) if run_dir is None else run_dir
    config = _read_json(os.path.join(run_dir, "config.json"))
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    configs = {label: config} if isinstance(config, dict) else None
    has_eval = isinstance(summary, dict) and isinstance(summary.get("eval"), dict)
    evals = {label: summary["eval"]} if has_eval else None
    return plot_runs({label: rows}, out_dir, configs=configs, evals=evals)
