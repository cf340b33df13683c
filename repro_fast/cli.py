"""`repro-fast` command line: the GRPO demo, the scoring demo, training, SFT, multi-seed studies
and the HTML inspector (`repro-fast COMMAND --help` for each)."""

from __future__ import annotations

import argparse
import json
import re
import sys

TASKS = "toy | gsm8k | gsm8k_variants"
THREADS = "torch CPU threads (default: the task's; toy: 1)"


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


def _fields(args, *drop: str) -> dict:
    """The parsed flags by destination (the config fields they set), less ``drop``."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "set", *drop)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="repro-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="SFT + GRPO with and without RePro on the toy task (CPU, minutes)")
    demo.add_argument("--scoring", action="store_true",
                      help="run the GSM8K scoring demo (SmolLM2-135M-Instruct) instead")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo; its runs are replaced)")
    demo.add_argument("--steps", type=int, default=60, help="GRPO steps per run (default: 60)")
    demo.add_argument("--sft-steps", type=int, default=300, help="SFT steps (default: 300)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for the toy model)")
    _add_scoring_demo_args(demo)

    score_demo = sub.add_parser("score-demo", help="score real GSM8K chains of thought with SmolLM2-135M-Instruct")
    _add_scoring_demo_args(score_demo)

    train = sub.add_parser("train", help="GRPO with RePro advantages")
    train.add_argument("config", nargs="?", help="a .json or .toml config file (optional)")
    train.add_argument("--task", help=TASKS)
    train.add_argument("--steps", type=int)
    train.add_argument("--scorer", help="fast | naive | none")
    train.add_argument("--alpha", type=float, help="weight of RePro's process advantage (0: plain GRPO)")
    train.add_argument("--seed", type=int)
    train.add_argument("--out", help="output folder (metrics.jsonl, checkpoints, plots); must be empty")
    train.add_argument("--overwrite", action="store_true", default=None,
                       help="replace the run in a non-empty --out (a cached toy SFT is kept if its settings match)")
    train.add_argument("--init", help="checkpoint folder to start from (e.g. from `repro-fast sft`)")
    for flag, kind in (("--lr", float), ("--prompts-per-step", int), ("--group-size", int),
                       ("--max-new-tokens", int), ("--kl-coef", float)):
        train.add_argument(flag, type=kind)
    train.add_argument("--device", help="auto | cpu | cuda")
    train.add_argument("--threads", type=int, help=THREADS)
    train.add_argument("--compare-naive", action="store_true", default=None,
                       help="also time the naive scorer on every rollout batch")
    train.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other config field (value parsed as JSON, else a string); repeatable")

    sft = sub.add_parser("sft", help="supervised warm start")
    sft.add_argument("--task", default="toy", help=TASKS)
    sft.add_argument("--out", default="runs/sft")
    sft.add_argument("--steps", type=int, default=300)
    sft.add_argument("--batch-size", type=int, default=32)
    sft.add_argument("--lr", type=float)
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--init")
    sft.add_argument("--device", default="auto")
    sft.add_argument("--threads", type=int, help=THREADS)

    study = sub.add_parser("study", help="N seeds of GRPO and GRPO + RePro: mean and 95%% interval of held-out "
                                          "accuracy, response length, re-checks; a plot")
    study.add_argument("--seeds", type=int, default=5)
    study.add_argument("--task", default="toy", help=TASKS)
    study.add_argument("--steps", type=int, default=60, help="GRPO steps per run")
    study.add_argument("--sft-steps", type=int, default=300, help="toy: SFT steps of each seed's warm start")
    study.add_argument("--eval-problems", type=int, default=256, help="held-out problems (one sample each, tau = 1)")
    study.add_argument("--alpha", type=float, default=0.1, help="RePro's weight in the RePro arm")
    study.add_argument("--out", default="runs/study", help="output folder (study.json, study.md, study.png; "
                                                           "its runs are replaced)")
    study.add_argument("--threads", type=int, help=THREADS)
    study.add_argument("--no-progress", dest="progress", action="store_false")
    study.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other GRPO config field for both arms; repeatable")

    insp = sub.add_parser("inspect", help="HTML page: each CoT coloured by RePro's segment rewards, the J curve, "
                                          "S_magn, S_stab, S, r")
    insp.add_argument("--input", required=True, help="JSON lines, each with text 'prompt', 'response', 'answer'")
    insp.add_argument("--out", required=True, help="the HTML file to write")
    insp.add_argument("--model", help="a Hugging Face model folder (default: the offline "
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

            run_training_demo(**_fields(args, "scoring", "problems", "segments"))
        elif args.command == "train":
            from repro_fast.grpo.config import load_config
            from repro_fast.grpo.loop import train as run_train

            config = load_config(args.config, **{**_fields(args, "config"), **_settings(args.set)})
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

            fields, settings = _fields(args), _settings(args.set)
            if clash := sorted(set(fields) & set(settings)):
                raise ConfigError(f"set: {clash[0]} has its own flag, --{clash[0].replace('_', '-')}")
            run_study(**fields, **settings)
        elif args.command == "inspect":
            from repro_fast.inspector import run_inspect

            run_inspect(args.input, args.out, model=args.model, num_segments=args.segments)
            print(f"wrote {args.out}")
        elif args.command == "sft":
            from repro_fast.grpo.sft import SFTConfig, run_sft

            summary = run_sft(SFTConfig(**_fields(args)))
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
