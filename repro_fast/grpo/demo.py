"""`repro-fast demo`: an SFT warm start on the toy task, then GRPO + RePro (alpha = 0.1; each rollout
batch also scored, timed only, by the naive scorer) and plain GRPO from the same checkpoint and seed.
Prints scoring times, held-out accuracy and response length of both runs; plots to ``OUT/plots``.

One measurement of the models throughout: the held-out evaluation of the GRPO loop (``eval_problems``
problems, one sample each at tau = ``temperature`` with the same draws every time). Its step 0 is the
SFT checkpoint, the same for both runs; the SFT's own checks (greedy, 64 problems) stay in
``OUT/sft/sft_summary.json`` and are neither printed nor copied into ``demo_summary.json``, so one
model never shows two "before" numbers. One seed cannot separate the two runs; the printout says so
beside its table and points to ``repro-fast study``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

# printed beside the evaluation table: what one seed's comparison can and cannot show
ONE_SEED_NOTE = ("One seed cannot separate these runs: held-out accuracy varies more from seed to seed than "
                 "between plain GRPO and GRPO + RePro, so either may come out ahead here. `repro-fast study` "
                 "trains both from several seeds and reports means with 95% intervals "
                 "(README, \"What RePro does: a multi-seed study\").")


def _eval_row(name: str, ev: dict) -> str:
    rechecks = f"{ev['rechecks_per_rollout']:.2f}" if "rechecks_per_rollout" in ev else "-"
    return f"| {name} | {ev['accuracy']:.3f} | {ev['response_length']:.1f} | {rechecks} |"


def run_training_demo(out: str = "runs/demo", steps: int = 60, sft_steps: int = 300, seed: int = 0,
                      progress: bool = True, threads: int | None = None, eval_problems: int = 128) -> dict:
    """Run the demo into ``out`` (its runs are replaced); returns the summary also saved as JSON.
    ``eval_problems``: held-out problems of each evaluation (one sample each at tau = 1)."""
    from repro_fast.grpo.config import ConfigError, GRPOConfig
    from repro_fast.grpo.loop import train
    from repro_fast.grpo.plots import eval_description, plot_runs
    from repro_fast.grpo.sft import SFTConfig, make_out_dir, run_sft

    if isinstance(eval_problems, bool) or not isinstance(eval_problems, int) or eval_problems < 1:
        raise ConfigError(f"eval_problems: expected an int >= 1, got {eval_problems!r}")
    sft_dir = os.path.join(out, "sft")
    common = dict(task="toy", init=sft_dir, steps=steps, sft_steps=sft_steps, seed=seed, progress=progress,
                  threads=threads, eval_every=max(1, steps // 4), eval_problems=eval_problems, overwrite=True)
    arms = [(label, alpha, GRPOConfig(out=os.path.join(out, "repro" if alpha else "grpo"), alpha=alpha,
                                      compare_naive=alpha != 0, **common))
            for label, alpha in (("GRPO + RePro", 0.1), ("plain GRPO", 0.0))]
    # overwrite: out/sft is the demo's own (a rerun replaces the earlier demo's SFT, which its
    # manifest lists; a folder of yours there is still refused).
    sft_config = SFTConfig(task="toy", out=sft_dir, steps=sft_steps, seed=seed, progress=progress,
                           threads=threads, overwrite=True)
    make_out_dir(out)
    start = time.perf_counter()
    first = arms[0][2]
    eval_what = f"{eval_description(first.to_dict())} (seed {seed}, the same draws at every evaluation)"
    print(f"== 1/3 SFT warm start: {sft_steps} steps on synthetic arithmetic traces -> {sft_dir}")
    sft = run_sft(sft_config)
    print(f"   {sft['params']:,} parameters, {sft['train_s']:.0f} s, final loss {sft['final_loss']:.3f}; "
          f"its held-out evaluation is step 0 of both GRPO runs below")
    runs, summaries = {}, {}
    for i, (label, alpha, config) in enumerate(arms):
        print(f"== {i + 2}/3 {label} (alpha = {alpha:g}), {steps} steps -> {config.out}")
        summaries[label] = train(config)
        with open(os.path.join(config.out, "metrics.jsonl")) as fp:
            runs[label] = [json.loads(line) for line in fp]
        ev0, ev1 = summaries[label]["eval"]["0"], summaries[label]["eval"][str(steps)]
        print(f"   held-out accuracy {ev0['accuracy']:.3f} (step 0, the SFT checkpoint) -> "
              f"{ev1['accuracy']:.3f} (step {steps}); mean response length {ev0['response_length']:.1f} -> "
              f"{ev1['response_length']:.1f} tokens")
    repro_rows = runs["GRPO + RePro"]
    rollouts = first.prompts_per_step * first.group_size
    print(f"\nRePro scoring time per step, same rollouts ({rollouts} trajectories each), this CPU:")
    print("| step | fast (s) | naive (s) | naive / fast | segments per rollout | max |adv diff| |")
    print("|---|---|---|---|---|---|")
    for r in repro_rows:
        print(f"| {r['step']} | {r['time_score_s']:.3f} | {r['time_score_naive_s']:.3f} | "
              f"{r['time_score_naive_s'] / r['time_score_s']:.1f}x | {r['segments_per_rollout']:.1f} | "
              f"{r['naive_max_abs_diff']:.1e} |")
    fast_total = sum(r["time_score_s"] for r in repro_rows)
    naive_total = sum(r["time_score_naive_s"] for r in repro_rows)
    print(f"total: fast {fast_total:.2f} s, naive {naive_total:.2f} s ({naive_total / fast_total:.1f}x)")

    befores = {label: s["eval"]["0"] for label, s in summaries.items()}
    same_start = len({json.dumps(ev, sort_keys=True) for ev in befores.values()}) == 1
    print(f"\nEvaluation of each model on {eval_what}:")
    print("| model | accuracy | mean response length (tokens) | re-checks per response |")
    print("|---|---|---|---|")
    if same_start:
        print(_eval_row("SFT warm start (step 0 of both runs)", next(iter(befores.values()))))
    else:  # not expected: both runs start from the same checkpoint and evaluate the same draws
        for label, ev in befores.items():
            print(_eval_row(f"SFT warm start (step 0 of {label})", ev))
    for label, s in reversed(list(summaries.items())):
        print(_eval_row(f"{label}, step {steps}", s["eval"][str(steps)]))
    print(ONE_SEED_NOTE)
    configs = {label: config.to_dict() for label, _, config in arms}
    plots = plot_runs(runs, os.path.join(out, "plots"), configs=configs,
                      evals={label: s["eval"] for label, s in summaries.items()})
    elapsed = time.perf_counter() - start
    print(f"\nplots: {', '.join(plots) if plots else '(matplotlib missing)'}")
    print(f"demo took {elapsed:.0f} s")
    # the SFT's own checks (greedy and sampled, on its own 64 problems) stay in sft/sft_summary.json:
    # the summary's one SFT accuracy is step 0 of the runs' evaluation (runs.*.eval["0"])
    sft_facts = {k: v for k, v in sft.items() if k != "config" and not k.startswith("eval_")}
    result = {"sft": {**sft_facts, "own_checks": os.path.join("sft", "sft_summary.json")}, "runs": summaries,
              "elapsed_s": elapsed, "eval": eval_what, "score_time_fast_s": fast_total,
              "score_time_naive_s": naive_total}
    Path(out, "demo_summary.json").write_text(json.dumps(result, indent=2, default=str))
    return result
