"""`repro-fast demo`: an SFT warm start on the toy task, then GRPO + RePro (alpha = 0.1; each rollout
batch also scored, timed only, by the naive scorer) and plain GRPO from the same checkpoint and seed.
Prints scoring times, held-out accuracy and response length of both runs; plots to ``OUT/plots``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

def run_training_demo(out: str = "runs/demo", steps: int = 60, sft_steps: int = 300, seed: int = 0,
                      progress: bool = True, threads: int | None = None) -> dict:
    """Run the demo into ``out`` (its runs are replaced); returns the summary also saved as JSON."""
    from repro_fast.grpo.config import GRPOConfig
    from repro_fast.grpo.loop import train
    from repro_fast.grpo.plots import plot_runs
    from repro_fast.grpo.sft import SFTConfig, make_out_dir, run_sft

    sft_dir = os.path.join(out, "sft")
    common = dict(task="toy", init=sft_dir, steps=steps, sft_steps=sft_steps, seed=seed, progress=progress,
                  threads=threads, eval_every=max(1, steps // 4), overwrite=True)
    arms = [(label, alpha, GRPOConfig(out=os.path.join(out, "repro" if alpha else "grpo"), alpha=alpha,
                                      compare_naive=alpha != 0, **common))
            for label, alpha in (("GRPO + RePro", 0.1), ("plain GRPO", 0.0))]
    sft_config = SFTConfig(task="toy", out=sft_dir, steps=sft_steps, seed=seed, progress=progress, threads=threads)
    make_out_dir(out)
    start = time.perf_counter()
    print(f"== 1/3 SFT warm start: {sft_steps} steps on synthetic arithmetic traces -> {sft_dir}")
    sft = run_sft(sft_config)
    print(f"   {sft['params']:,} parameters, {sft['train_s']:.0f} s; greedy accuracy {sft['eval_accuracy']:.3f}, "
          f"sampled (tau = 1) accuracy {sft['eval_sampled_accuracy']:.3f}, mean response length "
          f"{sft['eval_sampled_response_length']:.1f} tokens")
    runs, summaries = {}, {}
    for i, (label, alpha, config) in enumerate(arms):
        print(f"== {i + 2}/3 {label} (alpha = {alpha:g}), {steps} steps -> {config.out}")
        summaries[label] = train(config)
        with open(os.path.join(config.out, "metrics.jsonl")) as fp:
            runs[label] = [json.loads(line) for line in fp]
    repro_rows = runs["GRPO + RePro"]
    print("\nRePro scoring time per step, same rollouts (64 trajectories each), this CPU:")
    print("| step | fast (s) | naive (s) | naive / fast | segments per rollout | max |adv diff| |")
    print("|---|---|---|---|---|---|")
    for r in repro_rows:
        print(f"| {r['step']} | {r['time_score_s']:.3f} | {r['time_score_naive_s']:.3f} | "
              f"{r['time_score_naive_s'] / r['time_score_s']:.1f}x | {r['segments_per_rollout']:.1f} | "
              f"{r['naive_max_abs_diff']:.1e} |")
    fast_total = sum(r["time_score_s"] for r in repro_rows)
    naive_total = sum(r["time_score_naive_s"] for r in repro_rows)
    print(f"total: fast {fast_total:.2f} s, naive {naive_total:.2f} s ({naive_total / fast_total:.1f}x)")
    n_eval = GRPOConfig().eval_problems
    print(f"\nEvaluation on {n_eval} held-out toy problems, one sample each at tau = 1, same draws before "
          f"and after (seed {seed}):")
    print("| run | accuracy before -> after | mean response length before -> after (tokens) | re-checks per rollout, last step |")
    print("|---|---|---|---|")
    for label, s in summaries.items():
        ev0, ev1 = s["eval"]["0"], s["eval"][str(steps)]
        print(f"| {label} | {ev0['accuracy']:.3f} -> {ev1['accuracy']:.3f} | "
              f"{ev0['response_length']:.1f} -> {ev1['response_length']:.1f} | "
              f"{runs[label][-1]['rechecks_per_rollout']:.2f} |")
    plots = plot_runs(runs, os.path.join(out, "plots"))
    elapsed = time.perf_counter() - start
    print(f"\nplots: {', '.join(plots) if plots else '(matplotlib missing)'}")
    print(f"demo took {elapsed:.0f} s")
    result = {"sft": {k: v for k, v in sft.items() if k != "config"}, "runs": summaries, "elapsed_s": elapsed,
              "score_time_fast_s": fast_total, "score_time_naive_s": naive_total}
    Path(out, "demo_summary.json").write_text(json.dumps(result, indent=2, default=str))
    return result
