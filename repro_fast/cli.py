"""`repro-fast` command line.

    repro-fast demo            SFT warm start, then GRPO with RePro and plain GRPO on the toy task
                               (CPU, minutes); prints fast vs naive scoring time per step, final
                               accuracy and response length of both runs; writes plots
    repro-fast demo --scoring  score real GSM8K chains of thought with SmolLM2-135M-Instruct
    repro-fast score-demo      (the same)
    repro-fast train           GRPO (+ RePro) from a config file (JSON/TOML) and flags
    repro-fast sft             the supervised warm start
    repro-fast study           several seeds of GRPO and GRPO + RePro: means, 95% intervals, a plot
    repro-fast inspect         an HTML page of RePro's segments, J curve and rewards for given CoTs
"""

from __future__ import annotations

import argparse
import json
import re
import sys


def _add_scoring_demo_args(p) -> None:
    p.add_argument("--problems", type=int, default=3, help="scoring demo: how many GSM8K problems (1-100)")
    p.add_argument("--segments", type=int, default=20, help="scoring demo: num_segments k")


def _scoring_demo(parser, args) -> None:
    if not 1 <= args.problems <= 100:
        parser.error(f"--problems: expected 1..100, got {args.problems}")
    if args.segments < 1:
        parser.error(f"--segments: expected >= 1, got {args.segments}")
    from repro_fast.demo import run_demo

    run_demo(num_problems=args.problems, num_segments=args.segments)


def _fail(message: str, flags=()) -> None:
    """Exit 2 with ``message``; a leading ``field:`` that is also a flag is named as the flag."""
    message = re.sub(r"^(\w+):", lambda m: f"--{m[1].replace('_', '-')}:"
                     if f"--{m[1].replace('_', '-')}" in flags else m[0], message)
    print(f"repro-fast: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _settings(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items (VALUE parsed as JSON, else a string)."""
    from repro_fast.grpo.config import ConfigError

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"set: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="repro-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="SFT + GRPO with and without RePro on the toy task (CPU, minutes)")
    demo.add_argument("--scoring", action="store_true",
                      help="run the GSM8K scoring demo (SmolLM2-135M-Instruct) instead")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo; its runs are replaced)")
    demo.add_argument("--steps", type=int, default=None, help="GRPO steps per run (default: 60)")
    demo.add_argument("--sft-steps", type=int, default=None, help="SFT steps (default: 300)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 for the toy model)")
    _add_scoring_demo_args(demo)

    score_demo = sub.add_parser("score-demo", help="score real GSM8K chains of thought with SmolLM2-135M-Instruct")
    _add_scoring_demo_args(score_demo)

    train = sub.add_parser("train", help="GRPO with RePro advantages")
    train.add_argument("config", nargs="?", default=None, help="a .json or .toml config file (optional)")
    train.add_argument("--task", default=None, help="toy | gsm8k | gsm8k_variants")
    train.add_argument("--steps", type=int, default=None)
    train.add_argument("--scorer", default=None, help="fast | naive | none")
    train.add_argument("--alpha", type=float, default=None, help="weight of RePro's process advantage (0: plain GRPO)")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--out", default=None, help="output folder (metrics.jsonl, checkpoints, plots); must be empty")
    train.add_argument("--overwrite", action="store_true", default=None,
                       help="replace the run in a non-empty --out (a cached toy SFT is kept if its settings match)")
    train.add_argument("--init", default=None, help="checkpoint folder to start from (e.g. from `repro-fast sft`)")
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--prompts-per-step", type=int, default=None)
    train.add_argument("--group-size", type=int, default=None)
    train.add_argument("--max-new-tokens", type=int, default=None)
    train.add_argument("--kl-coef", type=float, default=None)
    train.add_argument("--device", default=None, help="auto | cpu | cuda")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the task's; toy: 1)")
    train.add_argument("--compare-naive", action="store_true", default=None,
                       help="also time the naive scorer on every rollout batch")
    train.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other config field (value parsed as JSON, else a string); repeatable")

    sft = sub.add_parser("sft", help="supervised warm start")
    sft.add_argument("--task", default="toy", help="toy | gsm8k | gsm8k_variants")
    sft.add_argument("--out", default="runs/sft")
    sft.add_argument("--steps", type=int, default=300)
    sft.add_argument("--batch-size", type=int, default=32)
    sft.add_argument("--lr", type=float, default=None)
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--init", default=None)
    sft.add_argument("--device", default="auto")
    sft.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the task's; toy: 1)")

    study = sub.add_parser("study", help="N seeds of GRPO and GRPO + RePro: mean and 95%% interval of held-out "
                                          "accuracy, response length, re-checks; a plot")
    study.add_argument("--seeds", type=int, default=5)
    study.add_argument("--task", default="toy", help="toy | gsm8k | gsm8k_variants")
    study.add_argument("--steps", type=int, default=60, help="GRPO steps per run")
    study.add_argument("--sft-steps", type=int, default=300, help="toy: SFT steps of each seed's warm start")
    study.add_argument("--eval-problems", type=int, default=256, help="held-out problems (one sample each, tau = 1)")
    study.add_argument("--alpha", type=float, default=0.1, help="RePro's weight in the RePro arm")
    study.add_argument("--out", default="runs/study", help="output folder (study.json, study.md, study.png; "
                                                           "its runs are replaced)")
    study.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the task's; toy: 1)")
    study.add_argument("--no-progress", dest="progress", action="store_false")
    study.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other GRPO config field for both arms; repeatable")

    insp = sub.add_parser("inspect", help="HTML page: each CoT coloured by RePro's segment rewards, the J curve, "
                                          "S_magn, S_stab, S, r")
    insp.add_argument("--input", required=True, help="JSON lines, each with text 'prompt', 'response', 'answer'")
    insp.add_argument("--out", required=True, help="the HTML file to write")
    insp.add_argument("--model", default=None, help="a Hugging Face model folder (default: the offline "
                                                    "SmolLM2-135M-Instruct)")
    insp.add_argument("--segments", type=int, default=20, help="num_segments k")

    args = parser.parse_args(argv)
    flags = sub.choices[args.command]._option_string_actions

    if args.command == "score-demo" or (args.command == "demo" and args.scoring):
        _scoring_demo(parser, args)
        return

    from repro_fast.grpo.config import ConfigError

    try:
        if args.command == "demo":
            from repro_fast.grpo.demo import run_training_demo

            run_training_demo(out=args.out, steps=args.steps, sft_steps=args.sft_steps, seed=args.seed,
                              threads=args.threads)
        elif args.command == "train":
            from repro_fast.grpo.config import load_config
            from repro_fast.grpo.loop import train as run_train

            overrides = {
                "task": args.task, "steps": args.steps, "scorer": args.scorer, "alpha": args.alpha,
                "seed": args.seed, "out": args.out, "init": args.init, "lr": args.lr,
                "prompts_per_step": args.prompts_per_step, "group_size": args.group_size,
                "max_new_tokens": args.max_new_tokens, "kl_coef": args.kl_coef, "device": args.device,
                "compare_naive": args.compare_naive, "progress": args.progress, "threads": args.threads,
                "overwrite": args.overwrite, **_settings(args.set),
            }
            config = load_config(args.config, **overrides)
            summary = run_train(config)
            ev = summary["eval"]
            last = ev.get(str(summary["steps"]))
            print(f"done: {config.out}/metrics.jsonl, {config.out}/final, plots in {config.out}/plots")
            if last and "0" in ev:
                kind = "greedy" if config.eval_greedy else f"sampled (tau = {config.temperature:g})"
                print(f"{kind} eval accuracy {ev['0']['accuracy']:.3f} -> {last['accuracy']:.3f}, "
                      f"mean response length {ev['0']['response_length']:.1f} -> {last['response_length']:.1f} tokens")
        elif args.command == "study":
            from repro_fast.grpo.study import run_study

            run_study(out=args.out, seeds=args.seeds, task=args.task, steps=args.steps, sft_steps=args.sft_steps,
                      eval_problems=args.eval_problems, alpha=args.alpha, progress=args.progress,
                      threads=args.threads, **_settings(args.set))
        elif args.command == "inspect":
            from repro_fast.inspector import run_inspect

            run_inspect(args.input, args.out, model=args.model, num_segments=args.segments)
            print(f"wrote {args.out}")
        elif args.command == "sft":
            from repro_fast.grpo.sft import SFTConfig, run_sft

            summary = run_sft(SFTConfig(task=args.task, out=args.out, steps=args.steps, batch_size=args.batch_size,
                                        lr=args.lr, seed=args.seed, init=args.init, device=args.device,
                                        threads=args.threads))
            print(f"saved {args.out}: {summary['params']} parameters, {summary['train_s']:.0f} s, greedy accuracy "
                  f"{summary['eval_accuracy']:.3f}, mean response length {summary['eval_response_length']:.1f} tokens")
    except (ConfigError, FileNotFoundError) as exc:
        _fail(str(exc), flags)
    except ValueError as exc:
        if str(exc).startswith(("task:", "init:", "verifier:")):
            _fail(str(exc), flags)
        raise


if __name__ == "__main__":
    main()
