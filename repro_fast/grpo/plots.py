"""PNG plots of a run (accuracy, response length, scoring time per step), and of several runs
side by side (the demo). Needs matplotlib; without it the plots are skipped with a warning."""

from __future__ import annotations

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


PANELS = [  # file, y label, (metric, legend suffix) of each line per run
    ("accuracy.png", "accuracy (sampled rollouts, tau)",
     [("accuracy", ""), ("eval_accuracy", " greedy eval")]),
    ("response_length.png", "mean response length (tokens)",
     [("response_length", ""), ("eval_response_length", " greedy eval")]),
    ("scoring_time.png", "RePro scoring time per step (s)",
     [("time_score_s", ": its scorer (fast by default)"),
      ("time_score_naive_s", ": naive scorer, same rollouts")]),
]


def plot_runs(runs: dict[str, list[dict]], out_dir: str) -> list[str]:
    """One figure per quantity, one line per run; returns the files written."""
    plt = _pyplot()
    if plt is None:
        return []
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for filename, ylabel, keys in PANELS:
        lines = [(f"{label}{suffix}", [(r["step"], r[key]) for r in rows if key in r])
                 for label, rows in runs.items() for key, suffix in keys]
        lines = [(label, points) for label, points in lines if points]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in lines:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_run(rows: list[dict], out_dir: str) -> list[str]:
    """`plot_runs` of one run."""
    return plot_runs({"run": rows}, out_dir)
